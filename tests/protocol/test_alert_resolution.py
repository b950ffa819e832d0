"""The engine settles a target's alerts after each advance: a condition its row no longer shows is resolved once;
a healthy idle target costs no look into the alert book."""

from __future__ import annotations

from datetime import timedelta

from shared.domain import Actor, Stage
from shared.errors import Conflict, Unreachable
from tests.fakes import FakeWorld


async def test_a_failing_destination_is_resolved_when_its_push_goes_through() -> None:
    world = FakeWorld(push_max_attempts=2)
    target = world.seed(days_left=10)
    world.faults.add("destination.portal", lambda: Unreachable("portal: HTTP 503", code="Unavailable"),
                     times=2)
    for _ in range(2):
        assert (await world.engine().advance(target.tenant_id, target.app_id, Actor.TIMER)).result == \
            "push-incomplete"
    assert "destination-failing" in world.alerter.conditions() and world.alerter.resolved == []
    outcome = await world.engine().advance(target.tenant_id, target.app_id, Actor.TIMER)
    assert outcome.result == "rotated"
    assert world.alerter.resolved == [(target.tenant_id, target.app_id, "destination-failing", "portal")]
    # Another pass resolves nothing twice.
    await world.engine().advance(target.tenant_id, target.app_id, Actor.TIMER)
    assert len(world.alerter.resolved) == 1


async def test_a_stuck_rotation_is_resolved_when_it_moves_on() -> None:
    world = FakeWorld(push_max_attempts=100)
    target = world.seed(days_left=10)
    world.faults.add("destination.portal", lambda: Unreachable("portal: HTTP 503", code="Unavailable"),
                     times=2)
    await world.engine().advance(target.tenant_id, target.app_id, Actor.TIMER)
    assert world.row(target).state.stage is Stage.VERIFIED
    world.clock.advance(world.config.stuck_after + timedelta(minutes=1))
    await world.engine().advance(target.tenant_id, target.app_id, Actor.TIMER)
    assert "stuck" in world.alerter.conditions() and "stuck" not in world.alerter.resolved_conditions()
    await world.engine().advance(target.tenant_id, target.app_id, Actor.TIMER)
    assert world.row(target).state.stage is Stage.IDLE
    assert world.alerter.resolved_conditions() == ["stuck"]  # destination-failing was never raised (100 attempts)


async def test_a_healthy_target_is_not_looked_up_in_the_alert_book() -> None:
    world = FakeWorld()
    settled: list[str] = []
    settle = world.alerter.settle

    async def counting(tenant_id: str, app_id: str, holding: frozenset[tuple[str, str]]) -> None:
        settled.append(tenant_id)
        await settle(tenant_id, app_id, holding)

    world.alerter.settle = counting  # type: ignore[method-assign]
    target = world.seed(days_left=300)
    for _ in range(3):
        await world.engine().run_pass()
    assert settled == []
    due = world.seed(days_left=10)
    await world.engine().advance(due.tenant_id, due.app_id, Actor.TIMER)
    assert settled == [], "due, rotated in one advance: no condition opened"
    # An expired secret rotated in one advance: `expired` opened and cleared in it, and is resolved.
    expired = world.seed(days_left=-1)
    assert (await world.engine().advance(expired.tenant_id, expired.app_id, Actor.TIMER)).result == "rotated"
    assert settled == [expired.tenant_id]
    assert world.alerter.resolved == [(expired.tenant_id, expired.app_id, "expired", "")]
    assert target.tenant_id not in settled


async def test_an_advance_that_lost_its_row_to_another_runner_resolves_nothing() -> None:
    world = FakeWorld(push_max_attempts=1)
    target = world.seed(days_left=10)
    world.faults.add("destination.portal", lambda: Unreachable("portal: HTTP 503", code="Unavailable"), times=1)
    await world.engine().advance(target.tenant_id, target.app_id, Actor.TIMER)
    assert "destination-failing" in world.alerter.conditions()
    # The next advance takes its lease, records the portal's acknowledgement (its row shows no failure any more),
    # then loses its next write to another runner (a Conflict): it ends busy with a row that is no longer the stored
    # one, and must not resolve by it.
    nth = world.faults.counts["state.replace_target"] + 3
    world.faults.add("state.replace_target", lambda: Conflict("the row changed", code="Conflict"), nth=nth)
    outcome = await world.engine().advance(target.tenant_id, target.app_id, Actor.TIMER)
    assert outcome.result == "busy" and world.alerter.resolved == []
