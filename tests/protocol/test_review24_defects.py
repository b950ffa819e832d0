"""Review of issue 24 (branch review24): defects found, as tests that fail on main b156fc0 (xfail strict: remove the
marker when fixed)."""
from __future__ import annotations

from datetime import timedelta

from shared.registry import status_document
from shared.service import StatusPolicy, open_alerts
from shared.sign_in_proof import OLD_KEY_STILL_USED
from tests.fakes import rotation_error
from tests.protocol.test_sign_in_evidence import NOT_LICENSED, evidence_world, live, rotate, timer


async def test_probe_persistent_read_failure_tells_a_human() -> None:
    world, target = evidence_world(retire_grace=timedelta(hours=1))
    old = await rotate(world, target)
    world.clock.advance(timedelta(hours=1))
    world.sync(target, "proofpoint")
    world.faults.add("sign_ins.read", rotation_error("BadRequest"), nth=world.faults.counts["sign_ins.read"] + 1,
                     times=1000)
    for _ in range(5):
        world.clock.advance(timedelta(days=1))
        await timer(world, target)
    assert old in live(world, target), "kept five days on failed reads"
    row = world.row(target)
    told = world.alerter.conditions() or open_alerts(row, StatusPolicy(), world.clock.now())
    assert told or status_document(row).get("needsHuman"), "nobody told"


async def test_probe_refusal_after_hold_drops_a_key_in_use() -> None:
    world, target = evidence_world(retire_grace=timedelta(hours=1))
    world.destination.reports_sync.add("proofpoint")
    old = await rotate(world, target)
    world.clock.advance(timedelta(minutes=30))
    assert world.sync(target, "proofpoint")
    world.clock.advance(timedelta(hours=1))
    world.sign_ins.sign_in(target.tenant_id, target.app_id, old, ip="192.0.2.55")
    await timer(world, target)
    assert OLD_KEY_STILL_USED in world.alerter.conditions()
    world.sign_ins.refusal = NOT_LICENSED  # licence lapses / consent withdrawn
    world.clock.advance(timedelta(hours=1))
    world.sign_ins.sign_in(target.tenant_id, target.app_id, old, ip="192.0.2.55")
    await timer(world, target)
    assert old in live(world, target), "a key last seen in use was removed on the fallback"


async def test_probe_daily_consumer_of_old_key_is_not_judged_quiet() -> None:
    # A forgotten integration signs in with the old key once a day, a minute before the timer; Entra's log lags 2 min.
    world, target = evidence_world(retire_grace=timedelta(hours=24))
    world.sign_ins.delay = timedelta(minutes=2)
    t0 = world.clock.now()
    world.sign_ins.sign_in(target.tenant_id, target.app_id,
                           world.directory.live(target.tenant_id, target.app_id)[0].key_id,
                           ip="192.0.2.55", at=t0 - timedelta(minutes=1))
    old = await rotate(world, target)
    world.clock.advance(timedelta(hours=2))
    assert world.sync(target, "proofpoint")  # Proofpoint uses the new key
    world.clock.advance(timedelta(hours=22) - timedelta(minutes=1))
    world.sign_ins.sign_in(target.tenant_id, target.app_id, old, ip="192.0.2.55")  # the daily job, again
    world.clock.advance(timedelta(minutes=1))
    await timer(world, target)
    assert old in live(world, target), "an old key used every day was removed as quiet"


def test_probe_two_matching_keys_neither_the_rotators_is_drift() -> None:
    from datetime import UTC, datetime

    from shared.domain import Credential
    from tests.drift.test_find_drift import MINE, NOW, drift_of, settings
    one = Credential("k-hand1", "created by hand", NOW - timedelta(days=300), datetime(2027, 2, 1, 8, tzinfo=UTC))
    two = Credential("k-hand2", "created by hand", NOW - timedelta(days=200), datetime(2027, 2, 1, 20, tzinfo=UTC))
    _, problems = drift_of(settings("2027-02-01"), MINE, one, two)
    assert problems, "Proofpoint's expiry names no key of the rotator's: drift, whichever of the two it is"
