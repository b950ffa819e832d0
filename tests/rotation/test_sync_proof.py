"""Retire on Proofpoint's own proof: the old secret goes only once Proofpoint's sync ran with the new one."""

from __future__ import annotations

from datetime import timedelta

from shared.alerts import LogAlerter
from shared.domain import Actor
from shared.registry import status_document
from tests.rotation.conftest import Customer, Rotator, World
from tests.rotation.test_push_retire import org, setup

DAY_AND_AN_HOUR = timedelta(hours=25)


def live_key_ids(world: World, customer: Customer) -> list[str]:
    return [k["keyId"] for k in world.credentials(customer)]


async def status(rotator: Rotator, customer: Customer, offset: timedelta = timedelta(0)) -> dict[str, object]:
    async with rotator(offset) as svc:
        target, _ = await svc.state.get_target(customer.tenant_id, customer.app_id)
    return status_document(target)


def proofpoint_status(doc: dict[str, object]) -> dict[str, object]:
    destinations = doc["destinations"]
    assert isinstance(destinations, list)
    found: dict[str, object] = next(d for d in destinations if d["name"] == "proofpoint")
    return found


async def test_the_old_secret_is_kept_until_proofpoints_sync_runs_after_the_push(
    world: World, rotator: Rotator, put_semantics: str
) -> None:
    due = world.seed_customer("Synced", 12)
    await setup(world, rotator, due)
    async with rotator(RETIRE_GRACE_HOURS="0") as svc:
        summary = await svc.engine.run_pass(Actor.TIMER)
    assert [o.result for o in summary.outcomes] == ["rotated"]
    # Proofpoint took the key, but its own sync has not run with it: the grace period is over, the old one stays.
    assert due.key_id in live_key_ids(world, due)
    doc = await status(rotator, due)
    pp = proofpoint_status(doc)
    assert pp["sync"] == "waiting"
    assert pp["confirmation"] == ["application-id", "ad-key-present", "settings-kept", "sync-reported"]
    assert not doc["needsHuman"]

    world.sb.control.set_clock(DAY_AND_AN_HOUR.total_seconds())  # Proofpoint's daily sync ran, with the new key
    assert org(world, due)["lastSyncStatus"] == "success"
    async with rotator(DAY_AND_AN_HOUR, RETIRE_GRACE_HOURS="0") as svc:
        await svc.engine.run_pass(Actor.TIMER)
    remaining = live_key_ids(world, due)
    assert due.key_id not in remaining and len(remaining) == 1
    pp = proofpoint_status(await status(rotator, due, DAY_AND_AN_HOUR))
    assert pp["sync"] == "confirmed" and pp["syncedAt"] is not None


async def test_no_sync_a_day_after_the_push_keeps_the_old_secret_alerts_and_shows_it(
    world: World, rotator: Rotator
) -> None:
    due = world.seed_customer("Unsynced", 12)
    # Proofpoint's next sync is a month away (or keeps failing): nothing proves it uses the new secret.
    world.sb.control.seed({"proofpoint": {"orgs": [{"domain": due.domain, "stack": due.stack,
                                                    "tenantId": due.tenant_id, "nextSync": "+30d",
                                                    "settings": {"application_id": due.app_id,
                                                                 "ad_key": due.secret},
                                                    "extraFields": {"last_successful_sync": "-2h"}}]}})
    await setup(world, rotator, due)
    alerter = LogAlerter()
    async with rotator(alerter=alerter, RETIRE_GRACE_HOURS="0") as svc:
        await svc.engine.run_pass(Actor.TIMER)
    async with rotator(timedelta(hours=12), alerter=alerter, RETIRE_GRACE_HOURS="0") as svc:
        await svc.engine.run_pass(Actor.TIMER)
    assert not [a for a in alerter.raised if a.condition == "sync-not-confirmed"], "not within the day"

    world.sb.control.set_clock(DAY_AND_AN_HOUR.total_seconds())
    for _ in range(2):  # alerted once, however many passes see it
        async with rotator(DAY_AND_AN_HOUR, alerter=alerter, RETIRE_GRACE_HOURS="0") as svc:
            await svc.engine.run_pass(Actor.TIMER)
    assert due.key_id in live_key_ids(world, due), "the old secret is kept"
    [alert] = [a for a in alerter.raised if a.condition == "sync-not-confirmed"]
    assert alert.details["destinations"] == "proofpoint" and "the old secret is kept" in alert.message
    doc = await status(rotator, due, DAY_AND_AN_HOUR)
    assert str(doc["needsHuman"]).startswith("sync-not-confirmed: proofpoint")
    assert proofpoint_status(doc)["sync"] == "waiting"

    # Someone presses "sync now" in Proofpoint: it works with the new key, the next pass retires and clears.
    [result] = [r for r in world.sb.control.proofpoint_sync() if r["domain"] == due.domain]
    assert result["ok"], result
    async with rotator(DAY_AND_AN_HOUR + timedelta(minutes=1), alerter=alerter, RETIRE_GRACE_HOURS="0") as svc:
        await svc.engine.run_pass(Actor.TIMER)
    assert due.key_id not in live_key_ids(world, due)
    doc = await status(rotator, due, DAY_AND_AN_HOUR)
    assert doc["needsHuman"] is None and proofpoint_status(doc)["sync"] == "confirmed"


async def test_where_proofpoint_reports_no_sync_the_read_back_is_the_proof(world: World, rotator: Rotator) -> None:
    due = world.seed_customer("Silent", 12)
    world.sb.control.seed({"proofpoint": {"orgs": [{"domain": due.domain, "stack": due.stack,
                                                    "tenantId": due.tenant_id, "reportsSync": False,
                                                    "settings": {"application_id": due.app_id,
                                                                 "ad_key": due.secret}}]}})
    await setup(world, rotator, due)
    async with rotator(RETIRE_GRACE_HOURS="0") as svc:
        await svc.engine.run_pass(Actor.TIMER)
    assert due.key_id not in live_key_ids(world, due)
    pp = proofpoint_status(await status(rotator, due))
    assert pp["sync"] == "not-reported"
    assert pp["confirmation"] == ["application-id", "ad-key-present", "settings-kept"]
