"""The matching rules: plain functions over Polars frames, no database in sight.

Where each rule comes from:

* **Freshness** – the Haarlem pilot's lesson: "check that a signal is still current before it goes
  to a wijkteam". A signal whose ``signaaldatum`` lies more than ``freshness_days`` before the run
  date is stale and kept out of matching.
* **Minimum amount** – six in ten municipalities ignore small arrears (half of them below €75);
  ``min_amount_cents`` per partner kind, default 0. Signals below it are counted, not matched.
* **Repeat signal** – the national model (and the covenant): a new signal from the same partner
  about the same arrears, while an earlier case for that address is open or was closed within
  ``recidive_months``, is not picked up again ("Niet opgepakt: herhaalde melding") unless the
  amount has gone up. The same arrears: they arose (``achterstand_sinds``) on or before the day the
  partner reported them for the earlier case (its signal's ``signaaldatum``); arrears that arose
  after it are new ones (the earlier arrears were paid off, or another household moved in), picked
  up as any signal is. Nor is a crisis signal a repeat when the earlier case had none: a
  threatened eviction or disconnection is then the arrears escalating, which the Wgs wants
  picked up within three working days; a crisis reported again, about the same arrears, is a
  repeat like any other.
* **Match** – the pilot: "the portal matches whether there are several arrears on one address". An
  address with fresh signals from two or more different partners becomes a case; rent arrears
  become a case on their own (the pilot: rent has the highest priority, with or without another
  arrear), and so does a crisis signal (Wgs: threatened eviction or disconnection). Which kinds
  make a case alone is configuration. Other single signals are listed as ``single``: the
  municipality still owes them an offer (by letter), but no team visits.
* **Recidive** – the pilot recognised repeat addresses (30%) and gave them to a budget coach; the
  national monitor calls a case "opeenvolgend" when the address had a signal within the previous
  six months. An address signalled in any of the previous ``recidive_months`` periods (whether
  or not that signal made a case) is recidive; it is linked to the cases it had there, and the
  case names the periods it was signalled in (``signalled_periods``).
* **Classification** – the national monitor: "enkelvoudig" (one signal), "meervoudig" (several
  signals on one address in the month), "opeenvolgend" (recurrent; takes precedence).
* **Priority** – crisis first, then rent, then more partners, then a higher total amount; ties
  broken by the address hash, so the order never depends on input order.

Every function is deterministic and independent of the row order of its input.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta

import polars as pl

from shared.periods import Period

SIGNAL_SCHEMA: dict[str, pl.DataType | type[pl.DataType]] = {
    "signal_id": pl.Int64,
    "partner_id": pl.String,
    "kind": pl.String,
    "address_hash": pl.String,
    "pc4": pl.String,
    "pc6_hash": pl.String,
    "person_hash": pl.String,
    "bedrag_cent": pl.Int64,
    "achterstand_sinds": pl.Date,
    "signaaldatum": pl.Date,
    "crisis": pl.Boolean,
    "warme_overdracht": pl.Boolean,
}
# Earlier cases' signals, one row per (case, signal), for repeat and recidive checks.
HISTORY_SCHEMA: dict[str, pl.DataType | type[pl.DataType]] = {
    "case_id": pl.String,
    "period": pl.String,
    "address_hash": pl.String,
    "partner_id": pl.String,
    "bedrag_cent": pl.Int64,
    # The earlier signal's date: arrears that arose after it are other arrears (the repeat rule).
    "signaaldatum": pl.Date,
    # Whether the earlier case had a crisis signal: a crisis after one is no escalation.
    "has_crisis": pl.Boolean,
    "case_open": pl.Boolean,
    "closed_on": pl.Date,
}

# An address hash's key in the sets of earlier periods' addresses (services.matcher.signalled):
# its first 64 bits.
ADDRESS_KEY = pl.col("address_hash").str.slice(0, 16).str.to_integer(base=16, dtype=pl.UInt64)

OUTCOME_MATCHED = "matched"
OUTCOME_SINGLE = "single"
OUTCOME_STALE = "stale"
OUTCOME_BELOW_MINIMUM = "below_minimum"
OUTCOME_REPEAT = "repeat"

ENKELVOUDIG = "enkelvoudig"
MEERVOUDIG = "meervoudig"
OPEENVOLGEND = "opeenvolgend"


@dataclass(frozen=True)
class MatchConfig:
    """The parameters of one run (kept with the run record)."""

    period: Period
    run_date: date
    freshness_days: int = 45
    recidive_months: int = 6
    min_amount_cents: dict[str, int] = field(default_factory=dict)
    standalone_kinds: frozenset[str] = frozenset({"huur"})
    crisis_standalone: bool = True

    @property
    def stale_before(self) -> date:
        return self.run_date - timedelta(days=self.freshness_days)

    @property
    def earliest_history_period(self) -> Period:
        return self.period.shift(-self.recidive_months)

    @property
    def repeat_closed_since(self) -> date:
        """Cases closed on or after this day still make a repeat signal a repeat."""
        return self.earliest_history_period.first_day


@dataclass
class MatchResult:
    cases: pl.DataFrame  # one row per case, in priority order
    outcomes: pl.DataFrame  # one row per input signal: signal_id, outcome, case_key
    figures: dict[str, object]


def empty_signals() -> pl.DataFrame:
    return pl.DataFrame(schema=SIGNAL_SCHEMA)


def empty_history() -> pl.DataFrame:
    return pl.DataFrame(schema=HISTORY_SCHEMA)


def mark_stale(config: MatchConfig) -> pl.Expr:
    """True for signals older than the freshness limit."""
    return pl.col("signaaldatum") < pl.lit(config.stale_before)


def mark_below_minimum(config: MatchConfig) -> pl.Expr:
    """True for signals under their kind's minimum amount."""
    minimum = pl.col("kind").replace_strict(
        config.min_amount_cents, default=0, return_dtype=pl.Int64
    )
    return pl.col("bedrag_cent") < minimum


