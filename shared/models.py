"""The data model.

Partners deliver, per period, a snapshot of their arrears (a *delivery* of *signals*). A newer
delivery for the same partner and period supersedes the older one, which is kept but no longer
counts. Signals keep their personal data only in an encrypted envelope (``pii``) and are matched on
``address_hash``, an HMAC of the normalised address key.

Later capabilities hang off these tables without reshaping them: a matching *run* per period turns
signals into *cases* (linking signals), cases get *contact attempts* and a route (SDV, a wijkteam,
the budget coach), staff authenticate with the same ``api_keys`` table, and an audit trail records
who did what.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    Sequence,
    String,
    Text,
    Uuid,
    and_,
    func,
    literal_column,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship
from sqlalchemy.sql.elements import ColumnElement

from shared.db import Base, BigIntId, UTCDateTime, new_uuid, utcnow


class PartnerKind(StrEnum):
    """The kinds of vaste-lasten partner, as written in the CLI and the API."""

    huur = "huur"
    energie = "energie"
    water = "water"
    zorg = "zorg"

    @property
    def ddas(self) -> str:
        """The DDAS ``EnumSignaalpartner`` value."""
        return {"huur": "Huur", "energie": "Energie", "water": "Water", "zorg": "Zorg"}[self.value]


class DeliveryStatus(StrEnum):
    accepted = "accepted"
    superseded = "superseded"


class Signaalstatus(StrEnum):
    """DDAS ``EnumSignaalstatus``: the status of one signal, as fed back to its partner."""

    nog_niet_opgepakt = "Nog niet opgepakt"
    opgepakt = "Opgepakt"
    bekend_bij_shv = "Inwoner al bekend bij schuldhulpverlening"
    overleden = "Inwoner is overleden"
    andere_reden = "Niet opgepakt: andere reden"
    herhaalde_melding = "Niet opgepakt: herhaalde melding"
    onterecht = "Niet opgepakt: onterecht signaal"
    geen_inwoner = "Persoon is geen inwoner (meer) in de gemeente"


def _enum_check(column: str, enum: type[StrEnum]) -> CheckConstraint:
    values = ", ".join(f"'{member.value}'" for member in enum)
    return CheckConstraint(f"{column} IN ({values})", name=f"{column}_valid")


class Partner(Base):
    """A vaste-lasten partner that reports arrears."""

    __tablename__ = "partners"
    __table_args__ = (_enum_check("kind", PartnerKind),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_uuid)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    api_keys: Mapped[list[ApiKey]] = relationship(back_populates="partner", lazy="raise")


class ApiKey(Base):
    """An API credential: only the SHA-256 of the key is stored; ``key_id`` is its public part."""

    __tablename__ = "api_keys"
    __table_args__ = (
        # A key belongs to exactly one partner or one staff member.
        CheckConstraint("(partner_id IS NULL) <> (staff_id IS NULL)", name="api_keys_one_owner"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_uuid)
    key_id: Mapped[str] = mapped_column(String(16), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64))
    partner_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("partners.id", ondelete="CASCADE"), index=True
    )
    staff_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("staff.id", ondelete="CASCADE"), index=True
    )
    label: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    partner: Mapped[Partner | None] = relationship(back_populates="api_keys", lazy="raise")


class PartnerSshKey(Base):
    """An SSH public key with which a partner logs in to the SFTP drop (several per partner)."""

    __tablename__ = "partner_ssh_keys"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_uuid)
    partner_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("partners.id", ondelete="CASCADE"), index=True
    )
    # "SHA256:..." as ssh-keygen -lf prints it; how a key is found at login.
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)
    public_key: Mapped[str] = mapped_column(Text)  # OpenSSH one-line format, without comment
    label: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class PartnerCertificate(Base):
    """A client certificate with which a partner authenticates through the TLS proxy (mutual TLS).

    Only the certificate's SHA-256 fingerprint is kept (of its DER encoding, lower-case hex), not
    the certificate: the proxy verifies the chain, the service matches the fingerprint.
    """

    __tablename__ = "partner_certificates"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_uuid)
    partner_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("partners.id", ondelete="CASCADE"), index=True
    )
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)
    label: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Delivery(Base):
    """One partner's snapshot of arrears for one period, as uploaded (API or SFTP)."""

    __tablename__ = "deliveries"
    __table_args__ = (
        _enum_check("status", DeliveryStatus),
        # At most one current delivery per partner and period.
        Index(
            "uq_deliveries_current",
            "partner_id",
            "period",
            unique=True,
            postgresql_where=text("status = 'accepted'"),
            sqlite_where=text("status = 'accepted'"),
        ),
        Index("ix_deliveries_partner_period", "partner_id", "period"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_uuid)
    partner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("partners.id", ondelete="RESTRICT"))
    period: Mapped[str] = mapped_column(String(7))
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.accepted)
    source: Mapped[str] = mapped_column(String(8), default="api")
    file_format: Mapped[str] = mapped_column(String(8))
    filename: Mapped[str | None] = mapped_column(String(255))
    content_sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    row_count: Mapped[int] = mapped_column(Integer)
    warning_count: Mapped[int] = mapped_column(Integer, default=0)
    warnings: Mapped[str | None] = mapped_column(Text)  # JSON list of {row, column, message}
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    superseded_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    superseded_by_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("deliveries.id", ondelete="SET NULL")
    )
    # The range of ids its signals have (shared.ids: a block of its own since migration 0018;
    # for a delivery stored before it, the smallest and the largest of its signals' ids, a range
    # that may hold other deliveries' signals too). Signals are found by delivery in this range
    # of the primary key, with ``delivery_id`` checked as well: signals have no index by delivery.
    first_signal_id: Mapped[int | None] = mapped_column(BigInteger)
    last_signal_id: Mapped[int | None] = mapped_column(BigInteger)

    partner: Mapped[Partner] = relationship(lazy="raise")


