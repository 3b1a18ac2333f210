"""Synthetic partner files: deterministic, realistic and as messy as real exports.

A fixed population of households lives in a fictional municipality (postcodes 2011–2037, places
Meerhaven, Duinwijk and Spaarnoord). Every month each partner reports the households in arrears
that are its customers, in its own export style, as a file under ``out_dir/YYYY-MM/``.

What the files model:

* **Volume and mix.** About ``signal_rate`` of the households (default 6 %) is signalled per month;
  signals split roughly 45 % health insurers, 25 % energy, 19 % rent, 11 % water (renormalised over
  the kinds present). A household is the customer of one partner per kind.
* **Overlap.** About 12 % of the signalled addresses carry signals of two or more partners.
* **Recidive.** About 30 % of the addresses signalled in a month were signalled before: cases run on
  for a few months (same ``referentie`` and ``achterstand_sinds``, the amount usually grows), and a
  few households fall back into arrears later.
* **Dates.** ``signaaldatum`` lies between the 1st and the partner's export day (15th–24th) of the
  period, ``achterstand_sinds`` 30–200 days before it. Nothing lies after :func:`date.today`
  (taken once per run): for a period that has not started yet every date is clamped to today.
* **Messiness.** The same address is spelled differently by different partners and months
  (``2011ab`` / ``2011 AB``; ``12A`` / ``12-a`` / ``12 a`` / 12 + huisletter ``A``). Each partner
  has one consistent export style: separator, encoding (UTF-8, UTF-8 with BOM, Windows-1252), line
  ending, quoting, header spelling, date and amount spelling, booleans, phone spelling, column set
  and order. Some partners add columns the platform does not know (``Klantnummer``), which the
  parser reports as warnings (as it does rows without phone and e-mail). With ``formats="mixed"``
  one partner (the first health insurer, else the last partner) delivers JSON.
* **Broken rows** on request (``invalid_rows``): per file that many rows get one clear error each
  (postcode ``0000XX``, amount ``-12`` or ``1.234``, house number ``abc``, a future
  ``achterstand_sinds``, a BSN failing the elfproef).

Everything is drawn from :class:`random.Random` instances seeded from ``seed`` (string seeds, which
Python hashes with SHA-512, so the same across processes): the same arguments on the same day give
byte-identical files. The addresses do not depend on the partners or on ``months`` (birth dates
count back from ``first_period``), and month 1 is the same whatever ``months`` is. Every partner
delivers every month: one that happens to have no signals gets one; only in a tiny population where
that is impossible does a partner get no file for a month.
"""

from __future__ import annotations

import bisect
import csv
import io
import json
import re
import unicodedata
from array import array
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from random import Random

from shared.periods import Period

# Seeded, reproducible test data, never secrets: the standard generator is what is wanted here.
# ruff: noqa: S311

KINDS = ("huur", "energie", "water", "zorg")
KIND_SHARE = {"huur": 0.19, "energie": 0.25, "water": 0.11, "zorg": 0.45}
DEFAULT_SIGNAL_RATE = 0.06
LAST_SIGNAL_DAY = 24  # the delivery deadline is the 25th: exports are made before it
MUNICIPALITY = "Meerhaven"

# Case dynamics, tuned for ~12 % overlap and ~30 % recidive.
_KIND_COUNT_CUMULATIVE = (0.87, 0.98, 1.0)  # 1, 2 or 3 partners for a newly signalled household
_CONTINUE_HOUSEHOLD = 0.30  # share of last month's households still signalled
_CASE_PAID_OFF = 0.08  # a continuing household's case ends anyway
_CASE_ADDED = 0.04  # a continuing household gets a signal of another kind too
_RELAPSE = 0.04  # a new signal is for a household that was signalled months ago
_CRISIS = 0.02
_WARME_OVERDRACHT = 0.03
_EINDELEVERING = 0.02

_POSTCODE_LETTERS = tuple(
    a + b
    for a in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    for b in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    if a + b not in ("SA", "SD", "SS")
)
_PC4 = tuple(range(2011, 2038))
_BSN_WEIGHTS = (9, 8, 7, 6, 5, 4, 3, 2)

