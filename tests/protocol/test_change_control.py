"""Change control in the protocol (issue 26), on the fakes: a due rotation waits outside its window and rotates
inside it; in approval mode it waits for a decision (approve -> rotates, postpone -> waits until the date, then a
new request, reject -> no rotation, audited); the force day forces it with an alert; never-force alerts daily; a
crash between a decision and the reservation loses nothing; an operator's rotation now goes ahead, audited."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, time, timedelta

import pytest

from shared.approvals import decide_request
from shared.change_control import ApprovalStatus, ChangeControl, Mode, Window
from shared.domain import Actor, Policy, Stage, Target
from shared.errors import Conflict
from shared.fanout import plan_pass
from shared.ports import Work
from tests.fakes import Crash, FakeWorld

BERLIN = "Europe/Berlin"
SATURDAY_NIGHT = (Window(frozenset({5}), time(22, 0), time(2, 0)),)  # Saturday 22:00 to Sunday 02:00, Berlin time


def controlled(world: FakeWorld, target: Target, control: ChangeControl) -> Target:
    row = replace(world.row(target), policy=Policy(change_control=control))
    world.state._write(row)
    return row


def events(world: FakeWorld, target: Target, step: str) -> list[str]:
    return [f"{e.outcome}: {e.detail}" for e in world.state.events_ if e.step == step
            and (e.tenant_id, e.app_id) == (target.tenant_id, target.app_id)]


def rotated(world: FakeWorld, target: Target) -> bool:
    return world.row(target).state.current_key_id != "" and len(world.secrets.of(target)) == 1


def at(world: FakeWorld, moment: datetime) -> None:
    world.clock.now_ = moment


async def test_window_mode_waits_outside_the_window_and_rotates_inside_it() -> None:
    world = FakeWorld()
    at(world, datetime(2026, 12, 2, 6, 0, tzinfo=UTC))  # Wednesday 07:00 in Berlin
    target = controlled(world, world.seed(days_left=20), ChangeControl(Mode.WINDOW, BERLIN, SATURDAY_NIGHT))
    outcome = await world.engine().advance(target.tenant_id, target.app_id, Actor.TIMER)
    row = world.row(target)
    assert outcome.result == "due" and row.state.stage is Stage.IDLE
    assert len(world.directory.app(target.tenant_id, target.app_id).credentials) == 1, "nothing created"
    assert row.observed.waiting == "window"
    opens = datetime(2026, 12, 5, 21, 0, tzinfo=UTC)  # Saturday 22:00 CET
    assert row.observed.waiting_until == opens
    assert any("next window 2026-12-05T22:00:00+01:00" in e for e in events(world, target, "change-control"))
    # The resume pass leaves it alone until the window opens...
    at(world, opens - timedelta(minutes=1))
    await world.engine().resume_pass()
    assert world.row(target).state.current_key_id == ""
    # ...and rotates it once it has.
    at(world, opens + timedelta(minutes=5))
    await world.engine().resume_pass()
    assert rotated(world, target)
    assert world.row(target).observed.waiting == ""
    assert any("inside a maintenance window" in e for e in events(world, target, "reserve"))
    assert world.converged(target) == []
    assert "rotation-forced" not in world.alerter.conditions()


async def test_window_mode_forces_at_the_force_day_with_an_alert() -> None:
    world = FakeWorld(renew_before_days=30)
    at(world, datetime(2026, 12, 2, 6, 0, tzinfo=UTC))  # Wednesday; the window is Saturday night
    target = controlled(world, world.seed(days_left=8),
                        ChangeControl(Mode.WINDOW, BERLIN, SATURDAY_NIGHT, force_days_before_expiry=7))
    await world.engine().advance(target.tenant_id, target.app_id, Actor.TIMER)
    row = world.row(target)
    assert row.observed.waiting == "window"
    force_day = row.observed.expires - timedelta(days=7)  # type: ignore[operator]
    assert row.observed.waiting_until == force_day  # before Saturday's window
    at(world, force_day + timedelta(minutes=1))
    await world.engine().resume_pass()
    assert rotated(world, target)
    forced = [a for a in world.alerter.raised if a.condition == "rotation-forced"]
    assert len(forced) == 1 and "outside the maintenance windows" in forced[0].message
    assert "7 days before expiry" in forced[0].message
    assert any("forced" in e for e in events(world, target, "reserve"))


async def test_never_force_keeps_waiting_and_alerts_every_day() -> None:
    world = FakeWorld()
    at(world, datetime(2026, 12, 2, 6, 0, tzinfo=UTC))
    target = controlled(world, world.seed(days_left=3),
                        ChangeControl(Mode.WINDOW, BERLIN, SATURDAY_NIGHT, never_force=True))
    for day in range(3):  # Wednesday, Thursday, Friday: outside the window, past the force day
        at(world, datetime(2026, 12, 2 + day, 6, 0, tzinfo=UTC))
        await world.engine().run_pass()
        assert world.row(target).state.current_key_id == ""
    blocking = [a for a in world.alerter.raised if a.condition == "change-control-blocking-expiry"]
    assert len(blocking) == 3 and "never force" in blocking[0].message
    assert world.row(target).observed.change_blocking
    assert ("change-control-blocking-expiry", "") in world.alerter.open[(target.tenant_id, target.app_id)]
    # Its window comes: rotated, and the blocking condition resolves.
    at(world, datetime(2026, 12, 5, 21, 30, tzinfo=UTC))
    await world.engine().resume_pass()
    assert rotated(world, target)
    assert "change-control-blocking-expiry" in world.alerter.resolved_conditions()


async def approval_world(days_left: int = 20, **control: object) -> tuple[FakeWorld, Target, str]:
    world = FakeWorld()
    at(world, datetime(2026, 12, 2, 6, 0, tzinfo=UTC))
    target = controlled(world, world.seed(days_left=days_left),
                        ChangeControl(Mode.APPROVAL, BERLIN, **control))  # type: ignore[arg-type]
    await world.engine().run_pass()
    request = world.approvals.request(target)
    assert request is not None and request.status is ApprovalStatus.PENDING
    return world, target, request.request_id


async def test_approval_mode_waits_then_an_approval_rotates_it() -> None:
    world, target, request_id = await approval_world()
    row = world.row(target)
    assert row.state.current_key_id == "" and row.observed.waiting == "approval"
    assert row.observed.approval_id == request_id and row.observed.approval_status == "pending"
    asked = [a for a in world.alerter.raised if a.condition == "approval-requested"]
    assert len(asked) == 1 and asked[0].details["requestId"] == request_id
    request = world.approvals.request(target)
    assert request is not None and request.key_id == world.directory.app(target.tenant_id, target.app_id) \
        .credentials[0].key_id, "bound to the key being replaced"
    # A second pass asks nothing new: the same request.
    await world.engine().run_pass()
    assert world.approvals.request(target).request_id == request_id  # type: ignore[union-attr]
    await decide_request(world.approvals, world.state, target.tenant_id, target.app_id, request_id, "approve",
                         actor="manual:ann@msp.example", now=world.clock.now())
    await world.engine().resume_pass()
    assert rotated(world, target)
    assert any("approved by manual:ann@msp.example" in e for e in events(world, target, "reserve"))
    assert any(e.startswith("approved") for e in events(world, target, "approval"))
    assert "approval-requested" in world.alerter.resolved_conditions()
    assert world.converged(target) == []


async def test_postpone_waits_until_the_date_then_asks_again() -> None:
    world, target, request_id = await approval_world(days_left=25)
    until = world.clock.now() + timedelta(days=3)
    await decide_request(world.approvals, world.state, target.tenant_id, target.app_id, request_id, "postpone",
                         actor="manual:ann@msp.example", now=world.clock.now(), until=until.isoformat(),
                         reason="customer's quarter close")
    await world.engine().resume_pass()
    row = world.row(target)
    assert row.state.current_key_id == "" and row.observed.approval_status == "postponed"
    assert row.observed.waiting == "approval" and row.observed.waiting_until == until
    assert "approval-requested" in world.alerter.resolved_conditions()
    at(world, until - timedelta(minutes=1))
    await world.engine().resume_pass()
    assert world.approvals.request(target).request_id == request_id  # type: ignore[union-attr]
    at(world, until)
    await world.engine().resume_pass()
    again = world.approvals.request(target)
    assert again is not None and again.request_id != request_id and again.status is ApprovalStatus.PENDING
    assert world.row(target).state.current_key_id == "", "a new request waits for its own decision"
    assert any("after the postponement" in e for e in events(world, target, "approval"))


async def test_reject_never_rotates_and_is_audited() -> None:
    world, target, request_id = await approval_world(days_left=25)
    await decide_request(world.approvals, world.state, target.tenant_id, target.app_id, request_id, "reject",
                         actor="manual:bob@msp.example", now=world.clock.now(), reason="change freeze")
    for _ in range(5):
        at(world, world.clock.now() + timedelta(days=1))
        await world.engine().run_pass()
    row = world.row(target)
    assert row.state.current_key_id == "" and len(world.secrets.of(target)) == 0
    assert row.observed.approval_status == "rejected" and row.observed.waiting == ""
    assert any("rejected" in e and "change freeze" in e for e in events(world, target, "approval"))
    assert [e.actor for e in world.state.events_ if e.step == "approval" and e.outcome == "rejected"] \
        == ["manual:bob@msp.example"]
    with pytest.raises(Conflict) as stale:
        await decide_request(world.approvals, world.state, target.tenant_id, target.app_id, request_id, "approve",
                             actor="manual:ann@msp.example", now=world.clock.now())
    assert stale.value.code == "NotPending" and "bob" in stale.value.message


async def test_approval_mode_forces_at_the_force_day_whatever_the_request_says() -> None:
    world, target, request_id = await approval_world(days_left=10, force_days_before_expiry=5)
    await decide_request(world.approvals, world.state, target.tenant_id, target.app_id, request_id, "reject",
                         actor="manual:bob@msp.example", now=world.clock.now())
    force_day = world.row(target).observed.expires - timedelta(days=5)  # type: ignore[operator]
    assert world.row(target).observed.waiting_until == force_day
    at(world, force_day + timedelta(seconds=1))
    await world.engine().resume_pass()
    assert rotated(world, target)
    forced = [a for a in world.alerter.raised if a.condition == "rotation-forced"]
    assert forced and "rejected by manual:bob@msp.example" in forced[0].message
    assert world.approvals.request(target) is None, "the request no longer applies: withdrawn"
    assert any(e.startswith("withdrawn") for e in events(world, target, "approval"))


@pytest.mark.parametrize(("crash_at", "when"), [
    ("state.replace_target", "before"),  # the reservation never landed
    ("state.replace_target", "after"),  # it landed, its answer was lost
    ("state.record", "before"),  # it landed, its audit record did not
])
async def test_a_crash_between_an_approval_and_the_reservation_resumes(crash_at: str, when: str) -> None:
    world, target, request_id = await approval_world()
    await decide_request(world.approvals, world.state, target.tenant_id, target.app_id, request_id, "approve",
                         actor="manual:ann@msp.example", now=world.clock.now())
    # The process that would reserve dies at its first write (the reservation itself, or its audit record).
    world.faults.crash(crash_at, when=when, nth=world.faults.counts[crash_at] + 1)
    with pytest.raises(Crash):
        await world.engine().advance(target.tenant_id, target.app_id, "manual:ann@msp.example", reserve_only=True)
    engine = world.restart()
    await engine.resume_pass()
    await world.restart().resume_pass()  # a reservation that landed before the crash is in flight: resumed
    assert rotated(world, target), "the decision was not lost"
    assert world.approvals.request(target).status is ApprovalStatus.APPROVED  # type: ignore[union-attr]
    assert world.converged(target) == []


async def test_a_decision_is_one_guarded_write_two_at_once_one_wins() -> None:
    world, target, request_id = await approval_world()
    held = await world.approvals.get(target.tenant_id, target.app_id)
    assert held is not None
    await decide_request(world.approvals, world.state, target.tenant_id, target.app_id, request_id, "reject",
                         actor="manual:bob@msp.example", now=world.clock.now())
    # The other decision was read before the first landed: its guarded write fails.
    with pytest.raises(Conflict):
        await world.approvals.put(replace(held[0], status=ApprovalStatus.APPROVED), held[1])
    assert world.approvals.request(target).status is ApprovalStatus.REJECTED  # type: ignore[union-attr]


async def test_a_manual_rotation_goes_ahead_outside_the_window_audited() -> None:
    world = FakeWorld()
    at(world, datetime(2026, 12, 2, 6, 0, tzinfo=UTC))
    target = controlled(world, world.seed(days_left=20), ChangeControl(Mode.WINDOW, BERLIN, SATURDAY_NIGHT))
    await world.engine().run_pass()
    assert world.row(target).observed.waiting == "window"
    outcome = await world.engine().rotate_now(target.tenant_id, target.app_id, actor="manual:ann@msp.example")
    assert outcome.result == "rotated"
    reserve = [e for e in world.state.events_ if e.step == "reserve"]
    assert reserve[-1].actor == "manual:ann@msp.example"
    assert "manual rotation OUTSIDE the maintenance windows" in reserve[-1].detail
    assert world.row(target).observed.waiting == ""


async def test_a_manual_rotation_in_approval_mode_withdraws_the_pending_request() -> None:
    world, target, request_id = await approval_world()
    outcome = await world.engine().rotate_now(target.tenant_id, target.app_id, actor="manual:ann@msp.example")
    assert outcome.result == "rotated"
    assert world.approvals.request(target) is None
    assert any(request_id in e and e.startswith("withdrawn") for e in events(world, target, "approval"))
    assert "manual rotation WITHOUT approval" in [e for e in world.state.events_ if e.step == "reserve"][-1].detail
    # The next passes ask nothing: the new key is healthy.
    await world.engine().run_pass()
    assert world.approvals.request(target) is None and world.row(target).observed.waiting == ""


class ListQueue:
    """The work queue: what was enqueued."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    async def enqueue(self, work: Work, delay_seconds: int = 0) -> None:
        self.sent.append((work.tenant_id, work.reason.value))