class Signal(Base):
    """One reported arrear. Personal data only inside ``pii`` (AES-GCM, see ``shared.crypto``)."""

    __tablename__ = "signals"
    __table_args__ = (
        _enum_check("kind", PartnerKind),
        CheckConstraint("bedrag_cent > 0", name="bedrag_positive"),
        # Every read of signals finds them by delivery, in the delivery's range of ids (see
        # Delivery.first_signal_id): the run a period's as those of its current deliveries.
        # Nothing looks signals up by address, partner or period, and no index by delivery is
        # kept (migrations 0008, 0016 and 0018): each index costs every uploaded row.
    )

    # The delivery's block and the row (shared.ids.signal_id_range): given by the ingest, never
    # drawn from a sequence. Unique per delivery and row, as the primary key.
    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=False)
    delivery_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("deliveries.id", ondelete="CASCADE"))
    # The delivery's partner, copied for the run's reads. No foreign key of its own: the
    # delivery's guarantees the partner (and keeps it from being deleted), and a second check per
    # row was a quarter of the database's work on an upload (migration 0008).
    partner_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    period: Mapped[str] = mapped_column(String(7))
    row_number: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))
    # HMAC-SHA256 (hex) of the address key "POSTCODE|NUMBER|SUFFIX"; see shared.address.
    address_hash: Mapped[str | None] = mapped_column(String(64))
    # HMAC of surname + birth date, for the SDV client register; null without a birth date.
    person_hash: Mapped[str | None] = mapped_column(String(64))
    # The four digits of the postcode: an area of thousands of addresses, used for routing to a
    # wijkteam and for anonymous reporting. Not identifying on its own.
    pc4: Mapped[str | None] = mapped_column(String(4))
    # HMAC of the six-character postcode (a street's stretch: identifying enough to be hashed),
    # for wijkteam areas drawn at PC6 level.
    pc6_hash: Mapped[str | None] = mapped_column(String(64))
    bedrag_cent: Mapped[int] = mapped_column(BigInteger)
    achterstand_sinds: Mapped[date] = mapped_column(Date)
    signaaldatum: Mapped[date] = mapped_column(Date)
    crisis: Mapped[bool] = mapped_column(Boolean, default=False)
    warme_overdracht: Mapped[bool] = mapped_column(Boolean, default=False)
    eindelevering: Mapped[bool] = mapped_column(Boolean, default=False)
    # What became of the signal (its status, why a run set it aside) is in ``signal_states``:
    # a signal row is written once, by its upload.
    pii: Mapped[bytes | None] = mapped_column(LargeBinary)
    pii_key_id: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    purged_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    delivery: Mapped[Delivery] = relationship(lazy="raise")