# fmt: off
_SURNAMES: tuple[tuple[str, str], ...] = (
    ("", "Jansen"), ("de", "Vries"), ("van den", "Berg"), ("van", "Dijk"), ("", "Bakker"),
    ("", "Janssen"), ("", "Visser"), ("", "Smit"), ("", "Meijer"), ("de", "Boer"),
    ("", "Mulder"), ("de", "Groot"), ("", "Bos"), ("", "Vos"), ("", "Peters"),
    ("", "Hendriks"), ("van", "Leeuwen"), ("", "Dekker"), ("", "Brouwer"), ("de", "Wit"),
    ("", "Dijkstra"), ("", "Smits"), ("de", "Graaf"), ("van der", "Meer"), ("van der", "Linden"),
    ("", "Kok"), ("", "Jacobs"), ("de", "Haan"), ("", "Vermeulen"), ("van den", "Heuvel"),
    ("van der", "Veen"), ("van den", "Broek"), ("de", "Bruijn"), ("de", "Jong"), ("van der", "Wal"),
    ("", "Schouten"), ("van", "Beek"), ("", "Willems"), ("van", "Vliet"), ("van de", "Ven"),
    ("", "Hoekstra"), ("", "Maas"), ("", "Verhoeven"), ("", "Koster"), ("van", "Dam"),
    ("ter", "Horst"), ("in 't", "Veld"), ("te", "Velde"), ("van 't", "Hof"), ("", "Prins"),
    ("", "Blom"), ("", "Huisman"), ("", "Postma"), ("", "Kuipers"), ("", "Veenstra"),
    ("", "Özdemir"), ("", "Yilmaz"), ("", "Kaya"), ("", "Çelik"), ("", "Demir"),
    ("", "El Amrani"), ("", "Bouzid"), ("", "Benali"), ("", "Brouwer-Ménard"), ("", "Müller"),
    ("", "Sánchez"), ("", "Nguyen"), ("", "Boateng"), ("", "Mensah"), ("", "Kowalski"),
    ("", "Fernández"), ("", "D'Hondt"), ("", "Lefèvre"), ("", "Ünal"), ("", "Jansen-Öztürk"),
    ("van", "Zanten"), ("", "Groenewoud"), ("", "Dogan"), ("", "Wijnands"),
)
_INITIALS = "JJJMMMAAPPHHWWCCEERRSSKKLLTTDDGGNFBIYOV"
_STREETS = (
    "Kerkstraat", "Dorpsstraat", "Molenstraat", "Schoolstraat", "Julianastraat",
    "Wilhelminastraat", "Beatrixlaan", "Stationsweg", "Lindenlaan", "Eikenlaan", "Berkenlaan",
    "Populierenstraat", "Rozenstraat", "Tulpstraat", "Spaarnekade", "Duinweg", "Zeeweg",
    "Vondelstraat", "Rembrandtplein", "Frans Halsstraat", "Van Goghlaan", "Meeuwenlaan",
    "Zwanenhof", "Reigerstraat", "Kastanjeplein", "Havenkade", "Dijkweg", "Polderweg",
    "Slotenmakerssteeg", "Bakenessergracht", "Kleine Houtweg", "Lange Herenstraat",
    "Burgemeester de Kempenaerlaan", "'s-Gravenhof", "Heiligeweg", "Oranjeboomstraat",
    "Ter Spijtstraat", "Pieter Kiesstraat", "Anjelierenstraat", "Koningin Emmaplein",
)
_EMAIL_DOMAINS = ("example.nl", "example.com", "example.org", "voorbeeld.example")
_SUFFIXES: tuple[tuple[str | None, str | None], ...] = (
    (None, None), ("A", None), ("B", None), ("C", None), ("D", None),
    (None, "1"), (None, "2"), (None, "3"), (None, "hs"), (None, "bis"),
    ("A", "1"), ("B", "2"), (None, "I"),
)
_SUFFIX_WEIGHTS = (850, 40, 25, 10, 5, 15, 12, 5, 15, 5, 7, 5, 6)
# fmt: on

_PARTNER_NAMES = {
    "huur": (
        "Woonstichting Duinzicht",
        "Wooncorporatie Spaarnehof",
        "Woonvereniging Meerwijk",
        "Woonstichting Polderhuis",
        "Wooncorporatie Zandhaven",
        "Woonstichting Vijverhof",
    ),
    "energie": (
        "Polderstroom Energie",
        "Windhoek Energielevering",
        "Duinlicht Energie",
        "Zeewind Stroom en Gas",
        "Groenveld Energie",
        "Kustlicht Energie",
    ),
    "water": (
        "Waterbedrijf Duinbron",
        "Waterbedrijf Veenstroom",
        "Waterbedrijf Heuvelrand",
        "Waterleiding Kustbron",
        "Waterbedrijf Zoetemeer",
        "Waterbedrijf Bronland",
    ),
    "zorg": (
        "Zorgverzekeraar Zilverhelm",
        "Zorgverzekeraar Klaverhart",
        "Zorgfonds Heideroos",
        "Zorgverzekeraar Duinzorg",
        "Zorgverzekeraar Waterlelie",
        "Zorgfonds Meerzorg",
    ),
}
_PLACE_BY_PC4 = {
    pc: "Duinwijk" if 2030 <= pc <= 2034 else "Spaarnoord" if pc >= 2035 else MUNICIPALITY
    for pc in _PC4
}

# Export-style vocabularies. A partner's index picks from these in rotation, so a handful of
# partners already covers every separator, encoding, date and amount spelling.
_SEPARATORS = (";", ",", "\t")
_ENCODINGS = ("utf-8-sig", "utf-8", "cp1252")
_DATE_STYLES = ("dmy_dash", "iso", "dmy_slash", "dmy_short", "iso_time", "dmy_dot")
_AMOUNT_STYLES = ("nl", "dot", "euro", "comma", "en")
_HEADER_STYLES = ("title", "snake", "upper", "kebab", "camel", "upper_space")
_BOOL_STYLES = (("ja", "nee"), ("true", "false"), ("1", "0"), ("Ja", ""), ("J", "N"))

