"""The routing rules on hand-built frames, and their properties (hypothesis)."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.routing.rules import (
    CASE_SCHEMA,
    ROUTING_SCHEMA,
    AreaMap,
    RoutingConfig,
    area_team,
    known_to_sdv,
    route,
)

RUN_DATE = date(2026, 11, 26)  # a Thursday
CONFIG = RoutingConfig(run_date=RUN_DATE)
NORTH, SOUTH, DEFAULT = "team-north", "team-south", "team-default"
AREAS = AreaMap.build(
    [(NORTH, "2011", "2015"), (SOUTH, "2016", "2020")],
    [(SOUTH, "pc6-2012AB")],
    DEFAULT,
)


def cases(*rows: dict[str, Any]) -> pl.DataFrame:
    defaults: dict[str, Any] = {
        "pc4": "2011",
        "pc6_hash": None,
        "person_hashes": [],
        "is_recidive": False,
        "has_crisis": False,
    }
    full = [
        {"case_id": f"c{i + 1}", "address_hash": f"a{i + 1}", **defaults, **r}
        for i, r in enumerate(rows)
    ]
    return pl.DataFrame(full, schema=CASE_SCHEMA)


def hashes(*values: str) -> pl.Series:
    return pl.Series(list(values), dtype=pl.String)


def routed(
    frame: pl.DataFrame,
    *,
    addresses: pl.Series | None = None,
    persons: pl.Series | None = None,
    areas: AreaMap = AREAS,
    config: RoutingConfig = CONFIG,
) -> pl.DataFrame:
    return route(
        frame,
        sdv_addresses=hashes() if addresses is None else addresses,
        sdv_persons=hashes() if persons is None else persons,
        areas=areas,
        config=config,
    )


def one(result: pl.DataFrame, case_id: str = "c1") -> dict[str, Any]:
    row: dict[str, Any] = result.filter(pl.col("case_id") == case_id).row(0, named=True)
    return row


# --- known to SDV, recidive, wijkteam ---------------------------------------------------------


def test_known_to_sdv_by_address_wins_over_recidive() -> None:
    result = routed(cases({"is_recidive": True}), addresses=hashes("a1"))
    assert one(result) == {
        "case_id": "c1",
        "route": "sdv",
        "team_id": None,
        "known_to_sdv": True,
        "outside_areas": False,
        "due_date": RUN_DATE + timedelta(days=28),
    }


def test_known_to_sdv_by_a_person_while_the_address_is_not_registered() -> None:
    frame = cases(
        {"person_hashes": ["p-other", "p-client"], "is_recidive": True},
        {"person_hashes": ["p-other"], "is_recidive": True},
        {"person_hashes": None},
    )
    result = routed(frame, addresses=hashes("a-elsewhere"), persons=hashes("p-client"))
    assert result["route"].to_list() == ["sdv", "budgetcoach", "wijkteam"]
    assert result["known_to_sdv"].to_list() == [True, False, False]


def test_known_to_sdv_helper() -> None:
    frame = cases({}, {"person_hashes": ["p1"]}, {"person_hashes": None}, {})
    known = known_to_sdv(frame, hashes("a1"), hashes("p1"))
    assert known.name == "known_to_sdv"
    assert known.to_list() == [True, True, False, False]


def test_recidive_wins_over_wijkteam_and_goes_to_the_budget_coach() -> None:
    result = routed(cases({"is_recidive": True, "pc4": "2016"}))
    row = one(result)
    assert row["route"] == "budgetcoach"
    assert row["team_id"] is None
    assert row["known_to_sdv"] is False
    assert row["outside_areas"] is False


def test_otherwise_the_wijkteam_of_the_area() -> None:
    result = routed(cases({"pc4": "2013"}, {"pc4": "2018"}))
    assert result["route"].to_list() == ["wijkteam", "wijkteam"]
    assert result["team_id"].to_list() == [NORTH, SOUTH]
    assert result["outside_areas"].to_list() == [False, False]


# --- areas ------------------------------------------------------------------------------------


def test_pc6_entry_beats_the_pc4_range_of_another_team() -> None:
    frame = cases(
        {"pc4": "2012", "pc6_hash": "pc6-2012AB"},
        {"pc4": "2012", "pc6_hash": "pc6-2012CD"},
    )
    assert routed(frame)["team_id"].to_list() == [SOUTH, NORTH]


def test_pc6_entry_alone_covers_an_address_outside_every_range() -> None:
    areas = AreaMap.build([], [(SOUTH, "pc6-9999ZZ")])
    frame = cases({"pc4": "9999", "pc6_hash": "pc6-9999ZZ"})
    row = one(routed(frame, areas=areas))
    assert (row["team_id"], row["outside_areas"]) == (SOUTH, False)


@pytest.mark.parametrize(
    ("pc4", "team"),
    [("2011", NORTH), ("2013", NORTH), ("2015", NORTH), ("2016", SOUTH), ("2020", SOUTH)],
)
def test_pc4_range_lookup_includes_both_ends(pc4: str, team: str) -> None:
    assert one(routed(cases({"pc4": pc4})))["team_id"] == team


def test_area_team_helper_gives_null_outside_every_area() -> None:
    frame = cases({"pc4": "2010"}, {"pc4": "2021"}, {"pc4": "2014", "pc6_hash": "pc6-2012AB"})
    teams = area_team(frame, AREAS).sort("case_id")
    assert teams["area_team_id"].to_list() == [None, None, SOUTH]


@pytest.mark.parametrize("pc4", ["2010", "2021", "9999", None])
def test_an_unmapped_postcode_goes_to_the_default_team_flagged(pc4: str | None) -> None:
    row = one(routed(cases({"pc4": pc4})))
    assert (row["route"], row["team_id"], row["outside_areas"]) == ("wijkteam", DEFAULT, True)


def test_without_a_default_team_an_unmapped_postcode_has_no_team() -> None:
    areas = AreaMap.build([(NORTH, "2011", "2015")], [])
    row = one(routed(cases({"pc4": "3000"}), areas=areas))
    assert (row["route"], row["team_id"], row["outside_areas"]) == ("wijkteam", None, True)


def test_empty_area_map() -> None:
    result = routed(cases({}, {}), areas=AreaMap.empty())
    assert result["team_id"].to_list() == [None, None]
    assert result["outside_areas"].to_list() == [True, True]
    with_default = routed(cases({}), areas=AreaMap.empty(DEFAULT))
    assert one(with_default)["team_id"] == DEFAULT


def test_sdv_and_budgetcoach_routes_carry_no_team_and_are_never_outside_areas() -> None:
    frame = cases(
        {"pc4": "2013"},
        {"pc4": "9999", "is_recidive": True},
        {"pc4": "9999"},
    )
    result = routed(frame, addresses=hashes("a1", "a3"))
    assert result["route"].to_list() == ["sdv", "budgetcoach", "sdv"]
    assert result["team_id"].to_list() == [None, None, None]
    assert result["outside_areas"].to_list() == [False, False, False]


def test_overlapping_ranges_go_to_the_narrower_range() -> None:
    wide, narrow = "team-a-wide", "team-z-narrow"
    for ranges in (
        [(wide, "2000", "2099"), (narrow, "2050", "2059")],
        [(narrow, "2050", "2059"), (wide, "2000", "2099")],
    ):
        areas = AreaMap.build(ranges, [])
        result = routed(
            cases({"pc4": "2049"}, {"pc4": "2050"}, {"pc4": "2059"}, {"pc4": "2060"}), areas=areas
        )
        assert result["team_id"].to_list() == [wide, narrow, narrow, wide]


def test_equally_wide_overlapping_ranges_go_to_the_lower_team_id() -> None:
    for ranges in (
        [("team-b", "2010", "2019"), ("team-a", "2015", "2024")],
        [("team-a", "2015", "2024"), ("team-b", "2010", "2019")],
    ):
        areas = AreaMap.build(ranges, [])
        frame = cases({"pc4": "2014"}, {"pc4": "2015"}, {"pc4": "2019"}, {"pc4": "2020"})
        assert routed(frame, areas=areas)["team_id"].to_list() == [
            "team-b",
            "team-a",
            "team-a",
            "team-a",
        ]


def test_the_same_pc6_in_two_teams_goes_to_the_lower_team_id() -> None:
    for pc6s in ([("team-b", "h"), ("team-a", "h")], [("team-a", "h"), ("team-b", "h")]):
        areas = AreaMap.build([], pc6s)
        assert areas.pc6.height == 1
        assert one(routed(cases({"pc6_hash": "h"}), areas=areas))["team_id"] == "team-a"


# --- due dates --------------------------------------------------------------------------------


def test_due_date_is_28_days_after_the_run_and_configurable() -> None:
    frame = cases({}, {"is_recidive": True}, {})
    result = routed(frame, addresses=hashes("a3"))
    assert result["due_date"].to_list() == [date(2026, 12, 24)] * 3
    config = RoutingConfig(run_date=RUN_DATE, due_days=14)
    assert one(routed(frame, config=config))["due_date"] == date(2026, 12, 10)


@pytest.mark.parametrize(
    ("run_date", "due"),
    [
        (date(2026, 12, 24), date(2026, 12, 30)),  # Thursday; Christmas and the weekend skipped
        (date(2026, 11, 27), date(2026, 12, 2)),  # Friday → Wednesday
        (date(2026, 11, 26), date(2026, 12, 1)),  # Thursday → Tuesday
    ],
)
def test_crisis_is_due_in_three_working_days(run_date: date, due: date) -> None:
    frame = cases({"has_crisis": True}, {"has_crisis": True, "is_recidive": True}, {})
    result = routed(frame, addresses=hashes("a9"), config=RoutingConfig(run_date=run_date))
    assert result["due_date"].to_list() == [due, due, run_date + timedelta(days=28)]


def test_crisis_working_days_are_configurable() -> None:
    config = RoutingConfig(run_date=date(2026, 11, 27), crisis_due_working_days=1)
    assert one(routed(cases({"has_crisis": True}), config=config))["due_date"] == date(2026, 11, 30)


# --- shape ------------------------------------------------------------------------------------


def test_empty_input_gives_an_empty_frame_of_the_routing_schema() -> None:
    result = routed(pl.DataFrame(schema=CASE_SCHEMA), addresses=hashes("a1"), persons=hashes("p"))
    assert result.is_empty()
    assert result.schema == pl.Schema(ROUTING_SCHEMA)


def test_output_schema_and_input_order_with_extra_columns() -> None:
    frame = cases(*({"pc4": str(2011 + i % 12)} for i in range(12))).with_columns(
        pl.lit("x").alias("extra")
    )
    shuffled = frame.reverse().select(reversed(frame.columns))
    result = routed(shuffled)
    assert result.schema == pl.Schema(ROUTING_SCHEMA)
    assert result["case_id"].to_list() == shuffled["case_id"].to_list()


# --- properties ------------------------------------------------------------------------------

PROPERTY_AREAS = AreaMap.build(
    [("t1", "1000", "1004"), ("t2", "1003", "1009"), ("t3", "1012", "1012")],
    [("t3", "h1"), ("t1", "h2")],
    "t0",
)


@st.composite
def case_frames(draw: st.DrawFn) -> pl.DataFrame:
    n = draw(st.integers(min_value=0, max_value=30))
    rows = [
        {
            "case_id": f"c{i}",
            "address_hash": f"a{draw(st.integers(0, 10))}",
            "pc4": draw(st.sampled_from([None, *(str(1000 + k) for k in range(15))])),
            "pc6_hash": draw(st.sampled_from([None, "h1", "h2", "h3"])),
            "person_hashes": draw(
                st.none() | st.lists(st.sampled_from(["p1", "p2", "p3", "p4"]), max_size=3)
            ),
            "is_recidive": draw(st.booleans()),
            "has_crisis": draw(st.booleans()),
        }
        for i in range(n)
    ]
    return pl.DataFrame(rows, schema=CASE_SCHEMA)


sdv_sets = st.lists(st.sampled_from([f"a{k}" for k in range(10)]), max_size=4)
person_sets = st.lists(st.sampled_from(["p1", "p2", "p3"]), max_size=2)


def route_all(frame: pl.DataFrame, addresses: list[str], persons: list[str]) -> pl.DataFrame:
    return routed(
        frame, addresses=hashes(*addresses), persons=hashes(*persons), areas=PROPERTY_AREAS
    )


@settings(max_examples=100, deadline=None)
@given(case_frames(), sdv_sets, person_sets, st.randoms(use_true_random=False))
def test_row_order_does_not_change_the_routing(
    frame: pl.DataFrame, addresses: list[str], persons: list[str], rnd: Any
) -> None:
    order = list(range(frame.height))
    rnd.shuffle(order)
    shuffled = frame[order] if order else frame
    before = route_all(frame, addresses, persons).sort("case_id")
    after = route_all(shuffled, addresses, persons)
    assert after["case_id"].to_list() == shuffled["case_id"].to_list()
    assert after.sort("case_id").to_dicts() == before.to_dicts()


@settings(max_examples=100, deadline=None)
@given(case_frames(), sdv_sets, person_sets)
def test_every_case_gets_exactly_one_route(
    frame: pl.DataFrame, addresses: list[str], persons: list[str]
) -> None:
    result = route_all(frame, addresses, persons)
    assert result.schema == pl.Schema(ROUTING_SCHEMA)
    assert result["case_id"].to_list() == frame["case_id"].to_list()
    assert result["route"].null_count() == 0
    assert set(result["route"].to_list()) <= {"sdv", "budgetcoach", "wijkteam"}
    assert result["known_to_sdv"].null_count() == 0
    assert result["outside_areas"].null_count() == 0
    assert result["due_date"].null_count() == 0


@settings(max_examples=100, deadline=None)
@given(case_frames(), sdv_sets, person_sets)
def test_route_is_sdv_iff_known_and_team_only_for_wijkteam(
    frame: pl.DataFrame, addresses: list[str], persons: list[str]
) -> None:
    result = route_all(frame, addresses, persons)
    for case, row in zip(frame.iter_rows(named=True), result.iter_rows(named=True), strict=True):
        known = case["address_hash"] in addresses or bool(
            set(case["person_hashes"] or []) & set(persons)
        )
        assert row["known_to_sdv"] is known
        assert (row["route"] == "sdv") is known
        if not known:
            assert row["route"] == ("budgetcoach" if case["is_recidive"] else "wijkteam")
        assert (row["team_id"] is not None) is (row["route"] == "wijkteam")
        if row["route"] != "wijkteam":
            assert row["outside_areas"] is False
