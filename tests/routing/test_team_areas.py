"""Teams and their areas, staff and their keys: parsing, and the checks on a real database."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa

from services.routing.admin import (
    Area,
    NewStaffKey,
    add_staff,
    add_team,
    find_team,
    parse_areas,
    team_areas,
)
from shared.context import Context
from shared.crypto import api_key_matches, hash_api_key, split_api_key
from shared.db import unit_of_work
from shared.errors import Conflict, NotFound, ValidationFailed
from shared.models import ApiKey, Staff, Team, TeamArea

# --- parse_areas -------------------------------------------------------------------------------


def test_parse_areas_reads_ranges_pc4s_and_pc6s() -> None:
    assert parse_areas("2011-2015,2021,2024AB") == [
        Area(low="2011", high="2015"),
        Area(low="2021", high="2021"),
        Area(pc6="2024AB"),
    ]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("2024 ab", [Area(pc6="2024AB")]),
        ("2024ab", [Area(pc6="2024AB")]),
        (" 2011 - 2015 ,\t2021 , 2024 AB ", None),
        ("2011-2015,,2021,2024AB,", None),
        ("2011-2011", [Area(low="2011", high="2011")]),
        ("9999", [Area(low="9999", high="9999")]),
    ],
)
def test_parse_areas_tolerates_spaces_case_and_empty_parts(
    spec: str, expected: list[Area] | None
) -> None:
    standard = [Area("2011", "2015"), Area("2021", "2021"), Area(pc6="2024AB")]
    assert parse_areas(spec) == (standard if expected is None else expected)


def test_areas_print_as_they_were_written() -> None:
    assert [str(a) for a in parse_areas("2011 - 2015, 2021, 2024 ab")] == [
        "2011-2015",
        "2021",
        "2024AB",
    ]


@pytest.mark.parametrize(
    ("spec", "named"),
    [
        ("0123", "0123"),  # a PC4 never starts with 0
        ("2015-2011", "2015-2011"),
        ("20", "20"),
        ("20111", "20111"),
        ("2024SA", "2024SA"),  # SA, SD and SS are not used in Dutch postcodes
        ("2024sd", "2024SD"),
        ("2024 SS", "2024 SS"),
        ("abc", "ABC"),
        ("2011-2015,20x5,2024AB", "20X5"),
        ("2011-", "2011-"),
        ("2011-0999", "2011-0999"),
    ],
)
def test_parse_areas_rejects_a_bad_part_and_names_it(spec: str, named: str) -> None:
    with pytest.raises(ValidationFailed) as info:
        parse_areas(spec)
    assert named in info.value.detail


@pytest.mark.parametrize("spec", ["", " ", ",", " , ,"])
def test_parse_areas_needs_at_least_one_postcode(spec: str) -> None:
    with pytest.raises(ValidationFailed, match="at least one postcode"):
        parse_areas(spec)


# --- teams on a database -----------------------------------------------------------------------


def new_team(ctx: Context, name: str, postcodes: str | None, *, default: bool = False) -> str:
    with unit_of_work(ctx.sessions) as session:
        team = add_team(session, name=name, postcodes=postcodes, default=default, now=ctx.now())
        return str(team.id)


def areas_of(ctx: Context, name: str) -> list[str]:
    with ctx.sessions() as session:
        return team_areas(session, find_team(session, name))


def area_rows(ctx: Context) -> int:
    with ctx.sessions() as session:
        return session.scalar(sa.select(sa.func.count()).select_from(TeamArea)) or 0


def test_add_team_stores_its_areas(ctx: Context) -> None:
    team_id = new_team(ctx, " Noord ", "2011-2015, 2021, 2024 ab")
    assert areas_of(ctx, "noord") == ["2011-2015", "2021", "2024AB"]
    with ctx.sessions() as session:
        team = find_team(session, team_id)
        assert (team.name, team.is_default) == ("noord", False)
        rows = session.execute(
            sa.select(TeamArea.pc4_from, TeamArea.pc4_to, TeamArea.pc6).order_by(TeamArea.id)
        ).all()
    assert [tuple(r) for r in rows] == [
        ("2011", "2015", None),
        ("2021", "2021", None),
        (None, None, "2024AB"),
    ]


@pytest.mark.parametrize(
    "postcodes",
    ["2015-2020", "2000-2011", "2012", "2013-2014", "2000-2099", "2030,2015"],
)
def test_overlapping_pc4_ranges_of_two_teams_conflict(ctx: Context, postcodes: str) -> None:
    new_team(ctx, "noord", "2011-2015")
    with pytest.raises(Conflict, match="noord"):
        new_team(ctx, "zuid", postcodes)
    with ctx.sessions() as session:
        assert session.scalars(sa.select(Team.name)).all() == ["noord"]
    assert area_rows(ctx) == 1


def test_adjacent_ranges_do_not_conflict(ctx: Context) -> None:
    new_team(ctx, "noord", "2011-2015")
    new_team(ctx, "zuid", "2016-2020,2010")
    assert areas_of(ctx, "zuid") == ["2016-2020", "2010"]


def test_overlap_within_one_list_conflicts(ctx: Context) -> None:
    with pytest.raises(Conflict, match="being added"):
        new_team(ctx, "noord", "2011-2015,2013")
    with pytest.raises(Conflict, match="being added"):
        new_team(ctx, "noord", "2024AB,2024 ab")
    assert area_rows(ctx) == 0


def test_the_same_pc6_in_two_teams_conflicts(ctx: Context) -> None:
    new_team(ctx, "noord", "2024AB")
    with pytest.raises(Conflict, match="2024AB"):
        new_team(ctx, "zuid", "3000-3005,2024 ab")
    with ctx.sessions() as session:
        assert session.scalar(sa.select(Team).where(Team.name == "zuid")) is None
    assert area_rows(ctx) == 1


def test_a_pc6_inside_another_teams_range_is_allowed(ctx: Context) -> None:
    new_team(ctx, "noord", "2011-2015")
    new_team(ctx, "zuid", "2012AB")
    assert areas_of(ctx, "zuid") == ["2012AB"]
    new_team(ctx, "west", "2030")  # and a range around another team's PC6 as well
    new_team(ctx, "oost", "2030XY")
    assert area_rows(ctx) == 4


def test_a_team_name_is_unique(ctx: Context) -> None:
    new_team(ctx, "noord", "2011")
    with pytest.raises(Conflict, match="exists already"):
        new_team(ctx, "NOORD", "2012")


def test_a_team_needs_postcodes_unless_it_is_the_default(ctx: Context) -> None:
    with pytest.raises(ValidationFailed, match="--postcodes"):
        new_team(ctx, "noord", None)
    new_team(ctx, "rest", None, default=True)
    assert areas_of(ctx, "rest") == []


def test_a_second_default_team_takes_the_default_over(ctx: Context) -> None:
    first = new_team(ctx, "rest", None, default=True)
    second = new_team(ctx, "centrum", "2011-2015", default=True)
    with ctx.sessions() as session:
        defaults = session.scalars(sa.select(Team.id).where(Team.is_default.is_(True))).all()
        assert [str(d) for d in defaults] == [second]
        assert find_team(session, first).is_default is False
    third = new_team(ctx, "plain", "2020")
    with ctx.sessions() as session:
        assert find_team(session, third).is_default is False
        assert find_team(session, second).is_default is True


def test_find_team_by_id_or_name(ctx: Context) -> None:
    team_id = new_team(ctx, "noord", "2011")
    with ctx.sessions() as session:
        assert str(find_team(session, team_id).id) == team_id
        assert str(find_team(session, " Noord").id) == team_id
        with pytest.raises(NotFound):
            find_team(session, str(uuid.uuid4()))
        with pytest.raises(NotFound):
            find_team(session, "zuid")


# --- staff -------------------------------------------------------------------------------------


def new_staff(ctx: Context, name: str, role: str, team: str | None = None) -> NewStaffKey:
    with unit_of_work(ctx.sessions) as session:
        return add_staff(session, name=name, role=role, team=team, now=ctx.now())


def staff_count(ctx: Context) -> int:
    with ctx.sessions() as session:
        return session.scalar(sa.select(sa.func.count()).select_from(Staff)) or 0


def test_a_wijkteam_member_needs_a_team(ctx: Context) -> None:
    with pytest.raises(ValidationFailed, match="--team"):
        new_staff(ctx, "Anna", "wijkteam")
    assert staff_count(ctx) == 0


def test_a_wijkteam_member_is_bound_to_the_team(ctx: Context) -> None:
    team_id = new_team(ctx, "noord", "2011")
    new = new_staff(ctx, "Anna", "wijkteam", "Noord")
    assert str(new.staff.team_id) == team_id
    with pytest.raises(NotFound):
        new_staff(ctx, "Bert", "wijkteam", "zuid")
    assert staff_count(ctx) == 1


@pytest.mark.parametrize("role", ["coordinator", "sdv", "budgetcoach", "admin"])
def test_only_the_wijkteam_role_is_bound_to_a_team(ctx: Context, role: str) -> None:
    new_team(ctx, "noord", "2011")
    with pytest.raises(ValidationFailed, match="only the wijkteam role"):
        new_staff(ctx, "Carla", role, "noord")
    assert staff_count(ctx) == 0


@pytest.mark.parametrize("role", ["manager", "partner", "", "Coordinator"])
def test_an_unknown_role_is_refused(ctx: Context, role: str) -> None:
    with pytest.raises(ValidationFailed, match="role must be one of"):
        new_staff(ctx, "Dirk", role)
    assert staff_count(ctx) == 0


def test_a_staff_name_is_unique(ctx: Context) -> None:
    new_staff(ctx, "Eva", "sdv")
    with pytest.raises(Conflict, match="exists already"):
        new_staff(ctx, " Eva ", "budgetcoach")


def test_the_issued_key_is_a_staff_key_shown_once(ctx: Context) -> None:
    new = new_staff(ctx, "Femke", "coordinator")
    assert new.secret.startswith("vss_")
    assert split_api_key(new.secret) == ("vss", new.key.key_id)
    with ctx.sessions() as session:
        stored = session.scalars(sa.select(ApiKey).where(ApiKey.staff_id == new.staff.id)).one()
        staff = session.get(Staff, new.staff.id)
    assert staff is not None
    assert (staff.name, staff.role, staff.team_id) == ("Femke", "coordinator", None)
    assert stored.key_hash != new.secret
    assert new.secret not in stored.key_hash
    assert stored.key_hash == hash_api_key(new.secret)
    assert api_key_matches(new.secret, stored.key_hash)
    assert (stored.partner_id, stored.label, stored.revoked_at) == (None, "initial", None)
    other = new_staff(ctx, "Gert", "coordinator")
    assert other.secret != new.secret
    assert other.key.key_hash != stored.key_hash