_CORRUPTIONS = (
    "postcode",
    "amount_negative",
    "house_number",
    "future_date",
    "amount_ambiguous",
    "bsn",
)


@dataclass(frozen=True)
class PartnerSpec:
    """A partner that delivers files: its name and kind (huur, energie, water, zorg)."""

    name: str
    kind: str

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {self.kind!r}")
        if not self.name.strip():
            raise ValueError("a partner needs a name")


@dataclass
class GeneratedFile:
    """One file written: whose, for which period, where, and how many rows (broken ones)."""

    partner: PartnerSpec
    period: str
    path: Path
    rows: int
    invalid_rows: int


def demo_partners() -> list[PartnerSpec]:
    """The fictional municipality's five partners: two housing corporations and one of each."""
    names = _PARTNER_NAMES
    return [
        PartnerSpec(names["huur"][0], "huur"),
        PartnerSpec(names["huur"][1], "huur"),
        PartnerSpec(names["energie"][0], "energie"),
        PartnerSpec(names["water"][0], "water"),
        PartnerSpec(names["zorg"][0], "zorg"),
    ]


def national_partners(per_kind: int = 3) -> list[PartnerSpec]:
    """``per_kind`` partners of each kind (fictional names, numbered beyond the first six)."""
    if per_kind < 1:
        raise ValueError("per_kind must be at least 1")
    partners: list[PartnerSpec] = []
    for kind in KINDS:
        names = _PARTNER_NAMES[kind]
        for i in range(per_kind):
            base = names[i % len(names)]
            round_ = i // len(names)
            partners.append(PartnerSpec(base if round_ == 0 else f"{base} {round_ + 1}", kind))
    return partners


