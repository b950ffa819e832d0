"""Identity modes against the sandbox: federated (one ClientAssertionCredential per customer tenant, fed by the
managed identity's token for api://AzureADTokenExchange) and managed identity (single tenant)."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from typing import Any

import pytest

from shared.adapters.identity import GRAPH_SCOPE, Credentials, close_transport, shared_transport
from shared.settings import IdentityMode
from tests.api.conftest import WAIT, Api, ids
from tests.rotation.conftest import ROTATOR_ROLE, World, random_secret

MSP_TENANT = "5a1d0000-0000-4000-8000-000000000001"
MI_CLIENT_ID = "5a1d0000-0000-4000-8000-000000000002"
MI_PRINCIPAL_ID = "5a1d0000-0000-4000-8000-000000000003"
MSP_APP_ID = "5a1d0000-0000-4000-8000-000000000004"


def claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


async def test_federated_tokens_for_two_tenants_and_a_rotation_in_each(api: Api, world: World,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    settings = world.settings()
    assert settings.identity_mode is IdentityMode.FEDERATED
    first, second = world.seed_customer("Contoso", 10), world.seed_customer("Fabrikam", -1)
    assertions = []
    original = Credentials._assertion

    def counted(self: Credentials) -> str:
        assertions.append(1)
        return original(self)

    monkeypatch.setattr(Credentials, "_assertion", counted)
    transport = shared_transport(settings, pool_size=8)
    credentials = Credentials(settings, transport)
    try:
        for customer in (first, second):
            token = (await credentials.graph(customer.tenant_id).get_token(GRAPH_SCOPE)).token
            seen = claims(token)
            assert seen["tid"] == customer.tenant_id and seen["appid"] == MSP_APP_ID
            assert seen["aud"].startswith("https://graph.microsoft.com") and ROTATOR_ROLE in seen["roles"]
        # Cached per tenant: the same credential object, and its token reused without a new assertion.
        assert credentials.graph(first.tenant_id) is credentials.graph(first.tenant_id)
        assert credentials.graph(first.tenant_id) is not credentials.graph(second.tenant_id)
        again = await credentials.graph(first.tenant_id).get_token(GRAPH_SCOPE)
        assert claims(again.token)["tid"] == first.tenant_id and len(assertions) == 2
    finally:
        await credentials.close()
        await close_transport(transport)

    for customer in (first, second):
        await api.put(customer)
        reply = await api.call("rotations", "POST", body=ids(customer), params=WAIT)
        assert reply.status == 200 and reply.body["result"] == "rotated", reply.text
        made = [c for c in world.credentials(customer) if c["keyId"] != customer.key_id]
        assert len(made) == 1 and "rotation" in made[0]["displayName"]


def seed_home_app(world: World) -> tuple[str, str]:
    """A Proofpoint app registration in the MSP's own tenant, owned by the managed identity, which holds the role."""
    app_id = str(uuid.uuid4())
    world.sb.control.seed({"tenants": [{
        "id": MSP_TENANT,
        "applications": [{"appId": app_id, "displayName": "Proofpoint Essentials", "owners": ["managed-identity"],
                          "passwordCredentials": [{"secretText": random_secret(), "startDateTime": "-300d",
                                                   "endDateTime": "+5d"}]}],
        "grants": [{"appId": "managed-identity", "roles": [ROTATOR_ROLE]}],
    }]})
    return MSP_TENANT, app_id


async def test_managed_identity_mode_rotates_in_its_own_tenant_only(api: Api, world: World,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IDENTITY_MODE", "managed-identity")
    tenant_id, app_id = seed_home_app(world)
    settings = world.settings(IDENTITY_MODE="managed-identity")
    transport = shared_transport(settings, pool_size=8)
    credentials = Credentials(settings, transport)
    try:
        seen = claims((await credentials.graph(tenant_id).get_token(GRAPH_SCOPE)).token)
        assert seen["tid"] == MSP_TENANT and seen["oid"] == MI_PRINCIPAL_ID and seen["appid"] == MI_CLIENT_ID
    finally:
        await credentials.close()
        await close_transport(transport)

    target = {"tenantId": tenant_id, "appId": app_id}
    assert (await api.call("target", "PUT", target, {"customer": "Contoso MSP"})).status == 201
    reply = await api.call("rotations", "POST", body=target, params=WAIT)
    assert reply.status == 200 and reply.body["result"] == "rotated", reply.text
    home = next(t for t in world.sb.control.state()["tenants"] if t["id"] == MSP_TENANT)
    app = next(a for a in home["applications"] if a["appId"] == app_id)
    assert sum("rotation" in (c["displayName"] or "") for c in app["passwordCredentials"]) == 1

    # A customer tenant is out of reach in single-tenant mode: said plainly, nothing created.
    customer = world.seed_customer("Elsewhere", 5)
    await api.put(customer)
    elsewhere = await api.call("rotations", "POST", body={**ids(customer), "dryRun": True})
    assert elsewhere.status == 200 and elsewhere.body["status"] == "unreachable", elsewhere.text
    assert elsewhere.body["error_code"] == "TenantNotReachableInSingleTenantMode"
    outcome = await api.call("rotations", "POST", body=ids(customer))
    assert outcome.body["result"] == "unreachable", outcome.text
    assert world.credentials(customer) == [c for c in world.credentials(customer) if c["keyId"] == customer.key_id]


async def test_reads_side_by_side_with_an_empty_cache_ask_entra_for_one_token(world: World) -> None:
    """An assessment's Graph reads go out together: the first asks Entra ID for the tenant's token, the others wait
    for it and take it from the cache (azure-identity alone would send one token request per read)."""
    settings = world.settings()
    customer = world.seed_customer("Contoso", 10)
    control = world.sb.control
    hold = control.add_hold("entra", method="POST", path=f"^/{customer.tenant_id}/oauth2/v2.0/token$", count=10)
    transport = shared_transport(settings, pool_size=8)
    credentials = Credentials(settings, transport)
    try:
        credential = credentials.graph(customer.tenant_id)
        reads = [asyncio.create_task(credential.get_token(GRAPH_SCOPE)) for _ in range(5)]
        await asyncio.to_thread(control.wait_held, hold, 60.0)
        await asyncio.sleep(0.3)  # time for any other request to reach the sandbox
        assert control.waiting(hold) == 1, "one token request for the tenant"
        control.release(hold)
        tokens = {t.token for t in await asyncio.gather(*reads)}
        assert len(tokens) == 1 and claims(tokens.pop())["tid"] == customer.tenant_id
        assert control.held(hold) == 1, "no second request once the first was answered"
    finally:
        control.release_all()
        await credentials.close()
        await close_transport(transport)
