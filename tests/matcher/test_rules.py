"""The matching rules on hand-built frames, and their properties (hypothesis)."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.matcher.rules import (
    OUTCOME_BELOW_MINIMUM,
    OUTCOME_MATCHED,
    OUTCOME_REPEAT,
    OUTCOME_SINGLE,
    OUTCOME_STALE,
    SIGNAL_SCHEMA,
    MatchConfig,
    MatchResult,
    classify,
    empty_history,
    group_addresses,
    link_recidive,
    mark_below_minimum,
    mark_repeats,
    mark_stale,
    match,
    prioritise,
    with_case_flags,
)
from services.matcher.signalled import address_keys, by_period, decode, encode
from shared.address import address_key
from shared.crypto import KeyedHasher
from shared.periods import Period

RUN_DATE = date(2026, 11, 26)
CONFIG = MatchConfig(period=Period(2026, 11), run_date=RUN_DATE)
HASHER = KeyedHasher(b"k" * 32)


def addr(postcode: str, number: str, letter: str | None = None) -> str:
    key = address_key(postcode, number, letter)
    assert key is not None
    return HASHER.hash("address", key)


def signals(*rows: dict[str, Any]) -> pl.DataFrame:
    defaults: dict[str, Any] = {
        "pc4": "2011",
        "pc6_hash": None,
        "person_hash": None,
        "bedrag_cent": 10_000,
        "achterstand_sinds": date(2026, 9, 1),
        "signaaldatum": date(2026, 11, 10),
        "crisis": False,
        "warme_overdracht": False,
    }
    full = [{**defaults, "signal_id": i + 1, **r} for i, r in enumerate(rows)]
    return pl.DataFrame(
        full,
        schema=SIGNAL_SCHEMA,
    )


def outcome(result: MatchResult, signal_id: int) -> str:
    return str(result.outcomes.filter(pl.col("signal_id") == signal_id)["outcome"].item())


A = addr("2011AB", "12")


def test_two_partners_on_one_address_make_a_case() -> None:
    result = match(
        signals(
            {"partner_id": "zorg1", "kind": "zorg", "address_hash": A},
            {"partner_id": "energie1", "kind": "energie", "address_hash": A},
        ),
        empty_history(),
        CONFIG,
    )
    assert result.cases.height == 1
    case = result.cases.row(0, named=True)
    assert case["partner_count"] == 2
    assert case["classification"] == "meervoudig"
    assert case["signal_ids"] == [1, 2]


def test_same_partner_twice_is_no_case_unless_rent() -> None:
    two_zorg = signals(
        {"partner_id": "zorg1", "kind": "zorg", "address_hash": A},
        {"partner_id": "zorg1", "kind": "zorg", "address_hash": A},
    )
    result = match(two_zorg, empty_history(), CONFIG)
    assert result.cases.is_empty()
    assert outcome(result, 1) == "single"
    assert result.figures["singles"] == 1
    rent = two_zorg.with_columns(pl.lit("huur").alias("kind"))
    assert match(rent, empty_history(), CONFIG).cases.height == 1


def test_rent_alone_and_crisis_alone_make_cases() -> None:
    result = match(
        signals(
            {"partner_id": "huur1", "kind": "huur", "address_hash": A},
            {
                "partner_id": "water1",
                "kind": "water",
                "address_hash": addr("2012CD", "1"),
                "crisis": True,
            },
            {"partner_id": "zorg1", "kind": "zorg", "address_hash": addr("2013EF", "1")},
        ),
        empty_history(),
        CONFIG,
    )
    assert result.cases.height == 2
    assert result.cases["has_crisis"].to_list() == [True, False]  # crisis first
    assert result.figures["rent_only"] == 1
    assert result.figures["crisis"] == 1
    assert outcome(result, 3) == "single"


def test_which_kinds_stand_alone_is_configuration() -> None:
    config = MatchConfig(
        period=CONFIG.period, run_date=RUN_DATE, standalone_kinds=frozenset({"huur", "zorg"})
    )
    rows = signals({"partner_id": "zorg1", "kind": "zorg", "address_hash": A})
    assert match(rows, empty_history(), config).cases.height == 1


def test_stale_signal_is_kept_out_and_counted_per_partner() -> None:
    old = RUN_DATE - timedelta(days=46)
    result = match(
        signals(
            {"partner_id": "zorg1", "kind": "zorg", "address_hash": A, "signaaldatum": old},
            {"partner_id": "energie1", "kind": "energie", "address_hash": A},
        ),
        empty_history(),
        CONFIG,
    )
    assert result.cases.is_empty()
    assert outcome(result, 1) == "stale"
    assert result.figures["stale_per_partner"] == {"zorg1": 1}
    edge = RUN_DATE - timedelta(days=45)
    fresh = match(
        signals(
            {"partner_id": "zorg1", "kind": "zorg", "address_hash": A, "signaaldatum": edge},
            {"partner_id": "energie1", "kind": "energie", "address_hash": A},
        ),
        empty_history(),
        CONFIG,
    )
    assert fresh.cases.height == 1


def test_minimum_amount_per_kind() -> None:
    config = MatchConfig(period=CONFIG.period, run_date=RUN_DATE, min_amount_cents={"zorg": 7500})
    result = match(
        signals(
            {"partner_id": "zorg1", "kind": "zorg", "address_hash": A, "bedrag_cent": 7499},
            {"partner_id": "energie1", "kind": "energie", "address_hash": A, "bedrag_cent": 100},
        ),
        empty_history(),
        config,
    )
    assert result.cases.is_empty()
    assert outcome(result, 1) == "below_minimum"
    assert result.figures["below_minimum"] == 1


def test_spelling_variants_match_and_12_is_not_12a() -> None:
    variants = [addr("2011 ab", "12A"), addr("2011AB", "12-a"), addr("2011ab", "12", "A")]
    assert len(set(variants)) == 1
    result = match(
        signals(
            {"partner_id": "zorg1", "kind": "zorg", "address_hash": variants[0]},
            {"partner_id": "energie1", "kind": "energie", "address_hash": variants[1]},
            {"partner_id": "water1", "kind": "water", "address_hash": addr("2011AB", "12")},
        ),
        empty_history(),
        CONFIG,
    )
    assert result.cases.height == 1
    assert result.cases["signal_ids"].to_list() == [[1, 2]]
    assert outcome(result, 3) == "single"


def history_row(case_id: str, period: str, partner: str, cents: int, **kw: Any) -> dict[str, Any]:
    return {
        "case_id": case_id,
        "period": period,
        "address_hash": A,
        "partner_id": partner,
        "bedrag_cent": cents,
        "signaaldatum": kw.get("signaaldatum", date(2026, 10, 10)),
        "has_crisis": kw.get("has_crisis", False),
        "case_open": kw.get("case_open", True),
        "closed_on": kw.get("closed_on"),
    }


def history(*rows: dict[str, Any]) -> pl.DataFrame:
    return pl.DataFrame(list(rows), schema=empty_history().schema)


def test_recidive_links_earlier_cases_within_the_window() -> None:
    earlier = history(
        history_row("c-sep", "2026-09", "x", 1, case_open=False, closed_on=date(2026, 10, 1)),
        history_row("c-apr", "2026-04", "x", 1, case_open=False, closed_on=date(2026, 5, 1)),
    )
    result = match(
        signals(
            {"partner_id": "zorg1", "kind": "zorg", "address_hash": A},
            {"partner_id": "energie1", "kind": "energie", "address_hash": A},
        ),
        earlier,
        CONFIG,
    )
    case = result.cases.row(0, named=True)
    assert case["is_recidive"] is True
    assert case["earlier_case_ids"] == ["c-sep"]  # April is outside the six months
    assert case["classification"] == "opeenvolgend"
    assert result.figures["recidive"] == 1
    assert result.figures["recidive_signals_only"] == 0


def test_repeat_signal_is_not_picked_up_unless_the_amount_went_up() -> None:
    earlier = history(history_row("c1", "2026-10", "zorg1", 20_000))
    rows = signals(
        {"partner_id": "zorg1", "kind": "zorg", "address_hash": A, "bedrag_cent": 20_000},
        {"partner_id": "energie1", "kind": "energie", "address_hash": A},
    )
    result = match(rows, earlier, CONFIG)
    assert outcome(result, 1) == "repeat"
    assert result.figures["repeat_signals"] == 1
    assert result.cases.is_empty()
    higher = rows.with_columns(
        pl.when(pl.col("signal_id") == 1)
        .then(20_001)
        .otherwise(pl.col("bedrag_cent"))
        .alias("bedrag_cent")
    )
    assert match(higher, earlier, CONFIG).cases.height == 1


def test_arrears_that_arose_after_the_earlier_report_are_new_not_a_repeat() -> None:
    """The same partner at the same address, the amount not higher, but the arrears arose after
    the partner reported the earlier ones (paid off since, or another household): other arrears,
    picked up. Arrears that arose by the day of the earlier report are the same ones."""
    earlier = history(history_row("c1", "2026-10", "zorg1", 20_000, signaaldatum=date(2026, 10, 8)))
    for since, expected in (
        (date(2026, 9, 1), "repeat"),  # outstanding when reported in October
        (date(2026, 10, 8), "repeat"),  # arisen on the day of that report: the same
        (date(2026, 10, 9), "matched"),  # arisen after it: new arrears
    ):
        rows = signals(
            {
                "partner_id": "zorg1",
                "kind": "zorg",
                "address_hash": A,
                "bedrag_cent": 15_000,
                "achterstand_sinds": since,
            },
            {"partner_id": "energie1", "kind": "energie", "address_hash": A},
        )
        assert outcome(match(rows, earlier, CONFIG), 1) == expected, since


def test_a_crisis_about_arrears_already_handled_is_picked_up_not_a_repeat() -> None:
    """The same partner, the same or a lower amount, but now eviction or disconnection
    threatens where the earlier case had no crisis: the arrears escalated, and the Wgs wants
    them picked up within three working days."""
    earlier = history(history_row("c1", "2026-10", "huur1", 80_000))
    rows = signals(
        {
            "partner_id": "huur1",
            "kind": "huur",
            "address_hash": A,
            "bedrag_cent": 60_000,
            "crisis": True,
        }
    )
    result = match(rows, earlier, CONFIG)
    assert outcome(result, 1) == "matched"
    assert result.figures["repeat_signals"] == 0
    (case,) = result.cases.iter_rows(named=True)
    assert case["has_crisis"] is True
    assert case["earlier_case_ids"] == ["c1"]  # recurrent: the earlier case is named
    calm = rows.with_columns(pl.lit(False).alias("crisis"))
    assert outcome(match(calm, earlier, CONFIG), 1) == "repeat"
    # The crisis reported again, about the same arrears, after a crisis case: a repeat (else a
    # partner that keeps the flag would make a new case every month).
    after_a_crisis = history(history_row("c1", "2026-10", "huur1", 80_000, has_crisis=True))
    assert outcome(match(rows, after_a_crisis, CONFIG), 1) == "repeat"


def test_priority_order() -> None:
    rows = signals(
        {"partner_id": "z", "kind": "zorg", "address_hash": "a1"},
        {"partner_id": "e", "kind": "energie", "address_hash": "a1"},
        {"partner_id": "h", "kind": "huur", "address_hash": "a2", "bedrag_cent": 1},
        {"partner_id": "w", "kind": "water", "address_hash": "a3", "crisis": True},
        {"partner_id": "z", "kind": "zorg", "address_hash": "a4", "bedrag_cent": 99_999},
        {"partner_id": "e", "kind": "energie", "address_hash": "a4"},
        {"partner_id": "w", "kind": "water", "address_hash": "a4"},
    )
    result = match(rows, empty_history(), CONFIG)
    assert result.cases["address_hash"].to_list() == ["a3", "a2", "a4", "a1"]
    assert result.cases["priority"].to_list() == [1, 2, 3, 4]


# --- properties ----------------------------------------------------------------------------

KINDS = ["huur", "energie", "water", "zorg"]


@st.composite
def signal_frames(draw: st.DrawFn) -> pl.DataFrame:
    n = draw(st.integers(min_value=0, max_value=40))
    rows = []
    for i in range(n):
        partner = draw(st.integers(0, 5))
        rows.append(
            {
                "signal_id": i + 1,
                "partner_id": f"p{partner}",
                "kind": KINDS[partner % 4],
                "address_hash": f"a{draw(st.integers(0, 12))}",
                "pc4": "2011",
                "bedrag_cent": draw(st.integers(1, 500_000)),
                "signaaldatum": RUN_DATE - timedelta(days=draw(st.integers(0, 60))),
                "crisis": draw(st.booleans()) and draw(st.booleans()) and draw(st.booleans()),
                "warme_overdracht": False,
            }
        )
    return pl.DataFrame(rows, schema=signals().schema)


def canonical(result: MatchResult) -> tuple[object, object]:
    return result.cases.to_dicts(), result.outcomes.sort("signal_id").to_dicts()


@settings(max_examples=100, deadline=None)
@given(signal_frames(), st.randoms(use_true_random=False))
def test_row_order_does_not_change_the_result(frame: pl.DataFrame, rnd: Any) -> None:
    order = list(range(frame.height))
    rnd.shuffle(order)
    shuffled = frame[order] if order else frame
    assert canonical(match(frame, empty_history(), CONFIG)) == canonical(
        match(shuffled, empty_history(), CONFIG)
    )


@settings(max_examples=100, deadline=None)
@given(signal_frames())
def test_running_twice_gives_the_same_result(frame: pl.DataFrame) -> None:
    assert canonical(match(frame, empty_history(), CONFIG)) == canonical(
        match(frame, empty_history(), CONFIG)
    )


@settings(max_examples=100, deadline=None)
@given(
    signal_frames(),
    st.frozensets(st.sampled_from(KINDS)),
    st.booleans(),
)
def test_which_addresses_make_a_case_is_decided_as_the_full_grouping_decides(
    frame: pl.DataFrame, standalone: frozenset[str], crisis: bool
) -> None:
    """The run builds the signals' lists only for the addresses ``with_case_flags`` picks: it
    must pick exactly those whose full grouping is a case, under any configuration."""
    config = MatchConfig(
        period=CONFIG.period,
        run_date=RUN_DATE,
        standalone_kinds=standalone,
        crisis_standalone=crisis,
    )
    full = group_addresses(frame, config).select("address_hash", "is_case").sort("address_hash")
    screened = frame.with_columns(pl.lit(None, dtype=pl.String).alias("excluded"))
    flags = with_case_flags(screened, config).select("address_hash", "is_case").unique()
    assert flags.sort("address_hash").equals(full)


@settings(max_examples=100, deadline=None)
@given(signal_frames())
def test_no_signal_in_two_cases_and_every_signal_accounted_for(frame: pl.DataFrame) -> None:
    result = match(frame, empty_history(), CONFIG)
    in_cases = result.cases["signal_ids"].explode().drop_nulls().to_list()
    assert len(in_cases) == len(set(in_cases))
    assert result.outcomes.height == frame.height
    matched = result.outcomes.filter(pl.col("outcome") == "matched")["signal_id"].to_list()
    assert sorted(in_cases) == sorted(matched)


@settings(max_examples=100, deadline=None)
@given(signal_frames(), st.integers(0, 12), st.integers(1, 500_000))
def test_a_fresh_signal_from_a_new_partner_never_removes_a_case(
    frame: pl.DataFrame, address: int, cents: int
) -> None:
    before = set(match(frame, empty_history(), CONFIG).cases["address_hash"].to_list())
    extra = pl.DataFrame(
        [
            {
                "signal_id": frame.height + 1,
                "partner_id": "new-partner",
                "kind": "water",
                "address_hash": f"a{address}",
                "pc4": "2011",
                "bedrag_cent": cents,
                "signaaldatum": RUN_DATE,
                "crisis": False,
                "warme_overdracht": False,
            }
        ],
        schema=frame.schema,
    )
    after = match(pl.concat([frame, extra]), empty_history(), CONFIG)
    assert before <= set(after.cases["address_hash"].to_list())


@st.composite
def history_frames(draw: st.DrawFn, prefix: str) -> pl.DataFrame:
    """Earlier cases' rows at addresses ``{prefix}0`` … ``{prefix}12``."""
    rows = [
        {
            "case_id": f"{prefix}-case-{draw(st.integers(0, 30))}",
            "period": str(CONFIG.period.shift(-draw(st.integers(1, 8)))),
            "address_hash": f"{prefix}{draw(st.integers(0, 12))}",
            "partner_id": f"p{draw(st.integers(0, 5))}",
            "bedrag_cent": draw(st.integers(1, 500_000)),
            "case_open": draw(st.booleans()),
            "closed_on": RUN_DATE - timedelta(days=draw(st.integers(1, 400))),
        }
        for _ in range(draw(st.integers(0, 30)))
    ]
    return pl.DataFrame(rows, schema=empty_history().schema)