async def test_the_resume_timers_plan_reserves_a_wait_that_ended_and_nothing_else() -> None:
    world = FakeWorld()
    at(world, datetime(2026, 12, 2, 6, 0, tzinfo=UTC))
    windowed = controlled(world, world.seed(days_left=20), ChangeControl(Mode.WINDOW, BERLIN, SATURDAY_NIGHT))
    asking = controlled(world, world.seed(days_left=20), ChangeControl(Mode.APPROVAL, BERLIN))
    healthy = world.seed(days_left=200)
    queue = ListQueue()
    await plan_pass(world.engine(), queue)  # the daily plan: both wait, nothing is reserved
    assert queue.sent == [] and world.approvals.request(asking) is not None
    await plan_pass(world.engine(), queue, only_in_flight=True)
    assert queue.sent == [], "nothing ended yet: the resume plan reads no target further"
    request = world.approvals.request(asking)
    assert request is not None
    await decide_request(world.approvals, world.state, asking.tenant_id, asking.app_id, request.request_id,
                         "approve", actor="manual:ann@msp.example", now=world.clock.now())
    await plan_pass(world.engine(), queue, only_in_flight=True)
    assert queue.sent == [(asking.tenant_id, "due")], "the decided request is reserved and queued"
    at(world, datetime(2026, 12, 5, 21, 1, tzinfo=UTC))  # Saturday 22:01 in Berlin
    await plan_pass(world.engine(), queue, only_in_flight=True)
    assert (windowed.tenant_id, "due") in queue.sent
    assert healthy.tenant_id not in {t for t, _ in queue.sent}
    assert world.row(windowed).state.stage is Stage.CREATING
