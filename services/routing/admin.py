"""Teams and their areas, staff members and their keys.

A team's area is written as the municipality's own lists are: ``2011-2015,2021,2024AB`` means the
PC4 range 2011 to 2015, the PC4 2021 and the PC6 2024AB. A PC4 may belong to one team only (ranges
of two teams must not overlap); a PC6 may lie inside another team's PC4 range and then wins for
that street stretch.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, insert, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shared.auth import new_api_key
from shared.crypto import STAFF_KEY_PREFIX
from shared.errors import Conflict, NotFound, ValidationFailed
from shared.models import CASE_COUNT_KEY, ApiKey, Case, CaseCount, Role, Staff, Team, TeamArea

PC4 = re.compile(r"[1-9][0-9]{3}")
PC6 = re.compile(r"([1-9][0-9]{3}) ?([A-Z]{2})")
RANGE = re.compile(r"([1-9][0-9]{3})\s*-\s*([1-9][0-9]{3})")


@dataclass(frozen=True)
class Area:
    """One piece of an area: a PC4 range (``low``..``high``) or a PC6."""

    low: str | None = None
    high: str | None = None
    pc6: str | None = None

    def __str__(self) -> str:
        if self.pc6:
            return self.pc6
        return str(self.low) if self.low == self.high else f"{self.low}-{self.high}"


def parse_areas(spec: str) -> list[Area]:
    """``2011-2015,2021,2024AB`` → areas; ValidationFailed naming the bad part."""
    areas: list[Area] = []
    for raw in spec.split(","):
        part = raw.strip().upper()
        if not part:
            continue
        if m := RANGE.fullmatch(part):
            low, high = m.group(1), m.group(2)
            if low > high:
                raise ValidationFailed(f"postcode range {part}: the first PC4 is above the second")
            areas.append(Area(low=low, high=high))
        elif PC4.fullmatch(part):
            areas.append(Area(low=part, high=part))
        elif (m := PC6.fullmatch(part)) and m.group(2) not in ("SA", "SD", "SS"):
            areas.append(Area(pc6=m.group(1) + m.group(2)))
        else:
            raise ValidationFailed(
                f"'{part}' is not a PC4 (2011), a PC4 range (2011-2015) or a PC6 (2011AB)"
            )
    if not areas:
        raise ValidationFailed("give at least one postcode, e.g. 2011-2015,2021,2024AB")
    return areas


def _overlaps(session: Session, areas: list[Area]) -> list[str]:
    """What of ``areas`` other teams (or earlier parts of the same list) hold already."""
    taken = [
        (Area(low, high, pc6), name)
        for low, high, pc6, name in session.execute(
            select(TeamArea.pc4_from, TeamArea.pc4_to, TeamArea.pc6, Team.name).join(
                Team, Team.id == TeamArea.team_id
            )
        ).all()
    ]
    problems = []
    for index, area in enumerate(areas):
        others = [*taken, *((a, "being added") for a in areas[:index])]
        for other, name in others:
            if area.pc6 and other.pc6 == area.pc6:
                problems.append(f"{area} is already in team {name}")
            elif (
                area.low
                and area.high
                and other.low
                and other.high
                and not (area.high < other.low or area.low > other.high)
            ):
                problems.append(f"{area} overlaps {other} of team {name}")
    return problems


def add_team(
    session: Session, *, name: str, postcodes: str | None, default: bool, now: datetime
) -> Team:
    """Register a wijkteam with its area; ``default`` makes it the team for unmapped addresses."""
    name = name.strip().lower()
    if not re.fullmatch(r"[a-z0-9][a-z0-9 _-]{0,99}", name):
        raise ValidationFailed("a team name is 1-100 letters, digits, space, '-' or '_'")
    if session.scalar(select(Team).where(Team.name == name)) is not None:
        raise Conflict(f"team {name} exists already")
    areas = parse_areas(postcodes) if postcodes else []
    if not areas and not default:
        raise ValidationFailed("a team needs --postcodes (or --default for the fallback team)")
    problems = _overlaps(session, areas)
    if problems:
        raise Conflict("; ".join(problems))
    if default:
        for other in session.scalars(select(Team).where(Team.is_default.is_(True))):
            other.is_default = False
    team = Team(id=uuid.uuid4(), name=name, is_default=default, created_at=now)
    session.add(team)
    for area in areas:
        session.add(TeamArea(team_id=team.id, pc4_from=area.low, pc4_to=area.high, pc6=area.pc6))
    try:
        session.flush()
    except IntegrityError:
        raise Conflict(f"team {name} or one of its postcodes exists already") from None
    return team


def find_team(session: Session, ref: str) -> Team:
    """A team by id or name."""
    team = None
    with contextlib.suppress(ValueError):
        team = session.get(Team, uuid.UUID(ref))
    team = team or session.scalar(select(Team).where(Team.name == ref.strip().lower()))
    if team is None:
        raise NotFound("no such team")
    return team


def team_areas(session: Session, team: Team) -> list[str]:
    rows = session.scalars(
        select(TeamArea).where(TeamArea.team_id == team.id).order_by(TeamArea.id)
    )
    return [str(Area(r.pc4_from, r.pc4_to, r.pc6)) for r in rows]


def list_teams(session: Session) -> list[Team]:
    return list(session.scalars(select(Team).order_by(Team.name)))


@dataclass(frozen=True)
class NewStaffKey:
    """A staff key just issued: ``secret`` is shown once and never stored."""

    staff: Staff
    key: ApiKey
    secret: str


def add_staff(
    session: Session, *, name: str, role: str, team: str | None, now: datetime
) -> NewStaffKey:
    """Register a staff member (a wijkteam member is bound to one team) and issue a key."""
    name = name.strip()
    if not name or len(name) > 200:
        raise ValidationFailed("a staff name is 1 to 200 characters")
    try:
        staff_role = Role(role)
    except ValueError:
        roles = ", ".join(r.value for r in Role)
        raise ValidationFailed(f"role must be one of: {roles}") from None
    if staff_role is Role.wijkteam and not team:
        raise ValidationFailed("a wijkteam member needs --team")
    if staff_role is not Role.wijkteam and team:
        raise ValidationFailed("only the wijkteam role is bound to a team")
    team_id = find_team(session, team).id if team else None
    if session.scalar(select(Staff).where(Staff.name == name)) is not None:
        raise Conflict("a staff member with this name exists already")
    staff = Staff(
        id=uuid.uuid4(), name=name, role=staff_role.value, team_id=team_id, created_at=now
    )
    session.add(staff)
    try:
        session.flush()
    except IntegrityError:
        raise Conflict("a staff member with this name exists already") from None
    return new_staff_key(session, staff, now=now, label="initial")


def new_staff_key(
    session: Session, staff: Staff, *, now: datetime, label: str | None = None
) -> NewStaffKey:
    key, secret = new_api_key(
        session, prefix=STAFF_KEY_PREFIX, now=now, label=label, staff_id=staff.id
    )
    return NewStaffKey(staff=staff, key=key, secret=secret)


def list_staff(session: Session) -> list[Staff]:
    return list(session.scalars(select(Staff).order_by(Staff.name)))


# --- the case counts ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recount:
    keys: int  # rows of case_counts after the recount
    wrong: int  # keys whose count was wrong, missing or left over before it


def recount_cases(session: Session) -> Recount:
    """Count the cases per key again and rebuild ``case_counts`` when any count was wrong.

    The database keeps the counts itself (migration 0012); they can only be wrong after a bulk
    load or repair that bypassed the triggers (``session_replication_role = replica``, as the
    benchmark's history load does). On PostgreSQL the cases are locked against writes until the
    transaction ends, so that no change falls between the count and the rebuild.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("LOCK TABLE cases IN SHARE MODE"))
    keys = [getattr(Case, column) for column in CASE_COUNT_KEY]
    counted = {
        tuple(row[:-1]): row[-1]
        for row in session.execute(select(*keys, func.count()).group_by(*keys))
    }
    stored_keys = [getattr(CaseCount, column) for column in CASE_COUNT_KEY]
    stored = {
        tuple(row[:-1]): row[-1] for row in session.execute(select(*stored_keys, CaseCount.n))
    }
    wrong = sum(1 for key in counted.keys() | stored.keys() if counted.get(key) != stored.get(key))
    if wrong:
        session.execute(delete(CaseCount))
        session.execute(
            insert(CaseCount),
            [dict(zip(CASE_COUNT_KEY, key, strict=True), n=n) for key, n in counted.items()],
        )
    return Recount(keys=len(counted), wrong=wrong)