def slug(name: str) -> str:
    """The file-name form of a partner name: ``Zorgfonds Heideroos`` → ``zorgfonds-heideroos``."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-") or "partner"


# --- population ---------------------------------------------------------------------------------


@dataclass(slots=True)
class _Person:
    tussenvoegsel: str
    achternaam: str
    voorletters: str  # letters only, e.g. "JA"
    geboortedatum: date
    bsn: str | None
    telefoon: str | None  # "06" and eight digits
    email: str | None


@dataclass(slots=True)
class _Household:
    persons: list[_Person]
    partner_picks: tuple[int, ...]  # per kind: which partner of that kind serves the household
    rent: int  # monthly amounts in cents, for growing arrears
    energy: int
    premium: int
    customer_number: int


class _Population:
    """Addresses for every household (compact arrays); people are derived per household on demand.

    A household's people come from its own seeded generator, so they are the same whenever and by
    whichever partner it is signalled, without keeping a million profiles in memory.
    """

    def __init__(self, seed: int, households: int, reference: date) -> None:
        self.seed = seed
        self.reference = reference
        rng = Random(f"{seed}:population")
        capacity = len(_PC4) * len(_POSTCODE_LETTERS)
        used = min(capacity, max(20, households // 12))
        codes = sorted(rng.sample(range(capacity), used))
        self.postcodes = [
            f"{_PC4[c // len(_POSTCODE_LETTERS)]}{_POSTCODE_LETTERS[c % len(_POSTCODE_LETTERS)]}"
            for c in codes
        ]
        self.places = [_PLACE_BY_PC4[int(pc[:4])] for pc in self.postcodes]
        self.streets = [rng.choice(_STREETS) for _ in codes]
        counts = [0] * used
        for pc in rng.choices(range(used), k=households):
            counts[pc] += 1
        numbers_per_postcode = max(40, (max(counts) * 3) // 2)
        self.pc: array[int] = array("I")
        self.number: array[int] = array("I")
        for pc, count in enumerate(counts):
            if count:
                start = rng.randrange(0, 120)
                picked = sorted(rng.sample(range(numbers_per_postcode), count))
                self.pc.extend([pc] * count)
                self.number.extend([start + n + 1 for n in picked])
        self.suffix: array[int] = array(
            "B", rng.choices(range(len(_SUFFIXES)), weights=_SUFFIX_WEIGHTS, k=households)
        )
        self.size = households

    def household(self, index: int) -> _Household:
        rng = Random(f"{self.seed}:household:{index}")
        count = _one(rng, (1, 2, 3), (45, 85, 100))
        family = rng.choice(_SURNAMES)
        persons: list[_Person] = []
        for position in range(count):
            if position == 0 or (position == 1 and rng.random() < 0.5) or position == 2:
                tussenvoegsel, achternaam = family
            else:
                tussenvoegsel, achternaam = rng.choice(_SURNAMES)
            persons.append(self._person(rng, tussenvoegsel, achternaam))
        return _Household(
            persons=persons,
            partner_picks=tuple(rng.randrange(1 << 20) for _ in KINDS),
            rent=rng.randint(450_00, 1_100_00),
            energy=rng.randint(80_00, 250_00),
            premium=rng.randint(135_00, 165_00),
            customer_number=rng.randrange(10_000_000, 99_999_999),
        )

    def _person(self, rng: Random, tussenvoegsel: str, achternaam: str) -> _Person:
        length = _one(rng, (1, 2, 3), (5, 9, 10))
        initials = "".join(rng.choice(_INITIALS) for _ in range(length))
        born = self.reference - timedelta(days=rng.randint(18 * 366, 90 * 365))
        bsn = _valid_bsn(rng) if rng.random() < 0.6 else None
        phone = f"06{rng.randrange(10**8):08d}" if rng.random() < 0.8 else None
        email = None
        if rng.random() < 0.55:
            plain = _ascii(f"{tussenvoegsel}{achternaam}").lower()
            first = initials[0].lower()
            local = rng.choice(
                (
                    f"{first}.{plain}",
                    f"{initials.lower()}{plain}{born.year % 100:02d}",
                    f"{plain}.{first}",
                )
            )
            email = f"{local}@{rng.choice(_EMAIL_DOMAINS)}"
        return _Person(tussenvoegsel, achternaam, initials, born, bsn, phone, email)


def _ascii(text: str) -> str:
    plain = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[^A-Za-z0-9]", "", plain)


def _one(rng: Random, values: tuple[int, ...], cumulative: tuple[float, ...]) -> int:
    """One of ``values`` by cumulative weights (``rng.choices`` is slow for single draws)."""
    position = bisect.bisect(cumulative, rng.random() * cumulative[-1])
    return values[min(position, len(values) - 1)]


def _valid_bsn(rng: Random) -> str:
    """Nine digits passing the elfproef (weights 9..2, then -1; sum a non-zero multiple of 11)."""
    while True:
        head = f"{rng.randrange(10**8):08d}"
        total = sum(int(d) * w for d, w in zip(head, _BSN_WEIGHTS, strict=True))
        last = total % 11
        if last < 10 and total - last != 0:
            return f"{head}{last}"


def _broken_bsn(bsn: str) -> str:
    """The same number with its check digit off by one: fails the elfproef."""
    return bsn[:8] + str((int(bsn[8]) + 1) % 10)


# --- export styles ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Style:
    json: bool
    json_wrapped: bool
    separator: str
    encoding: str
    line_end: str
    quote_all: bool
    header_style: str
    date_style: str
    amount_style: str
    bools: tuple[str, str]
    phone_style: int
    postcode_style: int
    split_house: bool
    upper_surname: bool
    initials_style: int
    columns: tuple[str, ...]
    trailing_blank: bool
    ref_prefix: str


def _style(seed: int, index: int, partner: PartnerSpec, as_json: bool) -> _Style:
    rng = Random(f"{seed}:style:{partner.name}")
    kind = partner.kind
    separate_tussenvoegsel = rng.random() < 0.8
    split_house = rng.random() < 0.4 or as_json
    columns: list[str] = ["referentie", "achternaam"]
    if separate_tussenvoegsel:
        columns.append("tussenvoegsel")
    columns.append("voorletters")
    if kind != "water" or rng.random() < 0.3:
        columns.append("geboortedatum")
    if kind == "zorg" or (kind == "huur" and rng.random() < 0.5):
        columns.append("bsn")
    has_street = rng.random() < 0.8
    if has_street:
        columns.append("straat")
    columns.append("huisnummer")
    if split_house:
        columns += ["huisletter", "huisnummertoevoeging"]
    columns.append("postcode")
    if has_street:
        columns.append("woonplaats")
    contact = [n for n, share in (("telefoon", 0.85), ("email", 0.8)) if rng.random() < share]
    columns += contact or ["telefoon"]
    columns += ["bedrag", "achterstand_sinds"]
    if rng.random() < 0.8:
        columns.append("signaaldatum")
    columns += ["crisis", "warme_overdracht"]
    if kind == "energie":
        columns.append("eindelevering")
    if not as_json and index % 3 == 2:
        columns.insert(1, rng.choice(("klantnummer", "contractnummer")))
    if not as_json and rng.random() < 0.3:
        rng.shuffle(columns)
    prefix = rng.choice(("", "D", "K-", "SIG", f"{kind[:2].upper()}-"))
    return _Style(
        json=as_json,
        json_wrapped=rng.random() < 0.7,
        separator=_SEPARATORS[index % 3],
        encoding="utf-8" if as_json else _ENCODINGS[(index * 2 + index // 3) % 3],
        line_end=rng.choice(("\r\n", "\n")),
        quote_all=rng.random() < 0.25,
        header_style="lower_camel"
        if as_json and rng.random() < 0.5
        else _HEADER_STYLES[index % len(_HEADER_STYLES)],
        date_style="iso" if as_json else _DATE_STYLES[index % len(_DATE_STYLES)],
        amount_style=_AMOUNT_STYLES[(index + index // 5) % len(_AMOUNT_STYLES)],
        bools=_BOOL_STYLES[rng.randrange(len(_BOOL_STYLES))],
        phone_style=rng.randrange(4),
        postcode_style=rng.randrange(4),
        split_house=split_house,
        upper_surname=rng.random() < 0.2,
        initials_style=rng.randrange(4),
        columns=tuple(columns),
        trailing_blank=not as_json and rng.random() < 0.2,
        ref_prefix=prefix,
    )


def _header(name: str, style: str) -> str:
    words = name.split("_")
    if style == "snake":
        return name
    if style == "upper":
        return name.upper()
    if style == "title":
        return " ".join(words).capitalize()
    if style == "kebab":
        return "-".join(words)
    if style == "camel":
        return "".join(w.capitalize() for w in words)
    if style == "lower_camel":
        return words[0] + "".join(w.capitalize() for w in words[1:])
    return " ".join(words).upper()


def _date_text(value: date, style: str) -> str:
    d, m, y = value.day, value.month, value.year
    if style == "iso":
        return value.isoformat()
    if style == "iso_time":
        return f"{value.isoformat()} 00:00:00"
    if style == "dmy_slash":
        return f"{d:02d}/{m:02d}/{y}"
    if style == "dmy_short":
        return f"{d}-{m}-{y}"
    if style == "dmy_dot":
        return f"{d:02d}.{m:02d}.{y}"
    return f"{d:02d}-{m:02d}-{y}"


def _amount_text(cents: int, style: str) -> str:
    euros, rest = divmod(cents, 100)
    if style == "dot":
        return f"{euros}.{rest:02d}"
    if style == "comma":
        return f"{euros},{rest:02d}"
    if style == "en":
        return f"{euros:,}.{rest:02d}"
    grouped = f"{euros:,}".replace(",", ".") + f",{rest:02d}"
    return f"€ {grouped}" if style == "euro" else grouped


def _phone_text(phone: str, style: int) -> str:
    if style == 0:
        return f"{phone[:2]}-{phone[2:]}"
    if style == 1:
        return phone
    if style == 2:
        return f"+31{phone[1:]}"
    return f"{phone[:2]} {phone[2:6]} {phone[6:]}"


def _postcode_text(postcode: str, style: int) -> str:
    digits, letters = postcode[:4], postcode[4:]
    return (
        f"{digits}{letters}",
        f"{digits} {letters}",
        f"{digits}{letters.lower()}",
        f"{digits} {letters.lower()}",
    )[style]


def _initials_text(initials: str, style: int) -> str:
    if style == 0:
        return "".join(f"{c}." for c in initials)
    if style == 1:
        return initials
    if style == 2:
        return " ".join(f"{c}." for c in initials)
    return ".".join(initials)


def _house_number_in_field(
    rng: Random, number: int, letter: str | None, addition: str | None
) -> str:
    """The whole house number in one field, in one of the spellings people type."""
    if letter and addition:
        pattern = rng.choice(("{n}{L}-{t}", "{n}{L} {t}", "{n}-{L}-{t}", "{n}{l}-{t}"))
    elif letter:
        pattern = rng.choice(("{n}{L}", "{n}-{L}", "{n} {l}", "{n}{l}", "{n}-{l}", "{n} {L}"))
    elif addition:
        patterns = ["{n}-{t}", "{n} {t}"]
        if addition.isalpha():
            patterns.append("{n}{t}")
        pattern = rng.choice(patterns)
    else:
        return str(number)
    return pattern.format(n=number, L=letter or "", l=(letter or "").lower(), t=addition or "")


# --- arrears cases ------------------------------------------------------------------------------


@dataclass(slots=True)
class _Case:
    kind: str
    partner: int  # index into the partner list
    referentie: str
    person: int
    since: date
    amount: int  # cents
    signal: date


_AMOUNT_LIMITS = {
    "huur": (300_00, 4_000_00),
    "energie": (100_00, 2_500_00),
    "water": (30_00, 400_00),
    "zorg": (100_00, 1_500_00),
}


def _clamped(kind: str, cents: int) -> int:
    """Within the kind's range; values outside land spread near the edge, not on it."""
    low, high = _AMOUNT_LIMITS[kind]
    span = (high - low) // 10
    if cents < low:
        return low + cents % span
    if cents > high:
        return high - cents % span
    return cents