@settings(max_examples=100, deadline=None)
@given(signal_frames(), history_frames("a"), history_frames("b"))
def test_history_of_addresses_without_a_signal_changes_nothing(
    frame: pl.DataFrame, related: pl.DataFrame, unrelated: pl.DataFrame
) -> None:
    """The run may leave out the history of every address it has no signal for (signals are at
    ``a*`` addresses; ``b*`` history belongs to other addresses)."""
    assert canonical(match(frame, related, CONFIG)) == canonical(
        match(frame, pl.concat([unrelated, related, unrelated]), CONFIG)
    )


def every_address_decided_after_the_repeat_rule(
    signals: pl.DataFrame, history: pl.DataFrame, config: MatchConfig
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The rules written plainly, each address decided once every signal is screened: the run
    decides the addresses before the history is in and decides again only those where a
    repeat signal drops out (services.matcher.rules.finish). Cases and outcomes."""
    signals = signals.sort("signal_id")
    repeat = mark_repeats(signals, history, config)
    screened = signals.with_columns(
        pl.when(mark_stale(config))
        .then(pl.lit(OUTCOME_STALE))
        .when(mark_below_minimum(config))
        .then(pl.lit(OUTCOME_BELOW_MINIMUM))
        .when(repeat)
        .then(pl.lit(OUTCOME_REPEAT))
        .alias("excluded")
    )
    grouped = group_addresses(screened.filter(pl.col("excluded").is_null()), config)
    cases = prioritise(classify(link_recidive(grouped.filter("is_case"), history, config)))
    outcome = grouped.select(
        "address_hash",
        pl.when("is_case").then(pl.lit(OUTCOME_MATCHED)).otherwise(pl.lit(OUTCOME_SINGLE)),
    ).to_series(1)
    outcomes = screened.join(
        grouped.select("address_hash", outcome.alias("grouped")), on="address_hash", how="left"
    ).select("signal_id", pl.coalesce("excluded", "grouped").alias("outcome"))
    return cases.drop("is_case", "standalone"), outcomes.sort("signal_id")


@settings(max_examples=200, deadline=None)
@given(signal_frames(), history_frames("a"))
def test_addresses_decided_before_the_history_come_out_as_decided_after_it(
    frame: pl.DataFrame, history: pl.DataFrame
) -> None:
    result = match(frame, history, CONFIG)
    cases, outcomes = every_address_decided_after_the_repeat_rule(frame, history, CONFIG)
    assert result.cases.equals(cases)
    assert result.outcomes.select("signal_id", "outcome").equals(outcomes)


def test_an_address_signalled_earlier_without_a_case_is_recidive() -> None:
    """The national monitor: a signal at the address in the previous six months makes the case
    recurrent, whether or not that signal made a case; the caller gives those addresses' keys
    by period, and the case names the periods (the reason its detail shows)."""
    B = addr("2011AB", "14")
    C = addr("2011AB", "16")
    month = signals(
        *(
            {"partner_id": partner, "kind": kind, "address_hash": address}
            for address in (A, B, C)
            for partner, kind in (("zorg1", "zorg"), ("energie1", "energie"))
        )
    )
    earlier_case = history({**history_row("c-earlier", "2026-08", "x", 1), "address_hash": C})
    earlier = by_period(
        {
            "2026-09": address_keys(pl.Series([A, C])),
            "2026-06": address_keys(pl.Series([A, addr("9999ZZ", "1")])),
        }
    )
    result = match(month, earlier_case, CONFIG, earlier)
    cases = {row["address_hash"]: row for row in result.cases.iter_rows(named=True)}
    assert cases[A]["is_recidive"] is True
    assert cases[A]["classification"] == "opeenvolgend"
    assert cases[A]["earlier_case_ids"] == []  # no earlier case to link
    assert cases[A]["signalled_periods"] == "2026-06,2026-09"  # in calendar order
    assert cases[B]["is_recidive"] is False
    assert cases[B]["classification"] == "meervoudig"
    assert cases[B]["signalled_periods"] is None
    # An earlier case and an earlier signal: both named.
    assert cases[C]["earlier_case_ids"] == ["c-earlier"]
    assert cases[C]["signalled_periods"] == "2026-09"
    assert result.figures["recidive"] == 2
    assert result.figures["recidive_signals_only"] == 1  # A; C had a case
    # Without the earlier addresses (none, none of the cases'), A is not recurrent, C by its
    # case alone.
    elsewhere = address_keys(pl.Series([addr("9999ZZ", "1")]))
    for none in (None, by_period({}), by_period({"2026-09": elsewhere[:0], "2026-10": elsewhere})):
        matched = match(month, earlier_case, CONFIG, none).cases
        cases = {row["address_hash"]: row for row in matched.iter_rows(named=True)}
        assert [h for h in (A, B, C) if cases[h]["is_recidive"]] == [C]
        assert cases[C]["signalled_periods"] is None


POOL = [addr("2011AB", str(n)) for n in range(1, 9)]


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.sampled_from(POOL), min_size=1, unique=True),
    st.dictionaries(
        st.integers(min_value=0, max_value=11).map(lambda i: str(CONFIG.period.shift(-1 - i))),
        st.lists(st.sampled_from(POOL), unique=True),
        max_size=8,
    ),
)
def test_each_case_names_the_periods_whose_set_holds_its_address(
    addresses: list[str], sets: dict[str, list[str]]
) -> None:
    """The periods as bits of one number come out as a plain look-up per period would name
    them: in calendar order, each once; null (and not recurrent, without earlier cases) where
    none holds the address."""
    cases = pl.DataFrame({"address_hash": addresses})
    keyed = {p: address_keys(pl.Series(hashes, dtype=pl.String)) for p, hashes in sets.items()}
    linked = link_recidive(cases, empty_history(), CONFIG, by_period(keyed))
    named = dict(linked.select("address_hash", "signalled_periods").iter_rows())
    for address in addresses:
        periods = sorted(p for p, hashes in sets.items() if address in hashes)
        assert named[address] == (",".join(periods) if periods else None)
    recurrent = dict(linked.select("address_hash", "is_recidive").iter_rows())
    assert recurrent == {a: named[a] is not None for a in addresses}


def test_the_signalled_periods_must_come_as_by_period_gives_them() -> None:
    """The periods are named from the Enum's categories, one bit each: a text column, or more
    periods than bits, is refused rather than named wrong."""
    month = signals(
        {"partner_id": "zorg1", "kind": "zorg", "address_hash": A},
        {"partner_id": "energie1", "kind": "energie", "address_hash": A},
    )
    keys = address_keys(pl.Series([A]))
    as_text = pl.DataFrame({"address_key": keys, "period": ["2026-10"]})
    many = by_period({str(Period(2020, 1).shift(i)): keys for i in range(65)})
    for wrong in (as_text, many):
        with pytest.raises(ValueError, match="Enum of at most 64"):
            match(month, empty_history(), CONFIG, wrong)
    most = by_period({str(Period(2020, 1).shift(i)): keys for i in range(64)})
    case = match(month, empty_history(), CONFIG, most).cases.row(0, named=True)
    assert case["signalled_periods"].split(",")[-1] == str(Period(2020, 1).shift(63))


def test_address_keys_are_a_sorted_set_that_survives_its_encoding() -> None:
    hashes = pl.Series([A, None, A, addr("1011AA", "1"), addr("1011AA", "2")])
    keys = address_keys(hashes)
    assert keys.dtype == pl.UInt64
    assert keys.len() == 3
    assert keys.is_sorted()
    decoded = decode(encode(keys))
    assert decoded is not None
    assert decoded.to_list() == keys.to_list()
    empty = decode(encode(address_keys(pl.Series([], dtype=pl.String))))
    assert empty is not None
    assert empty.len() == 0
    # Bytes it did not write: not a set (the run then builds the period's set again).
    assert decode(b"not a set") is None
    assert decode(encode(pl.Series("address_key", [1, 2], dtype=pl.Int64))) is None
