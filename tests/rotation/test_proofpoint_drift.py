"""A push that changes the org's other Proofpoint settings (drift) is never acknowledged: the destination is held
for a human, alerted as proofpoint-drift naming the fields, and the old secret stays until a human acknowledges."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from shared.alerts import LogAlerter
from shared.destinations import proofpoint as proofpoint_module
from shared.domain import Actor, Stage
from shared.errors import Conflict
from shared.registry import status_document
from shared.service import StatusPolicy, open_alerts
from tests.destinations.test_proofpoint import old_writable_body
from tests.rotation.conftest import Customer, Rotator, World
from tests.rotation.test_push_retire import DAY_AND_AN_HOUR, after_proofpoints_sync, org, setup


def with_tenant_id(world: World, customer: Customer) -> None:
    """The customer's org as Proofpoint may really show it: a field outside the public client's list."""
    world.sb.control.seed({"proofpoint": {"orgs": [{
        "domain": customer.domain, "stack": customer.stack, "tenantId": customer.tenant_id,
        "settings": {"application_id": customer.app_id, "ad_key": customer.secret},
        "extraFields": {"tenant_id": customer.tenant_id, "last_successful_sync": "-1h"}}]}})


async def test_the_former_body_under_a_full_replace_is_drift_held_alerted_and_retires_nothing(
    world: World, rotator: Rotator, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    due = world.seed_customer("Drifting", 12)
    with_tenant_id(world, due)
    world.sb.control.seed({"proofpoint": {"putSemantics": "replace"}})
    await setup(world, rotator, due)
    # The adapter's former body: only PSProofpoint's fifteen fields, tenant_id dropped.
    monkeypatch.setattr(proofpoint_module, "put_body", old_writable_body)
    alerter = LogAlerter()
    async with rotator(alerter=alerter, RETIRE_GRACE_HOURS="0") as svc:
        outcome = await svc.engine.advance(due.tenant_id, due.app_id, Actor.TIMER)
        target, _ = await svc.state.get_target(due.tenant_id, due.app_id)
        new_secret = (await svc.secrets.value(target, target.state.new_version)).reveal()
    assert outcome.result == "push-incomplete"
    assert target.state.stage is Stage.VERIFIED and "proofpoint" not in target.state.acks
    assert target.state.held == {"proofpoint": target.state.new_key_id}
    [alert] = [a for a in alerter.raised if a.condition == "proofpoint-drift"]
    assert alert.details["fields"] == "tenant_id" and "tenant_id dropped" in alert.message
    assert alert.details["error_code"] == "ProofpointDrift"
    assert "destination-failing" not in [a.condition for a in alerter.raised]
    assert "tenant_id" in target.observed.needs_human
    [pp] = [d for d in status_document(target)["destinations"] if d["name"] == "proofpoint"]
    assert pp["held"] is True and pp["acknowledged"] is False
    assert "proofpoint-drift" in open_alerts(target, StatusPolicy(), datetime.now(UTC))
    assert "destination-failing" not in open_alerts(target, StatusPolicy(), datetime.now(UTC))
    puts = len(org(world, due)["puts"])

    # Proofpoint's sync ran with the new key, the grace period is over: still nothing retired, nothing re-pushed
    # (a re-push would read the reset settings as the norm and confirm them).
    await after_proofpoints_sync(world, rotator, RETIRE_GRACE_HOURS="0")
    assert due.key_id in [k["keyId"] for k in world.credentials(due)], "the old secret stays live"
    assert len(org(world, due)["puts"]) == puts
    async with rotator(DAY_AND_AN_HOUR) as svc:
        target, _ = await svc.state.get_target(due.tenant_id, due.app_id)
    assert target.state.stage is Stage.VERIFIED and "proofpoint" not in target.state.acks

    # A human restored the settings in Proofpoint and acknowledges: the rotation finishes.
    async with rotator(DAY_AND_AN_HOUR, RETIRE_GRACE_HOURS="0") as svc:
        done = await svc.engine.acknowledge(due.tenant_id, due.app_id, "proofpoint", target.state.new_key_id)
    assert done.result == "rotated"
    for record in caplog.records:
        text = record.getMessage() + repr(record.__dict__)
        assert new_secret not in text and due.secret not in text and world.proofpoint_password not in text


@pytest.mark.parametrize("semantics", ["merge", "replace"])
async def test_the_adapter_keeps_tenant_id_under_either_semantics(
    world: World, rotator: Rotator, semantics: str
) -> None:
    due = world.seed_customer("Kept", 12)
    with_tenant_id(world, due)
    world.sb.control.seed({"proofpoint": {"putSemantics": semantics}})
    await setup(world, rotator, due)
    async with rotator() as svc:
        outcome = await svc.engine.advance(due.tenant_id, due.app_id, Actor.TIMER)
        target, _ = await svc.state.get_target(due.tenant_id, due.app_id)
    assert outcome.result == "rotated", outcome
    assert not target.state.held
    stored: dict[str, Any] = org(world, due)["settings"]
    assert stored["tenant_id"] == due.tenant_id


async def test_a_held_destination_is_the_only_non_notify_destination_a_human_may_acknowledge(
    world: World, rotator: Rotator
) -> None:
    due = world.seed_customer("NotHeld", 12)
    await setup(world, rotator, due)
    world.sb.control.add_fault("proofpoint", method="PUT", status=503, count=None)
    async with rotator() as svc:
        await svc.engine.advance(due.tenant_id, due.app_id, Actor.TIMER)
        target, _ = await svc.state.get_target(due.tenant_id, due.app_id)
        with pytest.raises(Conflict) as refused:
            await svc.engine.acknowledge(due.tenant_id, due.app_id, "proofpoint", target.state.new_key_id)
    assert refused.value.code == "NotNotifyOnly"


async def test_drift_is_still_caught_when_the_push_is_re_run_after_a_lost_answer(
    world: World, rotator: Rotator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first PUT is applied (tenant_id reset by the full replace) but its answer is lost: the re-run reads the
    # settings as the first PUT left them. Its read-back is compared with the settings recorded before that PUT.
    due = world.seed_customer("Crashed", 12)
    with_tenant_id(world, due)
    world.sb.control.seed({"proofpoint": {"putSemantics": "replace"}})
    await setup(world, rotator, due)
    monkeypatch.setattr(proofpoint_module, "put_body", old_writable_body)
    world.sb.control.add_fault("proofpoint", method="PUT", when="after", drop=True)
    alerter = LogAlerter()
    async with rotator(alerter=alerter) as svc:
        first = await svc.engine.advance(due.tenant_id, due.app_id, Actor.TIMER)
        target, _ = await svc.state.get_target(due.tenant_id, due.app_id)
        secret = (await svc.secrets.value(target, target.state.new_version)).reveal()
    assert first.result == "push-incomplete" and not target.state.held
    assert "tenant_id" not in org(world, due)["settings"]  # the first PUT took effect
    baseline = target.state.baselines["proofpoint"]
    assert baseline.key_id == target.state.new_key_id and baseline.settings["tenant_id"] == due.tenant_id
    stored = repr(baseline)
    assert secret not in stored and due.secret not in stored and world.proofpoint_password not in stored
    assert "ad_key" not in baseline.settings and "last_successful_sync" not in baseline.settings

    async with rotator(alerter=alerter) as svc:
        again = await svc.engine.advance(due.tenant_id, due.app_id, Actor.TIMER)
        target, _ = await svc.state.get_target(due.tenant_id, due.app_id)
    assert again.result == "push-incomplete"
    assert target.state.held == {"proofpoint": target.state.new_key_id}
    [alert] = [a for a in alerter.raised if a.condition == "proofpoint-drift"]
    assert alert.details["fields"] == "tenant_id"
    assert due.key_id in [k["keyId"] for k in world.credentials(due)], "the old secret stays live"
