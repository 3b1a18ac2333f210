"""Routing rules: who acts on each case of a run, and by when (pure Polars, no database).

Where the rules come from:

* **Known to SDV → SDV.** The pilot's step 3: the debt-services team first checks whether the
  household is already its client; if so, "the client stays with SDV". A case is known when its
  address hash, or the person hash (surname + birth date) of one of its signals, is in the SDV
  client register.
* **Recidive → budget coach.** In the pilot 30 % of the addresses came back; a repeat address goes
  to the budget coach rather than to a fresh visit by the wijkteam.
* **Otherwise → the wijkteam of the area.** Teams cover PC4 ranges, single PC4s and single PC6s. A
  PC6 entry is more specific than a PC4 range and wins. An address in no team's area goes to the
  default team (if one is configured) and is flagged ``outside_areas``, so the coordinator can fix
  the area map.
* **Due date.** The pilot's promise: help within 28 days of the run (``due_days``). A crisis signal
  (threatened eviction or disconnection) gets a first talk within three working days, as the Wgs
  demands (``crisis_due_working_days``; weekends and Dutch public holidays do not count).

The rules are applied in that order: known to SDV wins over recidive, recidive over the wijkteam.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import polars as pl

from shared.models import Route
from shared.workdays import add_working_days

# What the rules read of each case.
CASE_SCHEMA: dict[str, pl.DataType | type[pl.DataType]] = {
    "case_id": pl.String,
    "address_hash": pl.String,
    "pc4": pl.String,
    "pc6_hash": pl.String,
    "person_hashes": pl.List(pl.String),
    "is_recidive": pl.Boolean,
    "has_crisis": pl.Boolean,
}
# What they decide.
ROUTING_SCHEMA: dict[str, pl.DataType | type[pl.DataType]] = {
    "case_id": pl.String,
    "route": pl.String,
    "team_id": pl.String,
    "known_to_sdv": pl.Boolean,
    "outside_areas": pl.Boolean,
    "due_date": pl.Date,
}


@dataclass(frozen=True)
class AreaMap:
    """Which team covers which postcode: ``pc4`` (pc4, team_id) and ``pc6`` (pc6_hash, team_id)."""

    pc4: pl.DataFrame
    pc6: pl.DataFrame
    default_team_id: str | None = None

    @classmethod
    def empty(cls, default_team_id: str | None = None) -> AreaMap:
        return cls(
            pl.DataFrame(schema={"pc4": pl.String, "team_id": pl.String}),
            pl.DataFrame(schema={"pc6_hash": pl.String, "team_id": pl.String}),
            default_team_id,
        )

    @classmethod
    def build(
        cls,
        ranges: list[tuple[str, str, str]],
        pc6s: list[tuple[str, str]],
        default_team_id: str | None = None,
    ) -> AreaMap:
        """From (team_id, pc4_from, pc4_to) ranges and (team_id, pc6_hash) entries.

        Ranges are expanded to one row per PC4 (at most 9,000), so lookup is a plain join. Where
        ranges of two teams overlap (the CLI refuses that, but the data might), the narrower range
        wins, then the lower team id: deterministic either way.
        """
        rows: dict[str, tuple[int, str]] = {}
        for team_id, low, high in ranges:
            span = int(high) - int(low)
            for number in range(int(low), int(high) + 1):
                code = f"{number:04d}"
                candidate = (span, team_id)
                if code not in rows or candidate < rows[code]:
                    rows[code] = candidate
        pc4 = pl.DataFrame(
            {"pc4": list(rows), "team_id": [team for _, team in rows.values()]},
            schema={"pc4": pl.String, "team_id": pl.String},
        )
        pc6 = (
            pl.DataFrame(
                {"pc6_hash": [h for _, h in pc6s], "team_id": [t for t, _ in pc6s]},
                schema={"pc6_hash": pl.String, "team_id": pl.String},
            )
            .sort("team_id")
            .unique("pc6_hash", keep="first")
        )
        return cls(pc4, pc6, default_team_id)


@dataclass(frozen=True)
class RoutingConfig:
    run_date: date
    due_days: int = 28
    crisis_due_working_days: int = 3

    @property
    def due_date(self) -> date:
        return self.run_date + timedelta(days=self.due_days)

    @property
    def crisis_due_date(self) -> date:
        return add_working_days(self.run_date, self.crisis_due_working_days)


def known_to_sdv(
    cases: pl.DataFrame, sdv_addresses: pl.Series, sdv_persons: pl.Series
) -> pl.Series:
    """Whether each case's address, or a person on one of its signals, is an SDV client."""
    by_person = cases.select(
        pl.col("person_hashes")
        .list.eval(pl.element().is_in(sdv_persons.implode()))
        .list.any()
        .fill_null(False)
    ).to_series()
    by_address = cases.select(pl.col("address_hash").is_in(sdv_addresses.implode())).to_series()
    return (by_address | by_person).alias("known_to_sdv")


def area_team(cases: pl.DataFrame, areas: AreaMap) -> pl.DataFrame:
    """``case_id``, the ``area_team_id`` covering the address (PC6 before PC4), null if none."""
    by_pc6 = cases.select("case_id", "pc6_hash").join(
        areas.pc6.rename({"team_id": "pc6_team"}), on="pc6_hash", how="left"
    )
    by_pc4 = cases.select("case_id", "pc4").join(
        areas.pc4.rename({"team_id": "pc4_team"}), on="pc4", how="left"
    )
    return by_pc6.join(by_pc4, on="case_id", how="left").select(
        "case_id", pl.coalesce("pc6_team", "pc4_team").alias("area_team_id")
    )


def route(
    cases: pl.DataFrame,
    *,
    sdv_addresses: pl.Series,
    sdv_persons: pl.Series,
    areas: AreaMap,
    config: RoutingConfig,
) -> pl.DataFrame:
    """Route every case; returns one row per case in ``ROUTING_SCHEMA`` (input order kept)."""
    cases = cases.select(list(CASE_SCHEMA))
    known = known_to_sdv(cases, sdv_addresses, sdv_persons)
    teams = area_team(cases, areas)
    decided = (
        cases.with_columns(known)
        .join(teams, on="case_id", how="left", maintain_order="left")
        .with_columns(
            pl.when(pl.col("known_to_sdv"))
            .then(pl.lit(Route.sdv.value))
            .when(pl.col("is_recidive"))
            .then(pl.lit(Route.budgetcoach.value))
            .otherwise(pl.lit(Route.wijkteam.value))
            .alias("route")
        )
    )
    is_wijkteam = pl.col("route") == Route.wijkteam.value
    return decided.select(
        "case_id",
        "route",
        pl.when(is_wijkteam)
        .then(pl.coalesce("area_team_id", pl.lit(areas.default_team_id, dtype=pl.String)))
        .alias("team_id"),
        "known_to_sdv",
        (is_wijkteam & pl.col("area_team_id").is_null()).alias("outside_areas"),
        pl.when(pl.col("has_crisis"))
        .then(pl.lit(config.crisis_due_date))
        .otherwise(pl.lit(config.due_date))
        .alias("due_date"),
    )
