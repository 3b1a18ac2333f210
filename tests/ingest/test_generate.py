"""The synthetic data generator: deterministic, valid where it must be, messy like real exports."""

from __future__ import annotations

from collections import Counter
from datetime import date, timedelta
from pathlib import Path

import polars as pl
import pytest

from services.ingest.generate import (
    KINDS,
    GeneratedFile,
    PartnerSpec,
    demo_partners,
    generate,
    national_partners,
)
from services.ingest.parsing import parse_upload
from services.ingest.validation import ValidationResult, ValidationRules, validate
from shared.periods import Period

TODAY = date.today()
# Months long past: no date is clamped to today, so the data (and the statistics checked here) are
# the same whatever day the tests run.
FIRST = "2025-01"
AMOUNT_RANGES = {
    "huur": (300_00, 4_000_00),
    "energie": (100_00, 2_500_00),
    "water": (30_00, 400_00),
    "zorg": (100_00, 1_500_00),
}


def checked(file: GeneratedFile) -> tuple[pl.DataFrame, ValidationResult]:
    """The parsed text frame and the validation result of one generated file."""
    parsed = parse_upload(file.path.read_bytes(), file.path.name, None)
    return parsed.frame, validate(parsed.frame, ValidationRules(today=TODAY))


def tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> list[GeneratedFile]:
    out = tmp_path_factory.mktemp("demo")
    return generate(out, households=2000, months=3, seed=11, first_period=FIRST)


@pytest.fixture(scope="module")
def demo_checked(
    demo_run: list[GeneratedFile],
) -> list[tuple[GeneratedFile, pl.DataFrame, ValidationResult]]:
    return [(f, *checked(f)) for f in demo_run]


def test_partner_lists() -> None:
    demo = demo_partners()
    assert Counter(p.kind for p in demo) == {"huur": 2, "energie": 1, "water": 1, "zorg": 1}
    national = national_partners(3)
    assert Counter(p.kind for p in national) == dict.fromkeys(KINDS, 3)
    assert len({p.name for p in national_partners(8)}) == 32
    with pytest.raises(ValueError):
        PartnerSpec("Woonstichting X", "bank")


def test_same_seed_gives_identical_bytes_and_another_seed_differs(tmp_path: Path) -> None:
    def run(name: str, seed: int) -> dict[str, bytes]:
        generate(
            tmp_path / name,
            households=800,
            months=2,
            seed=seed,
            first_period=FIRST,
            invalid_rows=1,
            partners=national_partners(2),
        )
        return tree(tmp_path / name)

    first, again, other = run("a", 5), run("b", 5), run("c", 6)
    assert first
    assert first == again
    assert first.keys() == other.keys()
    assert all(first[name] != other[name] for name in first)


def test_layout_and_counts(demo_run: list[GeneratedFile]) -> None:
    periods = sorted({f.period for f in demo_run})
    assert periods == [str(Period.parse(FIRST).shift(i)) for i in range(3)]
    for f in demo_run:
        assert f.path.parent.name == f.period
        assert f.path.name.endswith(f"_{f.period}.{'json' if f.partner.kind == 'zorg' else 'csv'}")
        assert f.rows > 0
        assert f.invalid_rows == 0
    assert Counter(f.period for f in demo_run) == dict.fromkeys(periods, 5)


@pytest.mark.parametrize("formats", ["mixed", "csv"])
def test_every_file_parses_and_validates_without_errors(tmp_path: Path, formats: str) -> None:
    files = generate(
        tmp_path,
        households=1500,
        months=2,
        seed=3,
        first_period=FIRST,
        partners=national_partners(3),
        formats=formats,
    )
    assert len(files) == 24
    suffixes = Counter(f.path.suffix for f in files)
    assert suffixes[".json"] == (2 if formats == "mixed" else 0)
    for f in files:
        frame, result = checked(f)
        assert result.errors == [], f.path.name
        assert result.rows.height == f.rows == frame.height
        low, high = AMOUNT_RANGES[f.partner.kind]
        assert result.rows["bedrag_cent"].is_between(low, high).all()
        assert result.rows["address_key"].null_count() == 0
        assert result.rows["referentie"].n_unique() == f.rows
        if f.partner.kind != "energie":
            assert not result.rows["eindelevering"].any()


