"""POST /api/targets/{tenantId}/{appId}/offboard and `python -m shared offboard` / `retention-sweep`, over real HTTPS
against the sandbox (Graph's owner $ref, Key Vault's tags and soft delete) and Azurite."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

from shared.entrypoints.access import Role
from tests.api.conftest import WAIT, Api, ids
from tests.rotation.conftest import Customer, World


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
