"""Offboarding from the API / dashboard removes the MSP app's service principal through the partner admin's dashboard
sign-in (GET /api/onboarding/signin: authorization code with PKCE, its session kept in Key Vault under the run it
made), as `python -m shared offboard --sign-in` does through GDAP: over real HTTPS against the sandbox's Entra ID,
Graph and GDAP relationships, and Azurite. Refusals name the cause and the fix and change nothing."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

import pytest

from sandbox.gdap import APP_ADMIN_GROUP, PRIVILEGED_GROUP, customers_seed
from tests.api.conftest import Api, ids
from tests.api.test_partner_signin import PARTNER, callback, entra, start
from tests.rotation.conftest import Customer, World

pytestmark = pytest.mark.sandbox


def gdap_customer(world: World, n: int, roles: tuple[str, ...] = ("Application Administrator",
                                                                  "Privileged Role Administrator")) -> Customer:
    """A customer under GDAP with the MSP app installed (its Graph permission, the delegated scopes the partner
    admin's calls need) and owner of its Proofpoint app; the relationship gives `roles`."""
    doc = customers_seed(1, start=n)
    groups = {"Application Administrator": APP_ADMIN_GROUP, "Privileged Role Administrator": PRIVILEGED_GROUP}
    relationship = doc["gdap"]["relationships"][0]
    relationship["roles"] = list(roles)
    relationship["accessAssignments"] = [{"group": groups[r], "roles": [r]} for r in roles]
    world.sb.control.seed(doc)
    tenant = doc["tenants"][0]["id"]
    app = next(t for t in world.sb.control.state()["tenants"] if t["id"] == tenant)["applications"][0]
    world.sb.control.seed({"tenants": [{"id": tenant, "grants": [{"appId": "msp-app",
                                                                  "roles": ["Application.ReadWrite.OwnedBy"]}],
                                        "delegatedGrants": {"msp-app": ["Application.ReadWrite.All",
                                                                        "Domain.Read.All"]},
                                        "applications": [{"appId": app["appId"], "owners": ["msp-app"]}]}]})
    return Customer(f"Gdap{n}", tenant, app["appId"], app["id"], "", "", f"customer{n:04d}.example")


async def signed_in(api: Api, world: World) -> str:
    """The partner admin signed in on the dashboard: the run holding the session."""
    answer = entra(world, (await start(api))["_url"], PARTNER)
    reply = await callback(api, answer.params)
    assert reply.status == 303, reply.text
    return str(reply.headers["Location"].rsplit("/", 1)[1])


def msp_principals(world: World, tenant: str) -> list[dict[str, Any]]:
    msp = world.sb.control.msp()["appId"]
    found = next(t for t in world.sb.control.state()["tenants"] if t["id"] == tenant)
    return [s for s in found.get("servicePrincipals", []) if s["appId"] == msp]


async def test_the_dashboard_s_partner_sign_in_removes_the_msp_app_audited_with_the_admin(
        api: Api, world: World, svc) -> None:  # type: ignore[no-untyped-def]
    c = gdap_customer(world, 7201)
    assert (await api.put(c)).status == 201
    assert msp_principals(world, c.tenant_id)
    run_id = await signed_in(api, world)

    reply = await api.call("offboard_target", "POST", ids(c),
                           {"removeOwner": True, "removeApp": True, "partnerRun": run_id})

    assert reply.status == 200, reply.text
    steps = {s["name"]: s for s in reply.body["steps"]}
    assert steps["owner"]["outcome"] == "done"
    assert steps["app"]["outcome"] == "done" and steps["app"]["command"] is None
    assert PARTNER in steps["app"]["detail"]
    assert msp_principals(world, c.tenant_id) == []
    assert (await api.call("target", "GET", ids(c))).code == "TargetNotFound"
    events = [e for e in await svc.state.events(c.tenant_id, c.app_id) if e.step == "offboard"]
    app_event = next(e for e in events if e.outcome.startswith("app:"))
    assert app_event.outcome == "app: done" and PARTNER in app_event.detail
    assert app_event.actor == "manual:operator@msp.example"  # the dashboard's operator, the partner admin named
    # nothing secret: the kept session's refresh token is in Key Vault only
    kept = world.sb.control.state()["keyvault"]["secrets"][f"onboarding-session-{run_id}"]
    refresh = json.loads(kept[-1]["value"])["refreshToken"]
    assert refresh not in reply.text and refresh not in json.dumps([e.detail for e in events])
    assert refresh not in json.dumps(await svc.state.all_rows(), default=str)
    # the sign-in serves the next customer too, until it expires or is forgotten
    other = gdap_customer(world, 7202)
    assert (await api.put(other)).status == 201
    again = await api.call("offboard_target", "POST", ids(other), {"removeApp": True, "partnerRun": run_id})
    assert again.status == 200 and {s["name"]: s for s in again.body["steps"]}["app"]["outcome"] == "done"


async def test_a_refusal_names_the_cause_and_the_fix_and_changes_nothing(api: Api, world: World) -> None:
    no_role = gdap_customer(world, 7203, roles=("Privileged Role Administrator",))
    no_gdap = world.seed_customer("Direct", 200)  # consented by its own admin: no relationship with the partner
    for c in (no_role, no_gdap):
        assert (await api.put(c)).status == 201
    run_id = await signed_in(api, world)

    refused = await api.call("offboard_target", "POST", ids(no_role), {"removeApp": True, "partnerRun": run_id})
    assert (refused.status, refused.code) == (409, "GdapRoleMissing"), refused.text
    message = refused.body["error"]["message"]
    assert "Cloud Application Administrator" in message and "Privileged Role Administrator" in message
    assert "Fix: add Cloud Application Administrator" in message and PARTNER in message

    refused = await api.call("offboard_target", "POST", ids(no_gdap), {"removeApp": True, "partnerRun": run_id})
    assert (refused.status, refused.code) == (409, "NoGdapRelationship"), refused.text
    assert "command" in refused.body["error"]["message"]  # the fix: offboard without it, the admin's command

    for c in (no_role, no_gdap):  # nothing changed: registered, enabled, still owned, the MSP app still there
        got = await api.call("target", "GET", ids(c))
        assert got.status == 200 and got.body["enabled"] is True
    assert msp_principals(world, no_role.tenant_id)

    bad = [({"removeApp": True, "partnerRun": "x"}, 422, "InvalidRequest"),
           ({"removeApp": True, "partnerRun": 7}, 422, "InvalidRequest"),
           ({"partnerRun": run_id}, 422, "InvalidRequest"),  # a sign-in serves only to remove the app
           ({"removeApp": True, "partnerRun": "0" * 32}, 404, "RunNotFound")]
    for body, status, code in bad:
        reply = await api.call("offboard_target", "POST", ids(no_role), body)
        assert (reply.status, reply.code) == (status, code), (body, reply.text)

    forgotten = await api.call("onboarding_session", "DELETE", {"runId": run_id})
    assert forgotten.status == 204
    gone = await api.call("offboard_target", "POST", ids(no_role), {"removeApp": True, "partnerRun": run_id})
    assert (gone.status, gone.code) == (404, "PartnerSessionNotFound")
    assert "sign in again" in gone.body["error"]["message"]
    assert (await api.call("target", "GET", ids(no_role))).body["enabled"] is True


async def test_another_target_of_the_tenant_keeps_the_app_without_asking_the_partner(api: Api, world: World) -> None:
    """The MSP app stays while another target of the tenant needs it: no refusal for a role it would not use."""
    c = gdap_customer(world, 7204, roles=("Privileged Role Administrator",))
    second = Customer("Second", c.tenant_id, "5ec0d000-0000-4000-8000-000000007204", "", "", "", c.domain)
    world.sb.control.seed({"tenants": [{"id": c.tenant_id, "applications": [
        {"appId": second.app_id, "displayName": "PPE second", "owners": ["msp-app"],
         "passwordCredentials": [{"displayName": "PPE sync", "endDateTime": "+200d"}]}]}]})
    for t in (c, second):
        assert (await api.put(t)).status == 201, t
    run_id = await signed_in(api, world)
    reply = await api.call("offboard_target", "POST", ids(c), {"removeApp": True, "partnerRun": run_id})
    assert reply.status == 200, reply.text
    assert {s["name"]: s for s in reply.body["steps"]}["app"]["outcome"] == "skipped"
    assert msp_principals(world, c.tenant_id)


async def test_a_sign_in_past_its_lifetime_or_a_run_without_one_changes_nothing(
        api: Api, world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """The kept session's Key Vault expiry is the rotator's to enforce (Key Vault still answers a secret past `exp`):
    9 hours after the sign-in (kept 8) the offboarding is refused before anything changes; so is a run that never
    kept a session (a command-line run without --keep-session: a row, no secret)."""
    from shared import bootstrap
    from shared.bulk_onboarding import Run
    from shared.clock import SystemClock
    from shared.ports import InstallMethod

    c = gdap_customer(world, 7205)
    assert (await api.put(c)).status == 201
    run_id = await signed_in(api, world)
    monkeypatch.setitem(bootstrap.DEFAULTS, "clock", SystemClock(timedelta(hours=9)))
    late = await api.call("offboard_target", "POST", ids(c), {"removeApp": True, "partnerRun": run_id})
    assert (late.status, late.code) == (404, "PartnerSessionNotFound"), late.text
    monkeypatch.setitem(bootstrap.DEFAULTS, "clock", SystemClock())

    async with bootstrap.invocation_services() as svc:
        cli_run = Run(uuid.uuid4().hex, PARTNER, "Partner Admin", InstallMethod.GRAPH, False, svc.engine.clock.now())
        await svc.bulk_onboarding().runs.create_run(cli_run)
    bare = await api.call("offboard_target", "POST", ids(c), {"removeApp": True, "partnerRun": cli_run.run_id})
    assert (bare.status, bare.code) == (404, "PartnerSessionNotFound"), bare.text

    got = await api.call("target", "GET", ids(c))
    assert got.status == 200 and got.body["enabled"] is True
    assert msp_principals(world, c.tenant_id)
