"""The resume pass takes only rotations in flight further; a propagation delay ends at the next resume."""

from __future__ import annotations

from datetime import timedelta

from shared.domain import Actor, Stage
from tests.fakes import FakeWorld


async def test_resume_finishes_a_rotation_waiting_for_propagation_and_leaves_idle_targets_alone() -> None:
    world = FakeWorld(verify_timeout=timedelta(seconds=30))
    slow = world.seed(days_left=10)
    world.directory.propagation = timedelta(minutes=5)  # longer than the verification timeout
    outcome = await world.engine().advance(slow.tenant_id, slow.app_id, Actor.TIMER)
    assert outcome.result == "unverified" and world.row(slow).state.stage is Stage.PENDING
    world.directory.propagation = timedelta(0)
    due = world.seed(days_left=5, destinations=())  # due, idle: not the resume pass's business
    world.clock.advance(timedelta(minutes=15))
    summary = await world.engine().resume_pass(Actor.TIMER)
    assert summary.by_result == {"rotated": 1}
    assert world.converged(slow) == []
    assert world.row(due).state.stage is Stage.IDLE and world.secrets.of(due) == []
    assert world.faults.counts["directory.add_password"] == 1


async def test_resume_takes_a_push_outage_to_the_end() -> None:
    from shared.errors import RotationError

    world = FakeWorld()
    target = world.seed(days_left=10)
    world.faults.add("destination.portal", lambda: RotationError("down", code="HTTP503"), times=2)
    assert (await world.engine().advance(target.tenant_id, target.app_id, Actor.TIMER)).result == "push-incomplete"
    world.clock.advance(timedelta(minutes=15))
    assert (await world.engine().resume_pass()).by_result == {"push-incomplete": 1}
    world.clock.advance(timedelta(minutes=15))
    assert (await world.engine().resume_pass()).by_result == {"rotated": 1}
    assert world.converged(target) == []


def test_the_resume_timer_runs_on_its_schedule_setting_and_never_on_startup() -> None:
    from tests.api.conftest import app_functions

    resume = next(f for f in app_functions() if f.get_function_name() == "resume_timer")
    (binding,) = resume.get_bindings()
    assert binding.schedule == "%RESUME_SCHEDULE%" and binding.run_on_startup is False
