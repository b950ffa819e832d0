"""The verify probe's request id on the fakes (shared/verify_probe.py): the row records, per key, the id every probe
of the key sent; a crash after Entra issued the probe's token (the sign-in logged, the answer lost) resumes with a
probe sending the same id, so no probe of the rotation is ever the new key's use; the next rotation keeps the ids of
the key in use and the new one only; an adopted hand-written value records its own probe's id."""

from __future__ import annotations

from datetime import timedelta

import pytest

from shared import verify_probe
from shared.domain import Actor, Stage, Target
from tests.fakes import Crash, FakeWorld
from tests.protocol.test_adopt import adopt, hand_made


def world_with_log() -> tuple[FakeWorld, Target]:
    world = FakeWorld(evidence=True, retire_grace=timedelta(0))
    return world, world.seed(days_left=10)


async def test_a_crash_after_the_probes_token_resumes_with_the_same_id_and_the_probe_never_counts() -> None:
    world, target = world_with_log()
    old = world.directory.live(target.tenant_id, target.app_id)[0].key_id
    world.faults.crash("probe.try_token", when="after")
    with pytest.raises(Crash):
        await world.engine().advance(target.tenant_id, target.app_id, Actor.TIMER)
    assert world.row(target).state.stage is Stage.PENDING and world.row(target).state.probes == {}
    world.restart()
    # The resumed pass, 10 minutes on by the clock: far past the 5-minute cut-off of the time rule.
    world.clock.advance(timedelta(minutes=10))
    outcome = await world.engine().advance(target.tenant_id, target.app_id, Actor.TIMER)
    assert outcome.result == "rotated"
    state = world.row(target).state
    new = state.current_key_id
    assert len(world.probe.request_ids) == 2 and set(world.probe.request_ids) == {state.probes[new]}
    assert {r.correlation_id for r in world.sign_ins.records if r.key_id == new} == {state.probes[new]}
    world.clock.advance(timedelta(minutes=1))
    await world.engine().advance(target.tenant_id, target.app_id, Actor.TIMER)
    assert old in world.live_values(target), "both probes are the rotator's: the new key is not in use yet"
    # Proofpoint syncs two minutes after the push: known not to be a probe, it counts (the time rule waited 5 min).
    world.clock.advance(timedelta(minutes=1))
    assert world.sync(target, "proofpoint")
    world.clock.advance(timedelta(minutes=1))
    await world.engine().advance(target.tenant_id, target.app_id, Actor.TIMER)
    assert old not in world.live_values(target) and world.converged(target) == []


async def test_the_next_rotation_keeps_the_probe_ids_of_the_key_in_use_and_the_new_key_only() -> None:
    world, target = world_with_log()
    keys: list[str] = []
    for _ in range(3):
        world.clock.advance(timedelta(days=2))
        outcome = await world.engine().rotate_now(target.tenant_id, target.app_id, force=True)
        assert outcome.result == "rotated", outcome
        keys.append(world.row(target).state.current_key_id)
    verified = [e.rotation_id for e in world.state.events_ if e.step == "verify" and e.outcome == "ok"]
    state = world.row(target).state
    # Each id is the one its rotation's probe sent (derived from the rotation and the key, no secret in it).
    assert state.probes == {k: verify_probe.request_id(r, k) for k, r in list(zip(keys, verified, strict=True))[1:]}
    assert world.probe.request_ids == [verify_probe.request_id(r, k) for k, r in zip(keys, verified, strict=True)]


async def test_an_adopted_hand_written_value_records_its_probes_id() -> None:
    world = FakeWorld(evidence=True)
    target = world.seed(days_left=100)
    key_id, value = hand_made(world, target)
    version = world.secrets.write_by_hand(target, value)
    assert await adopt(world, target, version) == "rotated"
    assert world.row(target).state.probes[key_id] == verify_probe.adoption_id(version)
    assert world.probe.request_ids == [verify_probe.adoption_id(version)]