def mark_repeats(signals: pl.DataFrame, history: pl.DataFrame, config: MatchConfig) -> pl.Series:
    """True for a partner's repeat report of arrears already handled: the same arrears (arisen by
    the earlier report), its amount not higher, and no crisis that the earlier case did not have
    (see the module docstring)."""
    live = history.filter(
        pl.col("case_open") | (pl.col("closed_on") >= pl.lit(config.repeat_closed_since))
    )
    # The latest earlier case's amount per address and partner: ordered within each (small)
    # group rather than sorting the whole history by its text columns first.
    order = ("period", "case_id", "bedrag_cent", "signaaldatum")
    latest = live.group_by("address_hash", "partner_id").agg(
        pl.col("bedrag_cent").sort_by(*order).last().alias("earlier_cent"),
        pl.col("signaaldatum").sort_by(*order).last().alias("earlier_on"),
        pl.col("has_crisis").sort_by(*order).last().alias("earlier_crisis"),
    )
    columns = ("address_hash", "partner_id", "bedrag_cent", "achterstand_sinds", "crisis")
    joined = signals.select(*columns).join(
        latest, on=["address_hash", "partner_id"], how="left", maintain_order="left"
    )
    return joined.select(
        (
            pl.col("earlier_cent").is_not_null()
            & (pl.col("bedrag_cent") <= pl.col("earlier_cent"))
            # A link made before migration 0023 has no date (none is left after it): the same.
            & (pl.col("achterstand_sinds") <= pl.col("earlier_on")).fill_null(True)
            # An escalation: a crisis where the earlier case had none.
            & ~(pl.col("crisis").fill_null(False) & ~pl.col("earlier_crisis").fill_null(False))
        ).alias("repeat")
    )["repeat"]


def _standalone(config: MatchConfig) -> pl.Expr:
    """True for a signal that makes a case on its own (its kind, or a crisis)."""
    return pl.col("kind").is_in(sorted(config.standalone_kinds)) | (
        pl.col("crisis") & pl.lit(config.crisis_standalone)
    )


def _makes_case(partner_count: pl.Expr, standalone: pl.Expr) -> pl.Expr:
    return (partner_count >= 2) | standalone


