"""Issue 9 parts 3, 5, 6 through the real adapters against a sandbox that behaves as Graph does.

Ownership (OwnedBy reads every app; only writes need ownership), the tenant's app-management policies
(password addition blocked, lifetime capped) and a newer secret someone else put on the app.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from shared.alerts import LogAlerter
from shared.domain import Actor, Stage
from shared.registry import status_document
from tests.rotation.conftest import Customer, Rotator, World

MSP_APP_NAME = "Sync-secret rotator (MSP)"
BLOCKED = "Credential type not allowed as per assigned policy"


async def register(svc: Any, *customers: Customer) -> None:
    for c in customers:
        await svc.state.create_target(c.target())


def rotator_made(world: World, customer: Customer) -> list[dict[str, Any]]:
    return [c for c in world.credentials(customer) if "rotation" in (c["displayName"] or "")]


def msp_principal(world: World, customer: Customer) -> dict[str, Any]:
    tenant = next(t for t in world.sb.control.state()["tenants"] if t["id"] == customer.tenant_id)
    msp_app = world.sb.settings["MSP_APP_CLIENT_ID"]
    return dict(next(sp for sp in tenant["servicePrincipals"] if sp["appId"] == msp_app))


def block_passwords(world: World, customer: Customer) -> None:
    world.sb.control.seed({"tenants": [{"id": customer.tenant_id, "defaultAppManagementPolicy": {
        "isEnabled": True, "applicationRestrictions": {"passwordCredentials": [
            {"restrictionType": "passwordAddition", "maxLifetime": None,
             "restrictForAppsCreatedAfterDateTime": None}]}}}]})


def lifetime_days_of(credential: dict[str, Any]) -> float:
    start = datetime.fromisoformat(credential["startDateTime"].replace("Z", "+00:00"))
    end = datetime.fromisoformat(credential["endDateTime"].replace("Z", "+00:00"))
    return (end - start) / timedelta(days=1)


async def test_an_app_the_rotator_does_not_own_is_not_owner_and_names_the_principal(
    world: World, rotator: Rotator
) -> None:
    """OwnedBy reads the app (so it is not 'app-not-found'); the owners list tells the rotator it cannot write."""
    lost = world.seed_customer("Adatum", 5, owned=False)
    principal = msp_principal(world, lost)
    alerter = LogAlerter()
    async with rotator(alerter=alerter) as svc:
        await register(svc, lost)
        preview = await svc.engine.rotate_now(lost.tenant_id, lost.app_id, dry_run=True)
        assert (preview.result, preview.status) == ("would-fail", "not-owner"), preview
        outcome = await svc.engine.advance(lost.tenant_id, lost.app_id, Actor.TIMER)
        assert (outcome.result, outcome.status) == ("not-owner", "not-owner"), outcome
        target, _ = await svc.state.get_target(lost.tenant_id, lost.app_id)
    assert target.state.stage is Stage.IDLE and target.observed.status == "not-owner"
    for text in (target.observed.error_message, preview.message):
        assert principal["id"] in text and MSP_APP_NAME in text and principal["appId"] in text
    alert = next(a for a in alerter.raised if a.condition == "not-owner")
    assert alert.details["owner_to_add"] == principal["id"] and principal["id"] in alert.message
    assert world.credentials(lost) == [c for c in world.credentials(lost) if c["keyId"] == lost.key_id]


async def test_a_write_refused_for_ownership_is_not_owner_and_creates_nothing(world: World, rotator: Rotator) -> None:
    """Ownership removed between the check and the write: Graph's 403 on addPassword says the same."""
    due = world.seed_customer("Racing", 5)
    world.sb.control.add_fault("graph", method="POST", path=".*/addPassword", status=403,
                               code="Authorization_RequestDenied",
                               message="Insufficient privileges to complete the operation.")
    async with rotator() as svc:
        await register(svc, due)
        outcome = await svc.engine.advance(due.tenant_id, due.app_id, Actor.TIMER)
        target, _ = await svc.state.get_target(due.tenant_id, due.app_id)
    assert (outcome.result, target.observed.status, target.state.stage) == ("not-owner", "not-owner", Stage.IDLE)
    assert not rotator_made(world, due)


async def test_a_policy_blocking_passwords_is_policy_blocked_with_its_message(world: World, rotator: Rotator) -> None:
    blocked = world.seed_customer("Tailspin", 5)
    block_passwords(world, blocked)
    alerter = LogAlerter()
    async with rotator(alerter=alerter) as svc:
        await register(svc, blocked)
        outcome = await svc.engine.advance(blocked.tenant_id, blocked.app_id, Actor.TIMER)
        assert (outcome.result, outcome.status) == ("policy-blocked", "policy-blocked"), outcome
        target, _ = await svc.state.get_target(blocked.tenant_id, blocked.app_id)
        preview = await svc.engine.rotate_now(blocked.tenant_id, blocked.app_id, dry_run=True)
    assert target.state.stage is Stage.IDLE and target.observed.status == "policy-blocked"
    assert BLOCKED in target.observed.error_message
    assert status_document(target)["status"] == "policy-blocked"
    assert (preview.result, preview.status) == ("would-fail", "policy-blocked") and BLOCKED in preview.message
    alert = next(a for a in alerter.raised if a.condition == "policy-blocked")
    assert BLOCKED in alert.message
    assert not rotator_made(world, blocked) and len(world.credentials(blocked)) == 1