def _first_amount(rng: Random, kind: str, household: _Household) -> int:
    if kind == "huur":
        months = _one(rng, (1, 2, 3, 4), (45, 80, 95, 100))
        cents = household.rent * months - rng.randint(0, household.rent // 2)
    elif kind == "energie":
        months = _one(rng, (1, 2, 3, 4), (40, 70, 90, 100))
        cents = household.energy * months + rng.randint(0, 99)
        if rng.random() < 0.12:  # the annual bill
            cents += rng.randint(300_00, 1_500_00)
    elif kind == "water":
        cents = rng.randint(30_00, 180_00) if rng.random() < 0.85 else rng.randint(180_00, 400_00)
    else:
        months = _one(rng, (1, 2, 3, 4, 5, 6), (10, 45, 65, 77, 89, 100))
        cents = household.premium * months
        if rng.random() < 0.25:  # unpaid deductible
            cents += rng.randint(20_00, 385_00)
    return _clamped(kind, cents)


def _next_amount(rng: Random, case: _Case, household: _Household) -> int:
    roll = rng.random()
    if roll < 0.15:  # a partial payment
        return _clamped(case.kind, case.amount - rng.randint(case.amount // 10, case.amount // 3))
    if roll < 0.25:  # nothing changed
        return case.amount
    monthly = {
        "huur": household.rent,
        "energie": household.energy,
        "water": rng.randint(5_00, 40_00),
        "zorg": household.premium,
    }[case.kind]
    return _clamped(case.kind, case.amount + monthly)


def _signal_window(since: date | None, low: date, high: date) -> tuple[date, date] | None:
    if since is not None:
        low = max(low, since + timedelta(days=30))
        high = min(high, since + timedelta(days=200))
    return (low, high) if low <= high else None


def _pick_date(rng: Random, window: tuple[date, date]) -> date:
    low, high = window
    return low + timedelta(days=rng.randint(0, (high - low).days))


def _weighted_kinds(rng: Random, kinds: list[str], count: int) -> list[str]:
    """``count`` distinct kinds, drawn by national share without replacement, in KINDS order."""
    remaining = list(kinds)
    chosen: list[str] = []
    for _ in range(min(count, len(remaining))):
        kind = rng.choices(remaining, weights=[KIND_SHARE[k] for k in remaining])[0]
        remaining.remove(kind)
        chosen.append(kind)
    return [k for k in KINDS if k in chosen]


# --- writing ------------------------------------------------------------------------------------


def _field_values(
    rng: Random,
    style: _Style,
    case: _Case,
    household: _Household,
    population: _Population,
    index: int,
) -> dict[str, str | int | float | bool | None]:
    """One signal as the partner writes it: text for CSV, typed values for JSON."""
    person = household.persons[case.person]
    postcode = population.postcodes[population.pc[index]]
    number = population.number[index]
    letter, addition = _SUFFIXES[population.suffix[index]]
    pc_style = style.postcode_style if rng.random() < 0.7 else rng.randrange(4)
    values: dict[str, str | int | float | bool | None] = {
        "referentie": case.referentie,
        "klantnummer": str(household.customer_number),
        "contractnummer": f"C{household.customer_number % 1_000_000:06d}",
        "postcode": _postcode_text(postcode, pc_style),
        "straat": population.streets[population.pc[index]],
        "woonplaats": population.places[population.pc[index]],
        "voorletters": _initials_text(person.voorletters, style.initials_style),
        "geboortedatum": _date_text(person.geboortedatum, style.date_style),
        "bsn": person.bsn,
        "telefoon": _phone_text(person.telefoon, style.phone_style) if person.telefoon else None,
        "email": person.email,
        "achterstand_sinds": _date_text(case.since, style.date_style),
        "signaaldatum": _date_text(case.signal, style.date_style),
    }
    surname = person.achternaam.upper() if style.upper_surname else person.achternaam
    if "tussenvoegsel" in style.columns:
        values["achternaam"] = surname
        values["tussenvoegsel"] = person.tussenvoegsel or None
    else:
        values["achternaam"] = f"{person.tussenvoegsel} {surname}".strip()
    if style.upper_surname and isinstance(values["woonplaats"], str):
        values["woonplaats"] = values["woonplaats"].upper()
    if style.split_house and rng.random() < 0.85:
        values["huisnummer"] = number if style.json else str(number)
        values["huisletter"] = letter.lower() if letter and rng.random() < 0.3 else letter
        values["huisnummertoevoeging"] = addition
    elif style.split_house and addition and rng.random() < 0.5:
        values["huisnummer"] = _house_number_in_field(rng, number, letter, None)
        values["huisnummertoevoeging"] = addition
    else:
        values["huisnummer"] = _house_number_in_field(rng, number, letter, addition)
    crisis = rng.random() < _CRISIS
    warm = rng.random() < _WARME_OVERDRACHT
    final = case.kind == "energie" and rng.random() < _EINDELEVERING
    if style.json:
        values["bedrag"] = case.amount / 100
        values["crisis"], values["warme_overdracht"] = crisis, warm
        values["eindelevering"] = final
    else:
        values["bedrag"] = _amount_text(case.amount, style.amount_style)
        yes, no = style.bools
        values["crisis"] = yes if crisis else no
        values["warme_overdracht"] = yes if warm else no
        values["eindelevering"] = yes if final else no
    return values


def _corrupt(
    rng: Random,
    values: dict[str, str | int | float | bool | None],
    how: str,
    style: _Style,
    today: date,
) -> None:
    """Give one row one clear error."""
    if how == "postcode":
        values["postcode"] = "0000XX"
    elif how == "amount_negative":
        values["bedrag"] = -12 if style.json else "-12"
    elif how == "amount_ambiguous":
        values["bedrag"] = "1.234"
    elif how == "house_number":
        values["huisnummer"] = "abc"
    elif how == "future_date":
        future = today + timedelta(days=rng.randint(40, 120))
        values["achterstand_sinds"] = _date_text(future, style.date_style)
    else:
        bsn = values.get("bsn")
        values["bsn"] = _broken_bsn(bsn if isinstance(bsn, str) else _valid_bsn(rng))


def _encode_csv(style: _Style, rows: list[dict[str, str | int | float | bool | None]]) -> bytes:
    buffer = io.StringIO(newline="")
    writer = csv.writer(
        buffer,
        delimiter=style.separator,
        lineterminator=style.line_end,
        quoting=csv.QUOTE_ALL if style.quote_all else csv.QUOTE_MINIMAL,
    )
    writer.writerow([_header(c, style.header_style) for c in style.columns])
    writer.writerows(
        [["" if (v := row.get(c)) is None else str(v) for c in style.columns] for row in rows]
    )
    if style.trailing_blank:  # spreadsheets like to end with a row of separators
        buffer.write(style.separator * (len(style.columns) - 1) + style.line_end)
    return buffer.getvalue().encode(style.encoding)


def _encode_json(style: _Style, rows: list[dict[str, str | int | float | bool | None]]) -> bytes:
    signals = [{_header(c, style.header_style): row.get(c) for c in style.columns} for row in rows]
    document: object = {"signalen": signals} if style.json_wrapped else signals
    return (json.dumps(document, ensure_ascii=False, indent=2) + "\n").encode("utf-8")


# --- the generator ------------------------------------------------------------------------------


def generate(
    out_dir: Path,
    *,
    households: int,
    months: int,
    seed: int,
    partners: list[PartnerSpec] | None = None,
    first_period: str,
    invalid_rows: int = 0,
    formats: str = "mixed",
    signal_rate: float = DEFAULT_SIGNAL_RATE,
) -> list[GeneratedFile]:
    """Write ``months`` monthly files per partner from ``first_period`` on; see the module doc.

    ``signal_rate`` is the share of households signalled per month (by any partner).
    """
    if households < 1 or months < 1:
        raise ValueError("households and months must be at least 1")
    if invalid_rows < 0:
        raise ValueError("invalid_rows must not be negative")
    if formats not in ("mixed", "csv"):
        raise ValueError('formats must be "mixed" or "csv"')
    if not 0 < signal_rate <= 1:
        raise ValueError("signal_rate must lie in (0, 1]")
    partner_list = demo_partners() if partners is None else list(partners)
    if not partner_list:
        raise ValueError("no partners")
    slugs = [slug(p.name) for p in partner_list]
    if len(set(slugs)) != len(slugs):
        raise ValueError("partner names must differ (also as file names)")
    first = Period.parse(first_period)
    today = date.today()
    json_index = -1
    if formats == "mixed":
        zorg = [i for i, p in enumerate(partner_list) if p.kind == "zorg"]
        json_index = zorg[0] if zorg else len(partner_list) - 1
    styles = [_style(seed, i, p, i == json_index) for i, p in enumerate(partner_list)]
    population = _Population(seed, households, min(today, first.first_day))
    simulation = _Simulation(seed, population, partner_list, styles, today, signal_rate)

    written: list[GeneratedFile] = []
    for month in range(months):
        period = first.shift(month)
        per_partner = simulation.month(period)
        for p, (partner, style) in enumerate(zip(partner_list, styles, strict=True)):
            signals = sorted(per_partner[p], key=lambda item: item[1].referentie)
            if not signals:
                continue
            rows = [
                _field_values(
                    simulation.rng, style, case, simulation.household(index), population, index
                )
                for index, case in signals
            ]
            broken = _break_rows(seed, str(period), slugs[p], style, rows, invalid_rows, today)
            folder = out_dir / str(period)
            folder.mkdir(parents=True, exist_ok=True)
            extension = "json" if style.json else "csv"
            path = folder / f"{slugs[p]}_{period}.{extension}"
            path.write_bytes(_encode_json(style, rows) if style.json else _encode_csv(style, rows))
            written.append(GeneratedFile(partner, str(period), path, len(rows), broken))
    return written


class _Simulation:
    """Who is in arrears with whom, month by month (households, cases, amounts, dates)."""

    def __init__(
        self,
        seed: int,
        population: _Population,
        partners: list[PartnerSpec],
        styles: list[_Style],
        today: date,
        signal_rate: float,
    ) -> None:
        self.rng = Random(f"{seed}:signals")
        self.population = population
        self.partners = partners
        self.styles = styles
        self.today = today
        self.signal_rate = signal_rate
        self.by_kind = {k: [i for i, p in enumerate(partners) if p.kind == k] for k in KINDS}
        self.kinds = [k for k in KINDS if self.by_kind[k]]
        self.counters = [0] * len(partners)
        self.ever = bytearray(population.size)
        self.ever_list: list[int] = []
        self.active: dict[int, dict[str, _Case]] = {}
        self.profiles: dict[int, _Household] = {}
        self.period = Period(2000, 1)
        self.windows: list[tuple[date, date]] = []

    def household(self, index: int) -> _Household:
        """The household's people and contracts (kept while it is signalled)."""
        found = self.profiles.get(index)
        if found is None:
            found = self.profiles[index] = self.population.household(index)
        return found

    def _partner_for(self, profile: _Household, kind: str) -> int:
        """The partner of this kind the household is a customer of."""
        choices = self.by_kind[kind]
        return choices[profile.partner_picks[KINDS.index(kind)] % len(choices)]

    def new_case(self, index: int, kind: str) -> _Case:
        rng = self.rng
        profile = self.household(index)
        partner = self._partner_for(profile, kind)
        self.counters[partner] += 1
        year = self.period.year % 100
        reference = f"{self.styles[partner].ref_prefix}{year:02d}{self.counters[partner]:07d}"
        if kind == "zorg":
            person = rng.randrange(len(profile.persons))
        else:
            person = 0 if len(profile.persons) == 1 or rng.random() < 0.85 else 1
        signal = _pick_date(rng, self.windows[partner])
        since = signal - timedelta(days=30 + int(150 * rng.random() ** 1.6))
        case = _Case(kind, partner, reference, person, since, 0, signal)
        case.amount = _first_amount(rng, kind, profile)
        return case

    def month(self, period: Period) -> list[list[tuple[int, _Case]]]:
        """Advance to ``period``: per partner, the (household, case) pairs it reports."""
        rng = self.rng
        self.period = period
        self.windows = []
        for _ in self.partners:
            export_day = date(period.year, period.month, rng.randint(15, LAST_SIGNAL_DAY))
            self.windows.append((min(period.first_day, self.today), min(export_day, self.today)))
        current = self._continuing()
        for index in self._fresh_households(current):
            count = _one(rng, (1, 2, 3), _KIND_COUNT_CUMULATIVE)
            current[index] = {
                k: self.new_case(index, k) for k in _weighted_kinds(rng, self.kinds, count)
            }
        self._no_partner_left_out(current)
        for index in current:
            if not self.ever[index]:
                self.ever[index] = 1
                self.ever_list.append(index)
        self.profiles = {i: self.profiles[i] for i in current if i in self.profiles}
        self.active = current
        per_partner: list[list[tuple[int, _Case]]] = [[] for _ in self.partners]
        for index, cases in current.items():
            for case in cases.values():
                per_partner[case.partner].append((index, case))
        return per_partner

    def _no_partner_left_out(self, current: dict[int, dict[str, _Case]]) -> None:
        """Every partner delivers every month: one without signals gets a customer in arrears.

        Only matters for small populations; gives up after a few tries when the partner has
        (almost) no customers.
        """
        reporting = {case.partner for cases in current.values() for case in cases.values()}
        for partner, spec in enumerate(self.partners):
            if partner in reporting:
                continue
            for _attempt in range(50 * len(self.by_kind[spec.kind])):
                index = self.rng.randrange(self.population.size)
                if (
                    index in current
                    or self._partner_for(self.household(index), spec.kind) != partner
                ):
                    continue
                current[index] = {spec.kind: self.new_case(index, spec.kind)}
                break

    def _continuing(self) -> dict[int, dict[str, _Case]]:
        """Last month's households still in arrears, with their cases moved on a month."""
        rng = self.rng
        current: dict[int, dict[str, _Case]] = {}
        for index, cases in self.active.items():
            if rng.random() >= _CONTINUE_HOUSEHOLD:
                continue
            kept: dict[str, _Case] = {}
            for kind, case in cases.items():
                window = _signal_window(case.since, *self.windows[case.partner])
                if window is None or rng.random() < _CASE_PAID_OFF:
                    continue
                case.signal = _pick_date(rng, window)
                case.amount = _next_amount(rng, case, self.household(index))
                kept[kind] = case
            missing = [k for k in self.kinds if k not in kept]
            if missing and rng.random() < _CASE_ADDED:
                for kind in _weighted_kinds(rng, missing, 1):
                    kept[kind] = self.new_case(index, kind)
            if kept:
                current[index] = {k: kept[k] for k in KINDS if k in kept}
        return current

    def _fresh_households(self, current: dict[int, dict[str, _Case]]) -> list[int]:
        """Newly signalled households: mostly never seen before, a few relapsing."""
        rng = self.rng
        size = self.population.size
        target = max(1, round(size * self.signal_rate * rng.uniform(0.9, 1.1)))
        wanted = min(max(0, target - len(current)), size - len(current))
        taken = set(current)
        if wanted * 2 > size - len(taken):  # most of the population: draw from the rest
            return rng.sample([i for i in range(size) if i not in taken], wanted)
        fresh: list[int] = []
        while len(fresh) < wanted:
            if self.ever_list and rng.random() < _RELAPSE:
                index = rng.choice(self.ever_list)
            else:
                index = rng.randrange(size)
                for _attempt in range(20):
                    if not self.ever[index]:
                        break
                    index = rng.randrange(size)
            if index not in taken:
                taken.add(index)
                fresh.append(index)
        return fresh


def _break_rows(
    seed: int,
    period: str,
    partner_slug: str,
    style: _Style,
    rows: list[dict[str, str | int | float | bool | None]],
    count: int,
    today: date,
) -> int:
    """Corrupt ``count`` rows (one error each); a generator of its own, so the rest is unchanged."""
    count = min(count, len(rows))
    if count == 0:
        return 0
    rng = Random(f"{seed}:invalid:{period}:{partner_slug}")
    ways = [w for w in _CORRUPTIONS if w != "bsn" or "bsn" in style.columns]
    start = rng.randrange(len(ways))
    for n, row in enumerate(sorted(rng.sample(range(len(rows)), count))):
        _corrupt(rng, rows[row], ways[(start + n) % len(ways)], style, today)
    return count