def test_partners_have_different_export_styles(tmp_path: Path) -> None:
    files = generate(
        tmp_path,
        households=1500,
        months=1,
        seed=3,
        first_period=FIRST,
        partners=national_partners(3),
        formats="csv",
    )
    contents = [f.path.read_bytes() for f in files]
    header_lines = [c.split(b"\n", 1)[0] for c in contents]
    assert any(b";" in h for h in header_lines)
    assert any(b"\t" in h for h in header_lines)
    assert any(b"," in h and b";" not in h and b"\t" not in h for h in header_lines)
    assert any(c.startswith(b"\xef\xbb\xbf") for c in contents)

    def utf8(content: bytes) -> bool:
        try:
            content.decode("utf-8")
        except UnicodeDecodeError:
            return False
        return True

    assert any(not utf8(c) for c in contents)  # Windows-1252
    headers = b"\n".join(header_lines)
    for spelling in (b"Achterstand sinds", b"ACHTERSTAND_SINDS", b"achterstand-sinds"):
        assert spelling in headers
    body = b"\n".join(contents)
    assert b"\x80 " in body or "€ ".encode() in body  # "€ 1.234,56"
    for pattern in (rb"\d{4}-\d{2}-\d{2}", rb"\d{2}-\d{2}-\d{4}", rb"\d{2}/\d{2}/\d{4}"):
        assert pl.Series([body.decode("cp1252", "replace")]).str.contains(pattern.decode()).all()


def test_invalid_rows_give_errors_on_exactly_that_many_rows(tmp_path: Path) -> None:
    files = generate(
        tmp_path,
        households=1500,
        months=2,
        seed=4,
        first_period=FIRST,
        partners=[*demo_partners(), PartnerSpec("Zorgfonds Heideroos", "zorg")],
        invalid_rows=2,
    )
    messages: Counter[str] = Counter()
    for f in files:
        _, result = checked(f)
        assert f.invalid_rows == 2
        assert len({e.row for e in result.errors}) == 2, f.path.name
        assert len(result.errors) == 2
        messages.update(e.message for e in result.errors)
    assert len(messages) >= 5  # postcode, amounts, house number, future date, BSN


def test_invalid_rows_only_touch_those_rows(tmp_path: Path) -> None:
    clean = generate(tmp_path / "a", households=600, months=1, seed=9, first_period=FIRST)
    broken = generate(
        tmp_path / "b", households=600, months=1, seed=9, first_period=FIRST, invalid_rows=3
    )
    for good, bad in zip(clean, broken, strict=True):
        assert good.rows == bad.rows
        good_frame, _ = checked(good)
        bad_frame, result = checked(bad)
        changed = good_frame.with_row_index("i").join(
            bad_frame.with_row_index("i"), on="i", suffix="_b"
        )
        differing = {
            r
            for r, *values in changed.select(
                "row",
                *[
                    pl.col(c).eq_missing(pl.col(f"{c}_b")).not_().alias(c)
                    for c in good_frame.columns
                    if c != "row"
                ],
            ).iter_rows()
            if any(values)
        }
        assert differing == {e.row for e in result.errors}
        assert len(differing) == min(3, good.rows)


def month_keys(
    checked_files: list[tuple[GeneratedFile, pl.DataFrame, ValidationResult]],
) -> pl.DataFrame:
    """address_key per partner and period, one row each."""
    return pl.concat(
        [
            result.rows.select("address_key").with_columns(
                partner=pl.lit(f.partner.name), period=pl.lit(f.period)
            )
            for f, _, result in checked_files
        ]
    ).unique()


def test_overlap_between_partners(
    demo_checked: list[tuple[GeneratedFile, pl.DataFrame, ValidationResult]],
) -> None:
    keys = month_keys(demo_checked)
    for period in sorted(keys["period"].unique()):
        per_address = keys.filter(pl.col("period") == period).group_by("address_key").len()
        share = (per_address["len"] >= 2).mean()
        assert isinstance(share, float)
        assert 0.05 <= share <= 0.30, (period, share)
        assert 80 <= per_address.height <= 180  # about 6 % of 2000 households


