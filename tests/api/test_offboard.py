"""POST /api/targets/{tenantId}/{appId}/offboard and `python -m shared offboard` / `retention-sweep`, over real HTTPS
against the sandbox (Graph's owner $ref, Key Vault's tags and soft delete) and Azurite."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime, timedelta

import azure.functions.timer as timer
import pytest

from sandbox.client import answer_device_code
from shared import bootstrap
from shared.clock import SystemClock
from shared.entrypoints.access import Role
from tests.api.conftest import WAIT, Api, functions, ids
from tests.rotation.conftest import Customer, Rotating, World


def owners(world: World, c: Customer) -> list[str]:
    return list(world.application(c)["owners"])


async def rotated(api: Api, world: World, name: str) -> Customer:
    """A registered customer rotated once: its app has the new and the old secret, Key Vault a version."""
    c = world.seed_customer(name, 10)
    assert (await api.put(c)).status == 201
    done = await api.call("rotations", "POST", body={"tenantId": c.tenant_id, "appId": c.app_id}, params=WAIT)
    assert done.status == 200 and done.body["result"] == "rotated", done.text
    return c


async def test_offboarding_stops_rotating_keeps_the_versions_removes_the_owner_and_audits(
    api: Api, world: World, svc  # type: ignore[no-untyped-def]
) -> None:
    c = await rotated(api, world, "Leaving")
    credentials_before = {k["keyId"] for k in world.credentials(c)}
    assert owners(world, c)

    reply = await api.call("offboard_target", "POST", ids(c), {"removeOwner": True, "removeApp": True})

    assert reply.status == 200, reply.text
    steps = {s["name"]: s for s in reply.body["steps"]}
    assert [s["name"] for s in reply.body["steps"]] == ["stop", "rotation", "retain", "owner", "app", "registry"]
    assert steps["owner"]["outcome"] == "done" and owners(world, c) == []
    assert steps["app"]["outcome"] == "manual" and f"az login --tenant {c.tenant_id}" in steps["app"]["command"]
    assert (await api.call("target", "GET", ids(c))).code == "TargetNotFound"
    # The secrets stay live (Proofpoint keeps syncing) and every Key Vault version is kept, tagged for retention.
    assert {k["keyId"] for k in world.credentials(c)} == credentials_before
    versions = world.versions(c)
    until = reply.body["retainedUntil"]
    assert versions and all(v["tags"]["retain-until"] == until for v in versions)
    assert {v["tags"]["stage"] for v in versions} == {"current"}  # the rotator's own tags kept beside it
    assert datetime.fromisoformat(until) > datetime.now(UTC)
    # Audited with who, never a secret anywhere.
    events = await svc.state.events(c.tenant_id, c.app_id)
    offboard = [e for e in events if e.step == "offboard"]
    assert {e.actor for e in offboard} == {"manual:operator@msp.example"} and len(offboard) == 6
    values = [c.secret, *(v["value"] for v in versions)]
    said = reply.text + json.dumps([e.detail for e in events])
    assert not any(value in said for value in values)


async def test_offboarding_is_refused_without_the_role_with_a_bad_body_or_an_unknown_target(
    api: Api, world: World
) -> None:
    c = world.seed_customer("Staying", 100)
    await api.put(c)
    reader = await api.call("offboard_target", "POST", ids(c), {}, caller=("reader@msp.example", (Role.READ.value,)))
    assert reader.status == 403
    assert (await api.call("offboard_target", "POST", ids(c), {"removeOwner": "yes"})).status == 422
    assert (await api.call("offboard_target", "POST", ids(c), {"purge": True})).status == 422
    assert (await api.call("offboard_target", "GET", ids(c))).status == 405
    unknown = {"tenantId": c.tenant_id, "appId": "0a0a0000-0000-4000-8000-000000000bad"}
    assert (await api.call("offboard_target", "POST", unknown, {})).code == "TargetNotFound"
    # Nothing changed by any of them.
    got = await api.call("target", "GET", ids(c))
    assert got.status == 200 and got.body["enabled"] is True and owners(world, c)


async def test_the_command_line_offboards_and_the_sweep_deletes_after_the_retention(api: Api, world: World) -> None:
    c = await rotated(api, world, "Gone")
    name = f"ppsync-{c.tenant_id}-{c.app_id}"
    off = world.cli("offboard", c.tenant_id, c.app_id, "--json", "--as", "bob@msp.example")
    assert await asyncio.to_thread(off.wait, 120) == 0, off.output()
    doc = json.loads(off.output())
    assert doc["actor"] == "manual:bob@msp.example" and doc["secretName"] == name
    assert c.secret not in off.output()

    early = world.cli("retention-sweep", offset=89 * 86400)
    assert await asyncio.to_thread(early.wait, 120) == 0, early.output()
    assert json.loads(early.output()) == {"deleted": []} and world.versions(c)

    late = world.cli("retention-sweep", offset=91 * 86400)
    assert await asyncio.to_thread(late.wait, 120) == 0, late.output()
    assert json.loads(late.output()) == {"deleted": [name]}
    vault = world.sb.control.state()["keyvault"]
    assert name not in vault["secrets"] and name in vault["deleted"]  # soft-deleted: recoverable


async def test_a_partner_admin_removes_the_msp_app_through_gdap_from_the_command_line(api: Api, world: World) -> None:
    sb = world.sb
    sb.control.set_device_code_interval(1)
    tenant = sb.control.seed_gdap_customers(1, start=7101)[0]
    customer = next(t for t in sb.control.state()["tenants"] if t["id"] == tenant)
    app = customer["applications"][0]
    # The MSP app installed there (its service principal with the Graph permission, and the delegated scopes the
    # partner admin's calls need, as the Partner Center consent makes them) and owner of the Proofpoint app.
    sb.control.seed({"tenants": [{"id": tenant, "grants": [{"appId": "msp-app",
                                                             "roles": ["Application.ReadWrite.OwnedBy"]}],
                                  "delegatedGrants": {"msp-app": ["Application.ReadWrite.All", "Domain.Read.All"]},
                                  "applications": [{"appId": app["appId"], "owners": ["msp-app"]}]}]})
    c = Customer("Gdapco", tenant, app["appId"], app["id"], "", "", "customer7101.example")
    assert (await api.put(c)).status == 201

    off = world.cli("offboard", tenant, app["appId"], "--remove-owner", "--remove-app", "--sign-in", "--json")
    code = await wait_for_code(off)
    await asyncio.to_thread(answer_device_code, sb.endpoints["entra"], code, "partner-admin@msp.example", sb.ca_file)
    assert await asyncio.to_thread(off.wait, 120) == 0, off.output()
    doc = json.loads(off.output()[off.output().index("{"):])
    steps = {s["name"]: s for s in doc["steps"]}
    assert steps["owner"]["outcome"] == "done" and steps["app"]["outcome"] == "done"
    assert "partner-admin@msp.example" in steps["app"]["detail"]
    msp = sb.control.msp()["appId"]
    after = next(t for t in sb.control.state()["tenants"] if t["id"] == tenant)
    assert [s for s in after["servicePrincipals"] if s["appId"] == msp] == []
    assert (await api.call("target", "GET", ids(c))).code == "TargetNotFound"


async def wait_for_code(process: Rotating) -> str:
    """The user code the device code prompt shows ("... enter the code ABCD1234 to authenticate")."""
    for _ in range(600):
        match = re.search(r"enter the code (\S+)", process.output())
        if match:
            return match.group(1)
        assert process.poll() is None, process.output()
        await asyncio.sleep(0.1)
    raise AssertionError(f"no device code prompt: {process.output()}")


async def test_the_daily_timer_deletes_an_offboarded_secret_once_its_retention_is_over(
    api: Api, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = await rotated(api, world, "Retired")
    kept = world.seed_customer("Kept", 300)  # registered: its secret is never the sweep's
    assert (await api.put(kept)).status == 201
    name = f"ppsync-{c.tenant_id}-{c.app_id}"
    assert (await api.call("offboard_target", "POST", ids(c), {})).status == 200
    timer_function = functions()["rotation_timer"]

    monkeypatch.setitem(bootstrap.DEFAULTS, "clock", SystemClock(timedelta(days=89)))
    await timer_function(timer.TimerRequest(past_due=False))
    assert name in world.sb.control.state()["keyvault"]["secrets"]

    monkeypatch.setitem(bootstrap.DEFAULTS, "clock", SystemClock(timedelta(days=91)))
    await timer_function(timer.TimerRequest(past_due=False))
    vault = world.sb.control.state()["keyvault"]
    assert name not in vault["secrets"] and name in vault["deleted"]


async def test_the_last_target_of_a_tenant_leaving_takes_its_inventory_with_it(
    api: Api, world: World, svc  # type: ignore[no-untyped-def]
) -> None:
    from shared.inventory import CredentialKind, InventoryCredential, ObjectKind

    def row(c: Customer, key: str) -> InventoryCredential:
        return InventoryCredential(c.tenant_id, c.name, ObjectKind.APPLICATION, f"obj-{key}", f"app-{key}", "Backup",
                                   ("ann@contoso.example",), CredentialKind.PASSWORD, "", key, "abc", "nightly",
                                   None, datetime(2027, 1, 1, tzinfo=UTC))

    offboarded, deleted = world.seed_customer("Offboarded", 200), world.seed_customer("Deleted", 200)
    for c in (offboarded, deleted):
        assert (await api.put(c)).status == 201
        await svc.inventory.put_objects(c.tenant_id, ObjectKind.APPLICATION, {f"obj-{c.name}": [row(c, c.name)]},
                                        delta_link=f"https://graph.example/delta?{c.name}")
    reply = await api.call("offboard_target", "POST", ids(offboarded), {})
    assert reply.status == 200, reply.text
    assert (await api.call("target", "DELETE", ids(deleted))).status == 204
    for c in (offboarded, deleted):  # credential metadata, owners' names and delta links: gone with the customer
        assert [r async for r in svc.inventory.stream(c.tenant_id)] == []
        assert await svc.inventory.delta_links(c.tenant_id) == {}


async def test_offboarding_withdraws_the_targets_approval_request(api: Api, world: World,
                                                                   svc) -> None:  # type: ignore[no-untyped-def]
    """On Azurite's approvals book: the target's request (here rejected before) is withdrawn with the target, a step
    of its own in the answer (as the OpenAPI document lists it); registered again, no old decision decides for it."""
    from shared.change_control import ApprovalRequest, ApprovalStatus

    c = world.seed_customer("Leaving", 10)
    assert (await api.put(c)).status == 201
    assert svc.approvals is not None
    await svc.approvals.put(ApprovalRequest(c.tenant_id, c.app_id, "2" * 32, "key-1", ApprovalStatus.REJECTED,
                                            datetime.now(UTC), decided_by="bob@msp.example"), None)
    reply = await api.call("offboard_target", "POST", ids(c), {})
    assert reply.status == 200, reply.text
    assert [s["name"] for s in reply.body["steps"]] == ["stop", "rotation", "retain", "approval", "registry"]
    assert "rejected by bob@msp.example" in reply.body["steps"][3]["detail"]
    assert await svc.approvals.get(c.tenant_id, c.app_id) is None
    assert (await api.put(c)).status == 201
    assert (await api.call("approvals", "GET")).body["approvals"] == []


async def test_the_command_line_s_partner_sign_in_is_refused_before_anything_changes_without_a_relationship(
        api: Api, world: World) -> None:
    """`offboard --remove-app --sign-in` for a customer the partner has no GDAP relationship with: the cause and the
    fix on stderr, exit 1, the customer still registered and enabled."""
    sb = world.sb
    sb.control.set_device_code_interval(1)
    c = world.seed_customer("Direct", 200)
    assert (await api.put(c)).status == 201
    off = world.cli("offboard", c.tenant_id, c.app_id, "--remove-app", "--sign-in")
    code = await wait_for_code(off)
    await asyncio.to_thread(answer_device_code, sb.endpoints["entra"], code, "partner-admin@msp.example", sb.ca_file)
    assert await asyncio.to_thread(off.wait, 120) == 1, off.output()
    assert "NoGdapRelationship: partner-admin@msp.example has no active GDAP relationship" in off.output()
    assert "fix: offboard without removing the app" in off.output()
    got = await api.call("target", "GET", ids(c))
    assert got.status == 200 and got.body["enabled"] is True
