"""Retire on the destination's own proof, on the fakes: where a destination reports its own sync (Proofpoint's
last_successful_sync), the superseded secret goes only once that sync ran after the push; a day without it keeps
the old secret, flags the target and alerts once."""

from __future__ import annotations

from datetime import timedelta

import pytest

from shared.domain import Actor, Target
from shared.registry import status_document
from tests.fakes import Crash, FakeWorld, rotation_error

GRACE_OVER = {"retire_grace": timedelta(0)}


async def rotate(world: FakeWorld, target: Target) -> str:
    """One timer advance; the key id the target started with."""
    old = world.directory.live(target.tenant_id, target.app_id)[0].key_id
    outcome = await world.engine().advance(target.tenant_id, target.app_id, Actor.TIMER)
    assert outcome.result == "rotated", outcome
    return old


async def timer(world: FakeWorld, target: Target) -> None:
    await world.engine().advance(target.tenant_id, target.app_id, Actor.TIMER)


def live(world: FakeWorld, target: Target) -> set[str]:
    return set(world.live_values(target))


def sync_state(world: FakeWorld, target: Target, name: str = "proofpoint") -> object:
    doc = status_document(world.row(target))
    destinations = doc["destinations"]
    assert isinstance(destinations, list)
    return next(d for d in destinations if d["name"] == name)["sync"]


def reporting(**config: object) -> tuple[FakeWorld, Target]:
    world = FakeWorld(**{**GRACE_OVER, **config})
    target = world.seed(days_left=10)
    world.destination.reports_sync.add("proofpoint")
    world.destination.synced["proofpoint"] = world.clock.now() - timedelta(hours=3)  # its last sync, before
    return world, target


async def test_the_old_secret_is_kept_until_the_destinations_own_sync_runs_after_the_push() -> None:
    world, target = reporting()
    old = await rotate(world, target)
    assert old in live(world, target), "the grace period is over, but Proofpoint has not synced with the new secret"
    assert sync_state(world, target) == "waiting" and sync_state(world, target, "portal") == "not-reported"
    assert world.row(target).state.acks["proofpoint"].checks == ("read-back", "sync-reported")
    world.clock.advance(timedelta(hours=2))
    await timer(world, target)
    assert old in live(world, target)

    assert world.sync(target, "proofpoint")  # its scheduled sync, with the new secret it holds
    world.clock.advance(timedelta(minutes=5))
    await timer(world, target)
    assert old not in live(world, target)
    assert sync_state(world, target) == "confirmed"
    assert world.row(target).state.acks["proofpoint"].synced_at == world.destination.synced["proofpoint"]
    assert world.converged(target) == [] and "sync-not-confirmed" not in world.alerter.conditions()


async def test_proof_is_a_sync_later_than_the_push_and_than_what_was_read_right_after_it() -> None:
    world, target = reporting()
    old = await rotate(world, target)
    # Proofpoint's clock runs ahead of ours: its last sync looks later than the push but was read right after it.
    world.destination.synced["proofpoint"] = world.clock.now() + timedelta(minutes=3)
    ack = world.row(target).state.acks["proofpoint"]
    assert ack.sync_after is not None and ack.sync_after <= world.clock.now()
    await world.engine().advance(target.tenant_id, target.app_id, Actor.TIMER)
    assert old not in live(world, target), "later than the push: proof"

    world2, target2 = reporting()
    world2.destination.synced["proofpoint"] = world2.clock.now() + timedelta(minutes=3)  # ahead before the push
    old2 = await rotate(world2, target2)
    world2.clock.advance(timedelta(hours=1))
    await timer(world2, target2)
    assert old2 in live(world2, target2), "the value read right after the push is not a sync after it"


async def test_no_sync_within_a_day_keeps_the_old_secret_alerts_once_and_shows_it() -> None:
    world, target = reporting()
    old = await rotate(world, target)
    world.clock.advance(timedelta(hours=12))
    await timer(world, target)
    assert "sync-not-confirmed" not in world.alerter.conditions(), "not within the day"

    world.clock.advance(timedelta(hours=13))
    for _ in range(3):  # alerted once, however many passes see it
        await timer(world, target)
        world.clock.advance(timedelta(hours=1))
    assert old in live(world, target), "the old secret is kept"
    [alert] = [a for a in world.alerter.raised if a.condition == "sync-not-confirmed"]
    assert alert.details["destinations"] == "proofpoint" and "the old secret is kept" in alert.message
    assert world.row(target).observed.needs_human.startswith("sync-not-confirmed: proofpoint")
    assert sync_state(world, target) == "waiting"

    assert world.sync(target, "proofpoint")  # someone presses "sync now": it works with the new secret
    await timer(world, target)
    assert old not in live(world, target)
    assert world.row(target).observed.needs_human == "" and sync_state(world, target) == "confirmed"
    assert world.converged(target) == []


async def test_an_unreadable_destination_keeps_the_old_secret_and_the_pass_goes_on() -> None:
    world, target = reporting()
    old = await rotate(world, target)
    world.clock.advance(timedelta(hours=1))
    assert world.sync(target, "proofpoint")
    world.faults.add("sync.proofpoint", rotation_error("ServiceUnavailable"),
                     nth=world.faults.counts["sync.proofpoint"] + 1, times=2)
    await timer(world, target)
    assert old in live(world, target), "an unread sync proves nothing"
    assert world.row(target).observed.last_outcome == "rotated"
    await timer(world, target)  # still failing
    await timer(world, target)  # it answers: the sync ran after the push
    assert old not in live(world, target)


async def test_a_destination_that_reports_no_sync_retires_after_the_grace_period_as_before() -> None:
    world = FakeWorld(**GRACE_OVER)
    target = world.seed(days_left=10)
    old = await rotate(world, target)
    assert old not in live(world, target)
    assert sync_state(world, target) == "not-reported"


async def test_the_gate_holds_every_superseded_secret_of_two_rotations() -> None:
    world, target = reporting()
    first = await rotate(world, target)
    world.clock.advance(timedelta(hours=2))
    await world.engine().advance(target.tenant_id, target.app_id, Actor.MANUAL, force=True)
    second = world.row(target).state.superseded
    assert first in second and len(second) == 2 and set(second) <= live(world, target)
    world.clock.advance(timedelta(minutes=1))
    assert world.sync(target, "proofpoint")
    await timer(world, target)
    assert not set(second) & live(world, target)
    assert world.converged(target) == []


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("call,nth", [("sync.proofpoint", 1)] + [("state.replace_target", n) for n in range(1, 5)])
async def test_a_crash_in_the_pass_that_finds_no_sync_converges_and_never_removes_a_used_secret(
    call: str, nth: int, when: str
) -> None:
    world, target = reporting()
    old = await rotate(world, target)
    world.clock.advance(timedelta(hours=25))
    # Every write of the pass that reads the sync, finds none a day after the push, alerts and flags the target.
    world.faults.crash(call, when=when, nth=world.faults.counts[call] + nth)
    with pytest.raises(Crash):
        await timer(world, target)
    assert old in live(world, target) and world.violations == []
    await world.restart().advance(target.tenant_id, target.app_id, Actor.TIMER)
    assert old in live(world, target), "still no sync after the push"
    assert "sync-not-confirmed" in world.alerter.conditions()
    assert world.row(target).observed.needs_human.startswith("sync-not-confirmed")
    assert world.sync(target, "proofpoint")
    await world.engine().advance(target.tenant_id, target.app_id, Actor.TIMER)
    assert old not in live(world, target)
    assert world.converged(target) == [] and world.row(target).observed.needs_human == ""