async def test_a_capped_lifetime_is_retried_shorter_at_once_recorded_and_alerted(
    world: World, rotator: Rotator
) -> None:
    capped = world.seed_customer("Strict", 5, max_lifetime_days=100)
    alerter = LogAlerter()
    async with rotator(alerter=alerter, SECRET_LIFETIME_DAYS="180", RENEW_BEFORE_DAYS="30") as svc:
        await register(svc, capped)
        outcome = await svc.engine.advance(capped.tenant_id, capped.app_id, Actor.TIMER)
        assert outcome.result == "rotated", outcome
        target, _ = await svc.state.get_target(capped.tenant_id, capped.app_id)
        events = await svc.state.events(capped.tenant_id, capped.app_id)
        preview = await svc.engine.rotate_now(capped.tenant_id, capped.app_id, force=True, dry_run=True)
    made = rotator_made(world, capped)
    assert len(made) == 1 and 89 < lifetime_days_of(made[0]) <= 90
    assert target.observed.lifetime_cap_days == 90 and status_document(target)["lifetimeCapDays"] == 90
    refused = [e for e in events if e.step == "create" and e.error_code == "CredentialInvalidLifetimeAsPerAppPolicy"]
    assert len(refused) == 1 and "180" in refused[0].detail
    alert = next(a for a in alerter.raised if a.condition == "lifetime-capped")
    assert "180" in alert.message and "90" in alert.message
    assert "90 days" in preview.message


async def test_a_lifetime_cap_below_the_renew_window_is_policy_blocked(world: World, rotator: Rotator) -> None:
    tight = world.seed_customer("Tight", 5, max_lifetime_days=20)
    async with rotator(SECRET_LIFETIME_DAYS="180", RENEW_BEFORE_DAYS="30") as svc:
        await register(svc, tight)
        outcome = await svc.engine.advance(tight.tenant_id, tight.app_id, Actor.TIMER)
        target, _ = await svc.state.get_target(tight.tenant_id, tight.app_id)
    assert (outcome.result, target.observed.status) == ("policy-blocked", "policy-blocked"), outcome
    assert "RENEW_BEFORE_DAYS" in target.observed.error_message or "renew" in target.observed.error_message
    assert not rotator_made(world, tight)


async def test_a_newer_secret_made_elsewhere_is_kept_reported_and_not_fought(world: World, rotator: Rotator) -> None:
    due = world.seed_customer("Wingtip", 5)
    alerter = LogAlerter()
    async with rotator(alerter=alerter, RETIRE_GRACE_HOURS="0") as svc:
        await register(svc, due)
        assert (await svc.engine.advance(due.tenant_id, due.app_id, Actor.TIMER)).result == "rotated"
        ours, _ = await svc.state.get_target(due.tenant_id, due.app_id)
        # The portal's FIX (or a person) adds a secret of its own, and pastes it into Proofpoint.
        fix_key = "f1c50000-0000-4000-8000-000000000001"
        world.sb.control.seed({"tenants": [{"id": due.tenant_id, "applications": [{
            "appId": due.app_id, "passwordCredentials": [
                {"keyId": fix_key, "displayName": "Vircom Portal FIX", "startDateTime": "+1m",
                 "endDateTime": "+700d"}]}]}]})
        for _ in range(2):
            outcome = await svc.engine.advance(due.tenant_id, due.app_id, Actor.TIMER)
            assert (outcome.result, outcome.status) == ("foreign-credential", "foreign-credential"), outcome
        forced = await svc.engine.rotate_now(due.tenant_id, due.app_id, force=True, dry_run=True)
        target, _ = await svc.state.get_target(due.tenant_id, due.app_id)
    keys = [c["keyId"] for c in world.credentials(due)]
    assert fix_key in keys and ours.state.current_key_id in keys, "neither the foreign nor our secret is removed"
    assert len(rotator_made(world, due)) == 1, "no rotation to fight the foreign secret"
    assert target.observed.days_left in (699, 700) and forced.status == "foreign-credential"
    doc = status_document(target)
    assert doc["status"] == "foreign-credential" and fix_key in doc["error"]["message"]
    alert = next(a for a in alerter.raised if a.condition == "foreign-credential")
    assert alert.details["key_id"] == fix_key


async def test_status_command_shows_not_owner_and_policy_blocked(world: World, rotator: Rotator) -> None:
    lost = world.seed_customer("Adatum", 5, owned=False)
    blocked = world.seed_customer("Tailspin", 5)
    block_passwords(world, blocked)
    async with rotator() as svc:
        await register(svc, lost, blocked)
    # The policy shows only when addPassword is refused (reading it needs Policy.Read.All): a pass, not a check.
    run = world.cli("run")
    run.communicate(timeout=120)
    status = world.cli("status")
    status.communicate(timeout=120)
    out = status.output()  # the CLI's stdout and stderr, written to a file (tests/rotation/conftest.Rotating)
    assert status.returncode == 0, out
    lines = out.splitlines()
    assert any("Adatum" in line and "not-owner" in line for line in lines), out
    assert any("Tailspin" in line and "policy-blocked" in line for line in lines), out
