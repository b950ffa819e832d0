"""Adoption of a hand-written Key Vault version on the fakes: the rotator's own `pending` write is ignored; a version
someone wrote by hand is proven with a token, matched to its Entra ID credential by Graph's hint, pushed through the
protocol and finished; one that gets no token is never pushed; a crash at any write is finished by the next pass."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from shared.domain import Actor, Stage, Target, VersionStage
from shared.protocol.adopt import HAND_WRITTEN_NOT_ADOPTED, HAND_WRITTEN_REFUSED
from tests.fakes import WRITES, Crash, FakeWorld


def hand_made(world: FakeWorld, target: Target, days: int = 200) -> tuple[str, str]:
    """A person adds a secret in the Entra portal: its key id and value."""
    credential = world.directory.add_foreign(target.tenant_id, target.app_id, days)
    return credential.key_id, world.directory.values[credential.key_id].secret


async def adopt(world: FakeWorld, target: Target, version: str) -> str:
    return (await world.engine().adopt_version(target.tenant_id, target.app_id, version, Actor.EVENT)).result


async def test_a_hand_written_version_is_proven_identified_pushed_and_finished() -> None:
    world = FakeWorld()
    target = world.seed(days_left=10)
    assert (await world.engine().advance(target.tenant_id, target.app_id, Actor.TIMER)).result == "rotated"
    old_key = world.row(target).state.current_key_id  # the rotator's credential, in use everywhere
    world.clock.advance(timedelta(days=3))
    key_id, value = hand_made(world, target)
    version = world.secrets.write_by_hand(target, value, author="alice@msp.example")
    assert await adopt(world, target, version) == "rotated"
    assert world.destination.held == {"proofpoint": value, "portal": value}
    (current,) = world.secrets.staged(target, VersionStage.CURRENT)
    assert (current.version, current.key_id) == (version, key_id)
    row = world.row(target)
    assert row.state.current_key_id == key_id and old_key in row.state.superseded
    assert world.converged(target) == []
    assert [v.stage for v in world.secrets.of(target)][-2:] == [VersionStage.PREVIOUS, VersionStage.CURRENT]
    (event,) = [e for e in world.state.events_ if e.step == "adopt"]
    assert event.outcome == "ok" and event.actor == "event"
    assert f"hand-written version {version} (by alice@msp.example)" in event.detail and key_id in event.detail
    assert value not in repr(world.state.events_) + repr(row) + repr(world.alerter.raised)
    # A replay of the event, later: nothing more happens.
    pushes = len(world.destination.deliveries)
    assert await adopt(world, target, version) == "already-adopted"
    assert len(world.destination.deliveries) == pushes
    # After the grace period the superseded rotator credential goes; the adopted one stays in use.
    world.clock.advance(timedelta(hours=25))
    await world.engine().advance(target.tenant_id, target.app_id, Actor.TIMER)
    assert old_key not in world.live_values(target) and key_id in world.live_values(target)
    assert world.converged(target) == []


async def test_the_rotators_own_pending_version_is_ignored() -> None:
    world = FakeWorld()
    target = world.seed(days_left=10)
    world.faults.crash("probe.try_token")  # the rotation stops in `pending`, its version just written
    with pytest.raises(Crash):
        await world.engine().advance(target.tenant_id, target.app_id, Actor.TIMER)
    world.restart()
    (pending,) = world.secrets.staged(target, VersionStage.PENDING)
    probes = world.faults.counts["probe.try_token"]
    assert await adopt(world, target, pending.version) == "own-version"
    assert world.faults.counts["probe.try_token"] == probes and world.destination.deliveries == []
    assert world.row(target).state.stage is Stage.PENDING and world.alerter.raised == []


async def test_a_hand_written_value_that_gets_no_token_is_never_pushed() -> None:
    world = FakeWorld(verify_timeout=timedelta(seconds=30))
    target = world.seed(days_left=100)
    before = world.row(target)
    version = world.secrets.write_by_hand(target, "a-value-nobody-made-in-entra", author="bob")
    assert await adopt(world, target, version) == "not-adopted"
    assert world.destination.deliveries == [] and world.row(target) == before
    (alert,) = world.alerter.raised
    assert alert.condition == HAND_WRITTEN_REFUSED and alert.details["error_code"] == "AADSTS7000215"
    assert alert.details["author"] == "bob" and "a-value-nobody" not in alert.message


async def test_a_new_hand_made_secret_is_waited_for_while_it_propagates() -> None:
    world = FakeWorld(verify_timeout=timedelta(minutes=2))
    target = world.seed(days_left=100)
    world.directory.propagation = timedelta(seconds=30)
    _, value = hand_made(world, target)
    version = world.secrets.write_by_hand(target, value)
    assert await adopt(world, target, version) == "rotated"
    assert world.faults.counts["probe.try_token"] > 1 and world.converged(target) == []


async def test_not_adopted_while_a_rotation_is_in_flight() -> None:
    world = FakeWorld()
    target = world.seed(days_left=10)
    world.destination.held.clear()
    world.faults.crash("probe.try_token")
    with pytest.raises(Crash):
        await world.engine().advance(target.tenant_id, target.app_id, Actor.TIMER)
    world.restart()
    _, value = hand_made(world, target)
    version = world.secrets.write_by_hand(target, value)
    assert await adopt(world, target, version) == "not-adopted"
    (alert,) = world.alerter.raised
    assert alert.condition == HAND_WRITTEN_NOT_ADOPTED and alert.details["error_code"] == "RotationInFlight"
    assert world.destination.deliveries == [] and world.row(target).state.stage is Stage.PENDING


async def test_an_unidentified_credential_needs_an_expiry_on_the_version() -> None:
    world = FakeWorld()
    target = world.seed(days_left=100)
    (old_key,) = world.live_values(target)
    _, value = hand_made(world, target)
    twin, _ = hand_made(world, target)  # a second secret with the same hint: Graph cannot tell them apart
    app = world.directory.app(target.tenant_id, target.app_id)
    world.directory.apps[(target.tenant_id, target.app_id)] = replace(app, credentials=tuple(
        replace(c, hint=value[:3]) if c.key_id == twin else c for c in app.credentials))
    no_expiry = world.secrets.write_by_hand(target, value)
    assert await adopt(world, target, no_expiry) == "not-adopted"
    assert world.alerter.raised[-1].details["error_code"] == "ExpiryUnknown"
    assert world.destination.deliveries == []
    expires = world.clock.now() + timedelta(days=200)
    with_expiry = world.secrets.write_by_hand(target, value, expires=expires)
    assert await adopt(world, target, with_expiry) == "rotated"
    row = world.row(target)
    assert row.state.current_version == with_expiry and row.state.current_key_id == ""
    assert row.state.superseded == () and old_key in world.live_values(target), "nothing superseded on a guess"
    assert world.destination.held["proofpoint"] == value


def adoption_setup(world: FakeWorld) -> tuple[Target, str, str, str]:
    """A registered target, then a secret made by hand in Entra ID and pasted into Key Vault."""
    target = world.seed(days_left=100)
    key_id, value = hand_made(world, target)
    return target, key_id, value, world.secrets.write_by_hand(target, value, author="carol")


async def adoption_calls() -> list[str]:
    world = FakeWorld()
    target, _, _, version = adoption_setup(world)
    start = len(world.faults.log)
    assert await adopt(world, target, version) == "rotated"
    return world.faults.log[start:]


def adoption_points() -> list[tuple[str, int, str]]:
    import asyncio

    points: list[tuple[str, int, str]] = []
    seen: dict[str, int] = {}
    for call in asyncio.run(adoption_calls()):
        seen[call] = seen.get(call, 0) + 1
        for when in ("before", "after") if call.startswith(WRITES) else ("before",):
            points.append((call, seen[call], when))
    return points


ADOPTION_POINTS = adoption_points()


def test_the_adoption_crash_points_cover_its_write_and_the_finish() -> None:
    calls = {c for c, _, _ in ADOPTION_POINTS}
    assert {"probe.try_token", "state.replace_target", "destination.proofpoint", "secrets.promote"} <= calls


@pytest.mark.parametrize(("call", "nth", "when"), ADOPTION_POINTS,
                         ids=[f"{w}-{c}#{n}" for c, n, w in ADOPTION_POINTS])
async def test_a_crash_at_any_call_of_an_adoption_is_finished_by_the_event_retry_or_the_resume_pass(
    call: str, nth: int, when: str,
) -> None:
    world = FakeWorld()
    target, key_id, value, version = adoption_setup(world)
    world.faults.crash(call, when=when, nth=world.faults.counts.get(call, 0) + nth)
    with pytest.raises(Crash):
        await adopt(world, target, version)
    assert world.violations == []
    world.restart()
    # Event Grid delivers the event again (the invocation died), and the resume pass runs.
    assert await adopt(world, target, version) in ("rotated", "already-adopted")
    await world.engine().resume_pass()
    assert world.converged(target) == []
    row = world.row(target)
    assert (row.state.current_version, row.state.current_key_id) == (version, key_id)
    assert world.destination.held == {"proofpoint": value, "portal": value}
    assert [e.outcome for e in world.state.events_ if e.step == "adopt"].count("ok") <= 2


async def test_a_late_copy_of_the_event_never_brings_back_a_superseded_value() -> None:
    world = FakeWorld()
    target = world.seed(days_left=100)
    _, value = hand_made(world, target, days=40)
    version = world.secrets.write_by_hand(target, value)
    assert await adopt(world, target, version) == "rotated"
    world.clock.advance(timedelta(days=20))  # due: the rotator rotates, the adopted version becomes `previous`
    assert (await world.engine().advance(target.tenant_id, target.app_id, Actor.TIMER)).result == "rotated"
    held = dict(world.destination.held)
    assert await adopt(world, target, version) == "already-adopted"
    assert world.destination.held == held and world.converged(target) == []


async def test_nothing_is_adopted_for_a_disabled_target() -> None:
    world = FakeWorld()
    target = world.seed(days_left=100)
    world.state._write(replace(world.row(target), enabled=False))
    _, value = hand_made(world, target)
    version = world.secrets.write_by_hand(target, value)
    assert await adopt(world, target, version) == "not-adopted"
    assert world.destination.deliveries == [] and world.faults.counts["probe.try_token"] == 0