def signal_in_delivery(delivery: Any = Delivery) -> ColumnElement[bool]:
    """The condition for a signal of ``delivery`` (a Delivery, or the class itself in a join):
    in its range of ids (a range of the primary key; signals have no index by delivery) and
    of that delivery."""
    return and_(
        Signal.id.between(delivery.first_signal_id, delivery.last_signal_id),
        Signal.delivery_id == delivery.id,
    )


# The status a signal has until the run or a team's work gives it another.
ARRIVED = Signaalstatus.nog_niet_opgepakt.value


class SignalState(Base):
    """What became of a signal, for the signals whose state is no longer as they arrived
    (``Nog niet opgepakt``, no outcome): a signal without a row here is in that state.

    Kept apart from ``signals``, whose rows are wide (sealed personal data) and written once: a
    run sets a few percent of a month's signals aside, and an update of their rows rewrote a page
    and four index entries per signal (at national scale 1.0 s of the run for 33,000 signals).
    """

    __tablename__ = "signal_states"
    __table_args__ = (_enum_check("status", Signaalstatus),)

    signal_id: Mapped[int] = mapped_column(
        BigInteger,
        ForeignKey("signals.id", ondelete="CASCADE"),
        primary_key=True,
        autoincrement=False,
    )
    # DDAS EnumSignaalstatus, as fed back to the partner.
    status: Mapped[str] = mapped_column(String(64))
    # Why the last run of the period set the signal aside (stale, below_minimum, repeat); null for
    # a signal the run used (it is in case_signals) or left single, and before any run.
    run_outcome: Mapped[str | None] = mapped_column(String(16))


def signal_status() -> ColumnElement[str]:
    """A signal's status, in a query that joins ``signal_states`` to ``signals`` (outer). The
    constant is written into the text, so that the same expression may be selected and grouped
    by."""
    return func.coalesce(SignalState.status, literal_column(f"'{ARRIVED}'"))


class SignalledAddresses(Base):
    """The addresses a period's signals were about, one row per period: what the recidive rule
    needs of earlier periods (the national monitor: a case is *opeenvolgend* when its address
    had a signal in the previous six months, whether or not that signal made a case).

    ``address_keys`` is a set, not a list of rows: the first 64 bits of each address hash (an
    HMAC-SHA256, :mod:`shared.address`), unique and sorted, as one Arrow IPC column
    (:mod:`services.matcher.signalled`). At national scale a month has 877,000 addresses: as rows
    of (period, address hash) a run's lookup over six months scanned 5.3 million rows (3.2 s); as
    six of these rows it reads 42 MB. Written by the period's monthly run; kept while a later run
    can still look it up (``vroegsignaal purge``, as the cases that recidivism needs).
    """

    __tablename__ = "signalled_addresses"

    period: Mapped[str] = mapped_column(String(7), primary_key=True)
    address_count: Mapped[int] = mapped_column(Integer)
    address_keys: Mapped[bytes] = mapped_column(LargeBinary)
    # Which address hash key made the keys (services.matcher.signalled.key_check): after the key
    # is rotated, a set made with the old one matches nothing and is not used.
    hash_key_check: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


# PostgreSQL: the numbers of the signals' blocks (shared.ids), one drawn per delivery.
SIGNAL_BLOCKS = Sequence("signal_blocks", metadata=Base.metadata)


class RunStatus(StrEnum):
    completed = "completed"


class RunKind(StrEnum):
    """The monthly run of a closed period (and its reruns), or a crisis run: the cases of the
    crisis signals delivered so far, made at once (``services.matcher.crisis``)."""

    monthly = "monthly"
    crisis = "crisis"


class CaseStatus(StrEnum):
    open = "open"
    closed = "closed"


class Classification(StrEnum):
    """The national monitor's classification of a case."""

    enkelvoudig = "enkelvoudig"
    meervoudig = "meervoudig"
    opeenvolgend = "opeenvolgend"


class Run(Base):
    """One matching run for a period: its parameters and figures. A run that failed left no row."""

    __tablename__ = "runs"
    __table_args__ = (Index("ix_runs_period", "period", "started_at"), _enum_check("kind", RunKind))

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_uuid)
    period: Mapped[str] = mapped_column(String(7))
    kind: Mapped[str] = mapped_column(
        String(16), default=RunKind.monthly, server_default=RunKind.monthly.value
    )
    run_date: Mapped[date] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(16), default=RunStatus.completed)
    rerun: Mapped[bool] = mapped_column(Boolean, default=False)
    parameters: Mapped[str] = mapped_column(Text)  # JSON
    figures: Mapped[str] = mapped_column(Text)  # JSON
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime] = mapped_column(UTCDateTime)
    duration_ms: Mapped[int] = mapped_column(Integer)
    # A monthly run's deliveries: the ids of the current deliveries whose signals it read (JSON
    # list). What it judged, so that its single signals can be listed after it (a delivery that
    # arrives later is not among them until a rerun). Null for crisis runs.
    delivery_ids: Mapped[str | None] = mapped_column(Text)