def with_case_flags(screened: pl.DataFrame, config: MatchConfig) -> pl.DataFrame:
    """Add ``is_case`` to each signal: whether the eligible signals (``excluded`` null) at its
    address make a case; null for an excluded signal.

    Decided per address in one pass over the signals, before the signals' lists are built for
    the cases' addresses only (at national scale 250,000 of 877,000 addresses become cases:
    grouping them all took 1.4 s instead of 0.8 s).
    """
    eligible = pl.col("excluded").is_null()
    decided = _makes_case(
        pl.col("partner_id").filter(eligible).n_unique(),
        _standalone(config).filter(eligible).any(),
    ).over("address_hash")
    return screened.with_columns(pl.when(eligible).then(decided).alias("is_case"))


def group_addresses(eligible: pl.DataFrame, config: MatchConfig) -> pl.DataFrame:
    """One row per address with its eligible signals and whether it becomes a case."""
    grouped = eligible.group_by("address_hash").agg(
        pl.col("signal_id").sort().alias("signal_ids"),
        pl.col("partner_id").n_unique().alias("partner_count"),
        pl.len().alias("signal_count"),
        pl.col("bedrag_cent").sum().alias("total_cent"),
        pl.col("kind").is_in(["huur"]).any().alias("has_rent"),
        pl.col("crisis").any().alias("has_crisis"),
        pl.col("warme_overdracht").any().alias("has_warm_handover"),
        _standalone(config).any().alias("standalone"),
        pl.col("kind").unique().sort().alias("kinds"),
        pl.col("pc4").drop_nulls().min().alias("pc4"),
        pl.col("pc6_hash").drop_nulls().min().alias("pc6_hash"),
        pl.col("person_hash").drop_nulls().unique().sort().alias("person_hashes"),
    )
    return grouped.with_columns(
        _makes_case(pl.col("partner_count"), pl.col("standalone")).alias("is_case")
    )


