"""A crash (the process dies, as under SIGKILL) before and after every port call of a rotation, on the fakes; the
next run converges and the invariants hold at every instant (tests/fakes.py, FakeWorld). The sandbox's SIGKILL
tests (tests/rotation/test_crash.py) prove the same on the real SDK paths at fewer points."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta

import pytest

from shared.domain import Actor, Target
from tests.fakes import WRITES, Crash, FakeWorld

Scenario = Callable[[FakeWorld], Awaitable[Target]]


async def rotate(world: FakeWorld, target: Target) -> None:
    await world.engine().advance(target.tenant_id, target.app_id, Actor.TIMER)


async def first_rotation(world: FakeWorld) -> Target:
    return world.seed(days_left=10)


async def second_rotation(world: FakeWorld) -> Target:
    """A target rotated once, rotated again (forced) within the 24 h grace: the first new credential is live."""
    target = world.seed(days_left=10)
    await rotate(world, target)
    assert world.converged(target) == []
    world.clock.advance(timedelta(hours=2))
    return target


async def third_rotation(world: FakeWorld) -> Target:
    """Two rotations done and the grace of the first over: versions `previous` and `current` exist."""
    target = await second_rotation(world)
    await world.engine().advance(target.tenant_id, target.app_id, Actor.MANUAL, force=True)
    assert world.converged(target) == []
    world.clock.advance(timedelta(hours=25))
    return target


SCENARIOS: dict[str, tuple[Scenario, bool]] = {
    "first": (first_rotation, False),
    "second within grace": (second_rotation, True),
    "third after grace": (third_rotation, True),
    # No new rotation: an idle pass after the grace removes the superseded credential and moves its version's tag.
    "retirement after grace": (third_rotation, False),
}


async def calls_of(name: str) -> list[str]:
    """The port calls the rotation under test makes when nothing goes wrong."""
    world = FakeWorld()
    setup, force = SCENARIOS[name]
    target = await setup(world)
    start = len(world.faults.log)
    await world.engine().advance(target.tenant_id, target.app_id, Actor.MANUAL, force=force)
    assert world.converged(target) == []
    return world.faults.log[start:]


def crash_points() -> list[tuple[str, str, int, str]]:
    import asyncio

    points = []
    for name in SCENARIOS:
        seen: dict[str, int] = {}
        for call in asyncio.run(calls_of(name)):
            seen[call] = seen.get(call, 0) + 1
            for when in ("before", "after") if call.startswith(WRITES) else ("before",):
                points.append((name, call, seen[call], when))
    return points


CRASH_POINTS = crash_points()


@pytest.mark.parametrize(("scenario", "call", "nth", "when"), CRASH_POINTS,
                         ids=[f"{s}-{w}-{c}#{n}" for s, c, n, w in CRASH_POINTS])
async def test_a_crash_at_any_call_of_a_rotation_converges(scenario: str, call: str, nth: int, when: str) -> None:
    world = FakeWorld()
    setup, force = SCENARIOS[scenario]
    target = await setup(world)
    world.faults.crash(call, when=when, nth=world.faults.counts[call] + nth)
    with pytest.raises(Crash):
        await world.engine().advance(target.tenant_id, target.app_id, Actor.MANUAL, force=force)
    for _ in range(3):  # the next runs (a crash in `creating` may start over once)
        engine = world.restart()
        await engine.advance(target.tenant_id, target.app_id, Actor.TIMER)
        if not world.converged(target):
            break
    assert world.converged(target) == []


def test_every_scenario_has_crash_points_inside_finish() -> None:
    inside = {(s, c) for s, c, _, _ in CRASH_POINTS if c in ("secrets.promote", "secrets.demote")}
    assert {s for s, _ in inside} == set(SCENARIOS)