class Route(StrEnum):
    """Who acts on a case."""

    sdv = "sdv"
    wijkteam = "wijkteam"
    budgetcoach = "budgetcoach"


class Role(StrEnum):
    """Staff roles; a partner's key has the role ``partner``."""

    sdv = "sdv"
    wijkteam = "wijkteam"
    budgetcoach = "budgetcoach"
    coordinator = "coordinator"
    admin = "admin"


class Contactsoort(StrEnum):
    """DDAS ``EnumContactsoort``."""

    administratief = "Administratief"
    afspraak_op_locatie = "Afspraak op locatie"
    brief = "Brief"
    huisbezoek = "Huisbezoek"
    kaartje = "Kaartje"
    mail = "Mail"
    onbekend = "Onbekend"
    overige = "Overige"
    sms_whatsapp = "SMS/Whatsapp"
    telefoon = "Telefoon"


class Dagdeel(StrEnum):
    """DDAS ``EnumDagdeel``."""

    ochtend = "Ochtend"
    middag = "Middag"
    avond = "Avond"


class Eindresultaat(StrEnum):
    """DDAS ``EnumEindresultaat``: how a case ended."""

    advies_quick_fix = "(Budget)advies en/of quick fix"
    geen_contact = "Definitief geen contact kunnen krijgen"
    geen_reactie = "Geen reactie na eerder contact"
    bekend_bij_shv = "Inwoner al bekend bij schuldhulpverlening"
    ander_traject = "Inwoner heeft al een ander lopend traject"
    zelf_betaald = "Inwoner heeft zelf al betaald/betalingsregeling getroffen"
    overleden = "Inwoner is overleden"
    regelt_zelf = "Inwoner regelt het zelf/hoeft geen hulp vanuit vroegsignalering"
    andere_reden = "Niet opgepakt: andere reden"
    herhaalde_melding = "Niet opgepakt: herhaalde melding"
    onterecht = "Niet opgepakt: onterecht signaal"
    geen_inwoner = "Persoon is geen inwoner (meer) in de gemeente"
    vervolghulp = "Vervolghulp en/of verwijzing"
    vervolghulp_financieel = "Vervolghulp en/of verwijzing financieel"
    vervolghulp_niet_financieel = "Vervolghulp en/of verwijzing niet financieel"
    verwijzing_zonder_inwoner = "Verwijzing zonder tussenkomst inwoner"


class Team(Base):
    """A wijkteam (neighbourhood team) and the area it covers (``TeamArea``)."""

    __tablename__ = "teams"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_uuid)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    # Addresses in no team's area go to the default team (at most one), flagged.
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    areas: Mapped[list[TeamArea]] = relationship(
        back_populates="team", lazy="raise", cascade="all, delete-orphan"
    )


class TeamArea(Base):
    """One piece of a team's area: a PC4 range (``pc4_from``..``pc4_to``) or one PC6."""

    __tablename__ = "team_areas"
    __table_args__ = (
        CheckConstraint(
            "(pc6 IS NULL AND pc4_from IS NOT NULL AND pc4_to IS NOT NULL AND pc4_from <= pc4_to)"
            " OR (pc6 IS NOT NULL AND pc4_from IS NULL AND pc4_to IS NULL)",
            name="team_areas_shape",
        ),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    team_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("teams.id", ondelete="CASCADE"), index=True
    )
    pc4_from: Mapped[str | None] = mapped_column(String(4))
    pc4_to: Mapped[str | None] = mapped_column(String(4))
    pc6: Mapped[str | None] = mapped_column(String(6), unique=True)

    team: Mapped[Team] = relationship(back_populates="areas", lazy="raise")


