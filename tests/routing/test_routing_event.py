"""The run's routing of a case, derived for the case's history from the case itself."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from services.routing.service import routing_event
from shared.models import Case, CaseEvent

NOORD, ZUID = uuid.uuid4(), uuid.uuid4()
TEAMS = {NOORD: "noord", ZUID: "zuid"}
ROUTED = datetime(2026, 11, 26, 1, 0, tzinfo=UTC)
LATER = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def _case(route: str | None, team: uuid.UUID | None, routed_at: datetime | None = ROUTED) -> Case:
    return Case(id=uuid.uuid4(), route=route, team_id=team, routed_at=routed_at)


def _event(kind: str, **fields: object) -> CaseEvent:
    return CaseEvent(case_id=uuid.uuid4(), at=LATER, kind=kind, **fields)


def test_without_later_events_the_case_is_where_the_run_sent_it() -> None:
    (event,) = routing_event(_case("wijkteam", NOORD), [], TEAMS)
    assert event["kind"] == "routed"
    assert event["at"] == ROUTED.isoformat()
    assert (event["to_route"], event["to_team"], event["from_route"]) == ("wijkteam", "noord", None)


def test_after_transfers_the_first_one_tells_where_the_run_sent_it() -> None:
    events = [
        _event("transfer", from_route="wijkteam", from_team_id=NOORD, to_route="sdv"),
        _event("transfer", from_route="sdv", to_route="wijkteam", to_team_id=ZUID),
    ]
    (event,) = routing_event(_case("wijkteam", ZUID), events, TEAMS)
    assert (event["to_route"], event["to_team"]) == ("wijkteam", "noord")


def test_a_closure_keeps_the_route_it_found() -> None:
    events = [_event("closed", from_route="sdv")]
    (event,) = routing_event(_case("sdv", None), events, TEAMS)
    assert (event["to_route"], event["to_team"]) == ("sdv", None)


def test_a_stored_routed_event_is_not_repeated() -> None:
    """Cases routed before the run stopped storing the event keep theirs, and only it."""
    stored = [_event("routed", to_route="budgetcoach")]
    assert routing_event(_case("budgetcoach", None), stored, TEAMS) == []


def test_a_case_never_routed_has_no_routing_event() -> None:
    assert routing_event(_case(None, None, routed_at=None), [], TEAMS) == []
