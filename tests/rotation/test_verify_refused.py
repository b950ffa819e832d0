"""The verify step against the sandbox's Entra with the real azure-identity client: a refusal other than
propagation (a disabled app, Conditional Access) ends the attempt after one token request, needing a human; the new
credential waits in Entra ID and in Key Vault as `pending`, nothing reaches a destination, the old secret still works;
once the cause is fixed, the next resume pass finishes the rotation."""

from __future__ import annotations

from typing import Any

import pytest

from shared.alerts import LogAlerter
from shared.domain import Actor, Secret, Stage
from tests.rotation.conftest import Customer, Rotator, World
from tests.rotation.test_push_retire import assert_delivered_everywhere, org, portal_secrets, setup

DISABLED = {"servicePrincipals": [{"accountEnabled": False}]}
ENABLED = {"servicePrincipals": [{"accountEnabled": True}]}


def conditional_access(c: Customer, state: str) -> dict[str, Any]:
    return {"conditionalAccessPolicies": [{
        "displayName": "Block workload identities", "state": state,
        "conditions": {"clientApplications": {"includeServicePrincipals": [c.app_id]}},
        "grantControls": {"operator": "OR", "builtInControls": ["block"]}}]}


def tenant_doc(c: Customer, doc: dict[str, Any]) -> dict[str, Any]:
    if "servicePrincipals" in doc:
        doc = {"servicePrincipals": [{**sp, "appId": c.app_id} for sp in doc["servicePrincipals"]]}
    return {"tenants": [{"id": c.tenant_id, **doc}]}


def token_requests_counter(world: World, c: Customer) -> None:
    """Lets the first 1000 token requests of the customer's app through, counting them (the `skip` of a fault)."""
    world.sb.control.add_fault("entra", method="POST", path="/token$", client_id=c.app_id, skip=1000, status=500,
                               count=None)


def token_requests(world: World) -> int:
    (fault,) = world.sb.control.faults()
    return 1000 - int(fault["skip"])


@pytest.mark.parametrize(("refused", "fixed", "code"), [
    ("disabled", "enabled", "AADSTS7000112"),
    ("blocked", "report-only", "AADSTS53003"),
])
async def test_a_refused_new_secret_needs_a_human_at_once_and_goes_on_once_fixed(
    world: World, rotator: Rotator, refused: str, fixed: str, code: str,
) -> None:
    c = world.seed_customer(f"Refused{code[-4:]}", 10)
    await setup(world, rotator, c)
    docs = {"disabled": DISABLED, "enabled": ENABLED, "blocked": conditional_access(c, "enabled"),
            "report-only": conditional_access(c, "enabledForReportingButNotEnforced")}
    world.sb.control.seed(tenant_doc(c, docs[refused]))
    token_requests_counter(world, c)
    alerter = LogAlerter()
    async with rotator(alerter=alerter, VERIFY_TIMEOUT_SECONDS="120") as svc:
        outcome = await svc.engine.advance(c.tenant_id, c.app_id, Actor.TIMER)
        target, _ = await svc.state.get_target(c.tenant_id, c.app_id)
        events = await svc.state.events(c.tenant_id, c.app_id, limit=50)
        pending_value = await svc.secrets.value(target, target.state.new_version)
    assert (outcome.result, outcome.error_code) == ("unverified", code)
    assert token_requests(world) == 1, "one token request, not a loop"
    assert target.state.stage is Stage.PENDING and target.observed.error_code == code
    assert target.observed.needs_human.startswith(f"verify-refused: Entra ID refused the new secret: {code}: ")
    (alert,) = [a for a in alerter.raised if a.condition == "verify-refused"]
    assert alert.details["error_code"] == code and code in alert.message
    assert pending_value.reveal() not in alert.message + repr(target) + repr(events)
    assert [(e.step, e.outcome, e.error_code) for e in events if e.step == "verify"] == \
        [("verify", "verify-refused", code)]
    # Nothing else happened: the new credential is in Entra ID and Key Vault (`pending`), no destination has it.
    keys = {cred["keyId"] for cred in world.credentials(c)}
    assert {c.key_id, target.state.new_key_id} <= keys
    (pending,) = [v for v in world.versions(c) if v["tags"].get("stage") == "pending"]
    assert pending["value"] == pending_value.reveal()
    assert org(world, c)["settings"].get("ad_key") != pending_value.reveal()
    assert pending_value.reveal() not in portal_secrets(world, c)

    world.sb.control.seed(tenant_doc(c, docs[fixed]))
    async with rotator(RETIRE_GRACE_HOURS="0") as svc:
        summary = await svc.engine.resume_pass()
    assert summary.by_result == {"rotated": 1}
    assert token_requests(world) == 2
    await assert_delivered_everywhere(world, rotator, c)
    async with rotator() as svc:
        done, _ = await svc.state.get_target(c.tenant_id, c.app_id)
        assert done.observed.needs_human == "" and done.observed.error_code == ""
        assert await svc.engine.probe.try_token(c.tenant_id, c.app_id, Secret(pending_value.reveal())) is None