class Staff(Base):
    """A municipal staff member (or a team's shared account) with one role."""

    __tablename__ = "staff"
    __table_args__ = (
        _enum_check("role", Role),
        CheckConstraint(
            "(role = 'wijkteam') = (team_id IS NOT NULL)", name="staff_team_only_for_wijkteam"
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_uuid)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    team_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("teams.id", ondelete="RESTRICT"), index=True
    )
    active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SdvClient(Base):
    """One household in the SDV client register, as keyed hashes only (it reveals nothing if read).

    ``address_hash`` uses the same key and normalisation as signals; ``person_hash`` (surname and
    birth date) is set when SDV gave them.
    """

    __tablename__ = "sdv_clients"
    __table_args__ = (
        Index("uq_sdv_clients_entry", "address_hash", "person_hash", unique=True),
        Index("ix_sdv_clients_person", "person_hash"),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    address_hash: Mapped[str] = mapped_column(String(64))
    person_hash: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


def _list_indexes(status: CaseStatus) -> tuple[Index, Index]:
    """The case lists' two orders over the cases of one status (partial indexes: the status is
    part of every list statement as a literal, see ``services.routing.service.list_statuses``)."""
    where = text(f"status = '{status.value}'")
    queue = ("route", "team_id", "priority", "due_date", "id")
    return (
        Index(f"ix_cases_queue_{status.value}", *queue, postgresql_where=where, sqlite_where=where),
        Index(
            f"ix_cases_order_{status.value}", *queue[2:], postgresql_where=where, sqlite_where=where
        ),
    )


class Case(Base):
    """A vroegsignaalzaak: one address in one period, built from its signals by a run."""

    __tablename__ = "cases"
    __table_args__ = (
        _enum_check("status", CaseStatus),
        _enum_check("classification", Classification),
        Index("uq_cases_period_address", "period", "address_hash", unique=True),
        # No index by address alone: nothing looks a case up by it (migration 0011).
        # The case lists: sorted by priority, then due date, within a route (and team); one pair
        # of indexes per status, so that a run's new (open) cases go in among the open ones
        # only, not among every closed case of the past months (migration 0015).
        *_list_indexes(CaseStatus.open),
        *_list_indexes(CaseStatus.closed),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_uuid)
    # No index by run or by team: nothing reads cases by run, and the lists filter by team under
    # the orders of the list indexes above (migration 0014).
    run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("runs.id", ondelete="RESTRICT"))
    period: Mapped[str] = mapped_column(String(7))
    address_hash: Mapped[str] = mapped_column(String(64))
    pc4: Mapped[str | None] = mapped_column(String(4))
    priority: Mapped[int] = mapped_column(Integer)
    classification: Mapped[str] = mapped_column(String(16))
    is_recidive: Mapped[bool] = mapped_column(Boolean, default=False)
    # The earlier periods of the run's window in which the address was signalled ("2026-05,
    # 2026-07"; null when none, or for a case matched before migration 0022 until a rerun): why
    # it is recidive when no earlier case explains it.
    signalled_periods: Mapped[str | None] = mapped_column(Text)
    has_rent: Mapped[bool] = mapped_column(Boolean, default=False)
    has_crisis: Mapped[bool] = mapped_column(Boolean, default=False)
    has_warm_handover: Mapped[bool] = mapped_column(Boolean, default=False)
    partner_count: Mapped[int] = mapped_column(Integer)
    signal_count: Mapped[int] = mapped_column(Integer)
    total_cent: Mapped[int] = mapped_column(BigInteger)
    kinds: Mapped[str] = mapped_column(String(64))  # comma separated partner kinds
    pc6_hash: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default=CaseStatus.open)
    # Routing (services.routing): who acts, by when.
    route: Mapped[str | None] = mapped_column(String(16))
    team_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("teams.id", ondelete="RESTRICT"))
    known_to_sdv: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    # The address lies in no team's area: routed to the default team and flagged.
    outside_areas: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=text("false")
    )
    due_date: Mapped[date | None] = mapped_column(Date)
    routed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    resultaat: Mapped[str | None] = mapped_column(String(80))


# The columns a case count is kept by: every condition of a case list is one on these.
CASE_COUNT_KEY = ("route", "team_id", "status", "period", "due_date")