def test_recidive_across_months(
    demo_checked: list[tuple[GeneratedFile, pl.DataFrame, ValidationResult]],
) -> None:
    keys = month_keys(demo_checked)
    periods = sorted(keys["period"].unique())
    by_period = [set(keys.filter(pl.col("period") == p)["address_key"].to_list()) for p in periods]
    third = by_period[2]
    share = len(third & (by_period[0] | by_period[1])) / len(third)
    assert 0.10 <= share <= 0.60, share


def test_continuing_cases_keep_reference_and_start_date(
    demo_checked: list[tuple[GeneratedFile, pl.DataFrame, ValidationResult]],
) -> None:
    rows = pl.concat(
        [
            result.rows.select("referentie", "achterstand_sinds", "address_key").with_columns(
                partner=pl.lit(f.partner.name), period=pl.lit(f.period)
            )
            for f, _, result in demo_checked
        ]
    )
    runs = rows.group_by("partner", "referentie").agg(
        pl.col("period").n_unique().alias("months"),
        pl.col("achterstand_sinds").n_unique().alias("starts"),
        pl.col("address_key").n_unique().alias("addresses"),
    )
    assert runs.filter(pl.col("months") > 1).height >= 10
    assert (runs["starts"] == 1).all()
    assert (runs["addresses"] == 1).all()


def test_same_address_spelled_differently(
    demo_checked: list[tuple[GeneratedFile, pl.DataFrame, ValidationResult]],
) -> None:
    spelled = pl.concat(
        [
            frame.select(
                "row",
                pl.concat_str(
                    [
                        pl.col(c).fill_null("")
                        for c in ("postcode", "huisnummer", "huisletter", "huisnummertoevoeging")
                    ],
                    separator="|",
                ).alias("spelling"),
            )
            .join(result.rows.select("row", "address_key"), on="row")
            .with_columns(partner=pl.lit(f.partner.name))
            for f, frame, result in demo_checked
        ]
    )
    variety = spelled.group_by("address_key").agg(
        pl.col("spelling").n_unique().alias("spellings"),
        pl.col("partner").n_unique().alias("partners"),
    )
    several = variety.filter((pl.col("spellings") > 1) & (pl.col("partners") > 1))
    assert several.height >= 3
    raw = spelled["spelling"].to_list()
    assert any(" " in s.split("|")[0] for s in raw)  # "2011 AB"
    assert any(s.split("|")[0][4:].islower() for s in raw)  # "2011ab"


def test_dates_are_plausible(
    demo_checked: list[tuple[GeneratedFile, pl.DataFrame, ValidationResult]],
) -> None:
    for f, frame, result in demo_checked:
        rows = result.rows
        period = Period.parse(f.period)
        if frame["signaaldatum"].null_count() == 0:
            signal = rows["signaaldatum"]
            assert signal.min() >= period.first_day  # type: ignore[operator]
            assert signal.max() <= date(period.year, period.month, 24)  # type: ignore[operator]
            days = (rows["signaaldatum"] - rows["achterstand_sinds"]).dt.total_days()
            assert days.is_between(30, 200).all(), f.path.name
        born = rows["geboortedatum"].drop_nulls()
        if born.len():
            assert born.max() <= TODAY - timedelta(days=18 * 365)  # type: ignore[operator]


def test_a_period_that_has_not_started_is_clamped_to_today(tmp_path: Path) -> None:
    upcoming = str(Period(TODAY.year, TODAY.month).shift(1))
    files = generate(tmp_path, households=1000, months=1, seed=2, first_period=upcoming)
    for f in files:
        _, result = checked(f)
        assert result.errors == []
        assert result.rows["signaaldatum"].max() <= TODAY  # type: ignore[operator]
        assert result.rows["achterstand_sinds"].max() <= TODAY - timedelta(days=30)  # type: ignore[operator]


def test_arguments_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        generate(tmp_path, households=10, months=1, seed=1, first_period=FIRST, formats="xlsx")
    with pytest.raises(ValueError):
        generate(tmp_path, households=0, months=1, seed=1, first_period=FIRST)
    with pytest.raises(ValueError):
        generate(
            tmp_path,
            households=10,
            months=1,
            seed=1,
            first_period=FIRST,
            partners=[PartnerSpec("A b", "huur"), PartnerSpec("A-B", "zorg")],
        )