async def test_an_expired_secret_is_refused_as_entra_refuses_it(world: World, rotator: Rotator) -> None:
    """The probe's view of the sandbox's refusals: the code and Entra's first sentence, never the secret."""
    c = world.seed_customer("Probe", -3)  # its only secret expired three days ago
    async with rotator() as svc:
        refusal = await svc.engine.probe.try_token(c.tenant_id, c.app_id, Secret(c.secret))
        wrong = await svc.engine.probe.try_token(c.tenant_id, c.app_id, Secret("not-the-secret"))
    assert refusal is not None and refusal.code == "AADSTS7000222" and not refusal.not_propagated
    assert refusal.message == f"AADSTS7000222: The provided client secret keys for app '{c.app_id}' are expired."
    assert wrong is not None and wrong.not_propagated
    assert wrong.message == "AADSTS7000215: Invalid client secret provided."
    assert c.secret not in refusal.message



@pytest.mark.parametrize(("status", "error", "description"), [
    (400, "unauthorized_client", "AADSTS700016: Application with identifier '{app}' was not found in the directory "
     "'Contoso'. This can happen if the application has not been installed by the administrator of the tenant."),
    (401, "invalid_client", "AADSTS7000222: The provided client secret keys for app '{app}' are expired. Visit the "
     "Azure portal to create new keys for your app."),
    (400, "invalid_request", "AADSTS90002: Tenant '{tenant}' not found. Check to make sure you have the correct "
     "tenant ID and are signing into the correct cloud."),
    (401, "invalid_client", "AADSTS7000218: The request body must contain the following parameter: "
     "'client_assertion' or 'client_secret'."),
])
async def test_any_other_refusal_from_entra_ends_after_one_token_request(
    world: World, rotator: Rotator, status: int, error: str, description: str,
) -> None:
    """Entra's other refusals, played by the sandbox's fault API in Entra's error format, for the first token request
    only: a second request would get a token (the secret works), so ending `unverified` proves there was one."""
    c = world.seed_customer("Other", 10)
    await setup(world, rotator, c)
    code = description.split(":")[0]
    world.sb.control.add_fault("entra", method="POST", path="/token$", client_id=c.app_id, status=status,
                               code=error, message=description.format(app=c.app_id, tenant=c.tenant_id), count=1)
    alerter = LogAlerter()
    async with rotator(alerter=alerter, VERIFY_TIMEOUT_SECONDS="120") as svc:
        outcome = await svc.engine.advance(c.tenant_id, c.app_id, Actor.TIMER)
        target, _ = await svc.state.get_target(c.tenant_id, c.app_id)
    assert (outcome.result, outcome.error_code) == ("unverified", code)
    assert world.sb.control.faults() == [], "the refusal was served"
    assert target.state.stage is Stage.PENDING and target.observed.error_code == code
    assert [a.details["error_code"] for a in alerter.raised if a.condition == "verify-refused"] == [code]
    assert outcome.message.endswith(".") and "Trace ID" not in outcome.message  # Entra's first sentence only
