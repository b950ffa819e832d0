"""A crash (the process dies, as under SIGKILL) before and after every port call of an approval-mode lifecycle, on the
fakes: the timer's pass asks for approval, a person approves, the resume pass reserves and rotates. After any crash
the lifecycle simply goes on (a new process runs it from the top); it ends rotated, with one request and one decision,
and the rotation's invariants hold at every instant (tests/fakes.py, FakeWorld)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from shared.approvals import decide_request
from shared.change_control import ApprovalStatus, ChangeControl, Mode
from shared.domain import Policy, Target
from shared.errors import Conflict
from tests.fakes import WRITES, Crash, FakeWorld

APPROVAL_WRITES = (*WRITES, "approvals.put", "approvals.remove")
ANN = "manual:ann@msp.example"


def seeded() -> tuple[FakeWorld, Target]:
    world = FakeWorld()
    world.clock.now_ = datetime(2026, 12, 2, 6, 0, tzinfo=UTC)
    target = world.seed(days_left=20)
    row = replace(world.row(target), policy=Policy(change_control=ChangeControl(Mode.APPROVAL, "Europe/Berlin")))
    world.state._write(row)
    return world, row


async def lifecycle(world: FakeWorld, target: Target) -> None:
    """What happens in the real world, in order; each step as a new process would take it up."""
    await world.engine().run_pass()
    request = world.approvals.request(target)
    if request is not None and request.status is ApprovalStatus.PENDING:
        try:
            await decide_request(world.approvals, world.state, target.tenant_id, target.app_id, request.request_id,
                                 "approve", actor=ANN, now=world.clock.now())
        except Conflict:
            pass  # decided already (the crashed process's write landed): the person sees it approved
    await world.engine().resume_pass()


async def calls() -> list[str]:
    world, target = seeded()
    await lifecycle(world, target)
    assert world.row(target).state.current_key_id and world.converged(target) == []
    return list(world.faults.log)


def crash_points() -> list[tuple[str, int, str]]:
    points, seen = [], dict[str, int]()
    for call in asyncio.run(calls()):
        seen[call] = seen.get(call, 0) + 1
        for when in ("before", "after") if call.startswith(APPROVAL_WRITES) else ("before",):
            points.append((call, seen[call], when))
    return points


@pytest.mark.parametrize(("call", "nth", "when"), crash_points(), ids=lambda v: str(v))
async def test_a_crash_anywhere_in_the_approval_lifecycle_loses_nothing(call: str, nth: int, when: str) -> None:
    world, target = seeded()
    world.faults.crash(call, when=when, nth=nth)
    for _ in range(4):
        try:
            await lifecycle(world, target)
            break
        except Crash:
            world.restart()
    else:
        pytest.fail("the lifecycle never finished")
    for _ in range(2):  # what the timers do next: finish anything left in flight
        await world.restart().resume_pass()
    assert world.row(target).state.current_key_id, "rotated"
    assert world.converged(target) == []
    approvals = [e for e in world.state.events_ if e.step == "approval"]
    assert [e.outcome for e in approvals if e.outcome != "requested"].count("approved") <= 1
    asked = {e.detail.split()[1] for e in approvals if e.outcome == "requested"}
    request = world.approvals.request(target)
    assert request is not None and asked == {request.request_id}, "one request for the key, audited"
    assert request.status is ApprovalStatus.APPROVED and request.decided_by == ANN
    assert world.violations == []