class CaseCount(Base):
    """How many cases share a route, team, status, period and due date: the case lists' totals.

    Every condition a case list can have (who may see what, and the filters) is a condition on
    these five columns, so a list's total is the sum of ``n`` over the rows that meet the same
    conditions: 63 rows for the 3.5 million cases of the benchmark's national scale. The database
    keeps the rows itself, in the statement that changes the cases (triggers of migration 0012):
    on PostgreSQL one upsert per statement of the changed keys' differences, on SQLite per row.
    A key's row goes when its count reaches zero. ``vroegsignaal db recount`` rebuilds the rows
    after a bulk load that bypassed triggers, and says what it found wrong.
    """

    __tablename__ = "case_counts"
    __table_args__ = (
        # One row per key; a missing route, team or due date is a key like any other.
        Index(
            "uq_case_counts_key", *CASE_COUNT_KEY, unique=True, postgresql_nulls_not_distinct=True
        ),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    route: Mapped[str | None] = mapped_column(String(16))
    team_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    status: Mapped[str] = mapped_column(String(16))
    period: Mapped[str] = mapped_column(String(7))
    due_date: Mapped[date | None] = mapped_column(Date)
    n: Mapped[int] = mapped_column(BigInteger)


class CaseSignal(Base):
    """Which signals a case was built from; a signal belongs to at most one case."""

    __tablename__ = "case_signals"

    case_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("cases.id", ondelete="CASCADE"), primary_key=True
    )
    signal_id: Mapped[int] = mapped_column(
        ForeignKey("signals.id", ondelete="CASCADE"), primary_key=True, unique=True
    )
    # The signal's partner, amount and date, copied when the case is made: what later runs read
    # of earlier cases (repeat rule, recidive) without reading the signals themselves.
    partner_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    bedrag_cent: Mapped[int | None] = mapped_column(BigInteger)
    signaaldatum: Mapped[date | None] = mapped_column(Date)


class ContactAttempt(Base):
    """An attempt to reach the household (DDAS ``Contactpoging``); the note is encrypted."""

    __tablename__ = "contact_attempts"
    __table_args__ = (
        _enum_check("soort", Contactsoort),
        _enum_check("dagdeel", Dagdeel),
        Index("ix_contact_attempts_case", "case_id", "datum"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_uuid)
    case_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"))
    soort: Mapped[str] = mapped_column(String(32))
    datum: Mapped[date] = mapped_column(Date)
    dagdeel: Mapped[str | None] = mapped_column(String(16))
    bereikt: Mapped[bool] = mapped_column(Boolean, default=False)
    notitie: Mapped[bytes | None] = mapped_column(LargeBinary)  # AES-GCM envelope
    notitie_key_id: Mapped[str | None] = mapped_column(String(16))
    staff_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("staff.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class CaseEvent(Base):
    """The history of a case's routing: transferred, closed, reopened. Runs no longer store a
    ``routed`` event (the routing is on the case; services.routing.service.routing_event derives
    it); cases routed before that keep the one they have."""

    __tablename__ = "case_events"
    __table_args__ = (Index("ix_case_events_case", "case_id", "at"),)

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    case_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    kind: Mapped[str] = mapped_column(String(16))
    from_route: Mapped[str | None] = mapped_column(String(16))
    from_team_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    to_route: Mapped[str | None] = mapped_column(String(16))
    to_team_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    reason: Mapped[bytes | None] = mapped_column(LargeBinary)  # AES-GCM envelope (free text)
    reason_key_id: Mapped[str | None] = mapped_column(String(16))
    staff_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("staff.id", ondelete="SET NULL"))


class AuditEvent(Base):
    """An entry of the append-only, hash-chained audit trail (``shared.audit``); no PII."""

    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_object", "object_type", "object_id"),
        Index("ix_audit_actor", "actor_id"),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor_type: Mapped[str] = mapped_column(String(16))  # partner, staff, system
    actor_id: Mapped[str | None] = mapped_column(String(64))
    credential: Mapped[str | None] = mapped_column(String(16))  # the key id, never the key
    role: Mapped[str | None] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(48))
    object_type: Mapped[str | None] = mapped_column(String(32))
    object_id: Mapped[str | None] = mapped_column(String(64))
    request_id: Mapped[str | None] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(16))
    details: Mapped[str | None] = mapped_column(Text)  # JSON, counts and ids only
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)


class CaseLink(Base):
    """Recidive: a case linked to an earlier case of the same address."""

    __tablename__ = "case_links"

    case_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("cases.id", ondelete="CASCADE"), primary_key=True
    )
    earlier_case_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("cases.id", ondelete="CASCADE"), primary_key=True, index=True
    )