def link_recidive(
    cases: pl.DataFrame,
    history: pl.DataFrame,
    config: MatchConfig,
    signalled: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Add ``earlier_case_ids`` (the address's cases in the previous periods),
    ``signalled_periods`` (the periods of ``signalled`` in which the address was signalled,
    ``2026-05,2026-07``, or null) and ``is_recidive``: either.

    ``signalled``: the keys (:data:`ADDRESS_KEY`) of the addresses signalled in the previous
    periods, with the period (``address_key``, ``period``: an Enum of the periods in calendar
    order, :func:`services.matcher.signalled.by_period`)."""
    window = history.filter(
        (pl.col("period") >= str(config.earliest_history_period))
        & (pl.col("period") < str(config.period))
    )
    earlier = window.group_by("address_hash").agg(
        pl.col("case_id").unique().sort().alias("earlier_case_ids")
    )
    linked = cases.join(earlier, on="address_hash", how="left")
    if signalled is not None and not signalled.is_empty():
        linked = linked.with_columns(ADDRESS_KEY.alias("address_key"))
        kind = signalled.schema["period"]
        if not isinstance(kind, pl.Enum) or kind.categories.len() > 64:
            raise ValueError("the periods must be an Enum of at most 64 (signalled.by_period)")
        periods = kind.categories.to_list()
        # Each address's periods as the bits of one number (at most 36 periods: the look-back's
        # limit), named once per distinct number: 0.31 against 0.67 s for the periods as texts
        # per address, 250,000 cases against the 5.3 million keys of six months. Joined, not
        # looked up with ``is_in`` (0.19 against 0.45 s, when only whether mattered).
        bits = (
            linked.select(pl.col("address_key").unique())
            .join(
                signalled.select(
                    "address_key",
                    pl.lit(2, dtype=pl.UInt64)
                    .pow(pl.col("period").to_physical())
                    .cast(pl.UInt64)
                    .alias("bits"),
                ),
                on="address_key",
                how="inner",
            )
            .group_by("address_key")
            .agg(pl.col("bits").bitwise_or())
        )
        names = {
            mask: ",".join(p for i, p in enumerate(periods) if mask >> i & 1)
            for mask in bits.get_column("bits").unique().to_list()
        }
        seen = bits.select(
            "address_key",
            pl.col("bits").replace_strict(names, return_dtype=pl.String).alias("signalled_periods"),
        )
        linked = linked.join(seen, on="address_key", how="left").drop("address_key")
    else:
        linked = linked.with_columns(pl.lit(None, dtype=pl.String).alias("signalled_periods"))
    return linked.with_columns(
        pl.col("earlier_case_ids").fill_null(pl.lit([], dtype=pl.List(pl.String))),
        (
            pl.col("earlier_case_ids").is_not_null() | pl.col("signalled_periods").is_not_null()
        ).alias("is_recidive"),
    )


def classify(cases: pl.DataFrame) -> pl.DataFrame:
    """The national monitor's classification; recurrent takes precedence."""
    return cases.with_columns(
        pl.when(pl.col("is_recidive"))
        .then(pl.lit(OPEENVOLGEND))
        .when(pl.col("signal_count") >= 2)
        .then(pl.lit(MEERVOUDIG))
        .otherwise(pl.lit(ENKELVOUDIG))
        .alias("classification")
    )


def prioritise(cases: pl.DataFrame) -> pl.DataFrame:
    """Sort by priority and number the cases 1..n (1 is the most urgent)."""
    ordered = cases.sort(
        ["has_crisis", "has_rent", "partner_count", "total_cent", "address_hash"],
        descending=[True, True, True, True, False],
    )
    return ordered.with_row_index("priority", offset=1).with_columns(
        pl.col("priority").cast(pl.Int32)
    )


@dataclass
class Prepared:
    """What the period's signals decide on their own (:func:`prepare`), before the history."""

    config: MatchConfig
    # The signals in id order, with ``excluded`` (stale, below the minimum) and ``is_case`` as
    # their addresses stand without the repeat rule.
    signals: pl.DataFrame
    # group_addresses of the addresses that are cases without the repeat rule.
    groups: pl.DataFrame


def prepare(signals: pl.DataFrame, config: MatchConfig) -> Prepared:
    """The rules that need only the period's signals: freshness, the minimum amount, and which
    addresses make a case and with what, as if no signal were a repeat.

    The run does this while the history is still being read (``services.matcher.repository.
    inputs``); :func:`finish` then applies the repeat rule to the addresses it touches.
    """
    signals = signals.select(list(SIGNAL_SCHEMA)).sort("signal_id")
    screened = with_case_flags(
        signals.with_columns(
            pl.when(mark_stale(config))
            .then(pl.lit(OUTCOME_STALE))
            .when(mark_below_minimum(config))
            .then(pl.lit(OUTCOME_BELOW_MINIMUM))
            .otherwise(pl.lit(None, dtype=pl.String))
            .alias("excluded")
        ),
        config,
    )
    groups = group_addresses(screened.filter("is_case"), config)
    return Prepared(config=config, signals=screened, groups=groups)


def finish(
    prepared: Prepared, history: pl.DataFrame, signalled: pl.DataFrame | None = None
) -> MatchResult:
    """The rest of the rules once the history is in (the earlier cases, and the keys of the
    addresses signalled in the earlier periods, by period: :func:`link_recidive`): repeats,
    recidive, classification and priority; see the module docstring.

    A repeat signal leaves its address's case: only the addresses with such a signal are
    decided and grouped again, from their remaining signals (in the benchmark's national month
    those of 32,891 repeat signals, of 877,306 addresses); every other address stands as
    :func:`prepare` found it.
    """
    config, screened, groups = prepared.config, prepared.signals, prepared.groups
    # Only the history of this period's addresses can matter (the repeat rule looks up a signal's
    # address, recidive a case's): at national scale that is one earlier row in sixteen, and the
    # rules below then group and sort that much less. The run reads only that part
    # (services.matcher.repository.history); the rules do not rely on it.
    history = history.select(list(HISTORY_SCHEMA)).join(
        screened.select("address_hash"), on="address_hash", how="semi"
    )
    screened = screened.with_columns(
        (pl.col("excluded").is_null() & mark_repeats(screened, history, config)).alias("repeat")
    )
    repeated = screened.filter("repeat").select("address_hash").unique()
    if not repeated.is_empty():
        again = with_case_flags(
            screened.join(repeated, on="address_hash", how="semi").with_columns(
                pl.when("repeat")
                .then(pl.lit(OUTCOME_REPEAT))
                .otherwise(pl.col("excluded"))
                .alias("excluded")
            ),
            config,
        )
        decided = again.select(
            "signal_id",
            pl.col("excluded").alias("excluded_again"),
            pl.col("is_case").alias("is_case_again"),
            pl.lit(True).alias("again"),
        )
        screened = (
            screened.join(decided, on="signal_id", how="left", maintain_order="left")
            .with_columns(
                pl.when("again").then(pl.col(f"{c}_again")).otherwise(pl.col(c)).alias(c)
                for c in ("excluded", "is_case")
            )
            .drop("excluded_again", "is_case_again", "again")
        )
        groups = pl.concat(
            [
                groups.join(repeated, on="address_hash", how="anti"),
                group_addresses(again.filter("is_case"), config),
            ]
        )
    screened = screened.drop("repeat")
    cases = prioritise(classify(link_recidive(groups, history, config, signalled)))
    eligible = pl.col("excluded").is_null()
    # Counted, not listed (the benchmark's million signals: 38 to 54 against 94 to 119 ms).
    singles = screened.select(
        pl.col("address_hash").filter(eligible & ~pl.col("is_case")).n_unique()
    ).item()
    outcomes = screened.select(
        "signal_id",
        "partner_id",
        pl.coalesce(
            "excluded",
            pl.when(pl.col("is_case"))
            .then(pl.lit(OUTCOME_MATCHED))
            .otherwise(pl.lit(OUTCOME_SINGLE)),
        ).alias("outcome"),
        pl.when(eligible).then(pl.col("address_hash")).alias("address_hash"),
    )
    figures = _figures(screened, outcomes, cases, singles)
    return MatchResult(
        cases=cases.drop("is_case", "standalone"), outcomes=outcomes, figures=figures
    )


def match(
    signals: pl.DataFrame,
    history: pl.DataFrame,
    config: MatchConfig,
    signalled: pl.DataFrame | None = None,
) -> MatchResult:
    """Run every rule over one period's signals; see the module docstring."""
    return finish(prepare(signals, config), history, signalled)


def _figures(
    signals: pl.DataFrame, outcomes: pl.DataFrame, cases: pl.DataFrame, singles: int
) -> dict[str, object]:
    def count(outcome: str) -> int:
        return outcomes.filter(pl.col("outcome") == outcome).height

    stale_per_partner = (
        outcomes.filter(pl.col("outcome") == OUTCOME_STALE)
        .group_by("partner_id")
        .len()
        .sort("partner_id")
    )
    rent_only = cases.filter(
        pl.col("has_rent") & (pl.col("partner_count") == 1) & ~pl.col("has_crisis")
    ).height
    return {
        "signals_in": signals.height,
        "stale": count(OUTCOME_STALE),
        "stale_per_partner": dict(stale_per_partner.iter_rows()),
        "below_minimum": count(OUTCOME_BELOW_MINIMUM),
        "repeat_signals": count(OUTCOME_REPEAT),
        "addresses_matched": cases.filter(pl.col("partner_count") >= 2).height,
        "cases": cases.height,
        "rent_only": rent_only,
        "crisis": cases.filter("has_crisis").height,
        "recidive": cases.filter("is_recidive").height,
        # Recurrent by an earlier signal alone: no earlier case at the address in the window.
        "recidive_signals_only": cases.filter(
            pl.col("is_recidive") & (pl.col("earlier_case_ids").list.len() == 0)
        ).height,
        "singles": singles,
        "signals_in_cases": count(OUTCOME_MATCHED),
        "classification": {
            name: cases.filter(pl.col("classification") == name).height
            for name in (ENKELVOUDIG, MEERVOUDIG, OPEENVOLGEND)
        },
    }
