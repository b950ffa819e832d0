"""Graph's delta queries in the sandbox: applications and service principals of a tenant (seeded and generated),
paged with nextLink, ended with a deltaLink; then only what changed (changed properties only), `@removed`; stale
tokens (seven days, or a synchronization reset) refused as Graph does; one tenant's token never reads another."""

from __future__ import annotations

import base64
from typing import Any

import pytest
import requests

from tests.conftest import SandboxHandle
from tests.material import client_secret

pytestmark = pytest.mark.sandbox

TENANT = "c0000000-0000-4000-8000-000000000251"
OTHER = "c0000000-0000-4000-8000-000000000252"
READER = "a0000000-0000-4000-8000-000000000251"
PPE = "a0000000-0000-4000-8000-000000000253"
MICROSOFT = "f8cdef31-a31e-4b4a-93e4-5f571e91255a"
SECRET = client_secret("inv")
SELECT_APPS = "id,appId,displayName,passwordCredentials,keyCredentials"
SELECT_SPS = ("id,appId,displayName,appOwnerOrganizationId,preferredTokenSigningKeyThumbprint,passwordCredentials,"
              "keyCredentials")


def seed(sb: SandboxHandle, *, apps: int = 30, sps: int = 120, roles: tuple[str, ...] = (
        "Application.ReadWrite.OwnedBy",), page: int = 50) -> None:
    tenants: list[dict[str, Any]] = []
    for tenant in (TENANT, OTHER):
        tenants.append({"id": tenant, "name": tenant[-3:], "applications": [
            {"appId": READER, "displayName": "Rotator", "passwordCredentials": [
                {"secretText": SECRET, "endDateTime": "+300d"}]},
            {"appId": PPE, "id": f"{tenant[:-3]}999", "displayName": "Proofpoint Essentials",
             "owners": [], "passwordCredentials": [{"secretText": client_secret("ppe"), "endDateTime": "+20d"}]}],
            "grants": [{"appId": READER, "roles": list(roles)}]})
    sb.control.seed({"tenants": tenants, "inventory": {"pageSize": page, "populations": [
        {"tenants": [TENANT, OTHER], "applications": apps, "servicePrincipals": sps, "seed": "t"}]}})


def bearer(sb: SandboxHandle, tenant: str = TENANT) -> str:
    answer = requests.post(f"{sb.endpoints['entra']}/{tenant}/oauth2/v2.0/token",
                           data={"grant_type": "client_credentials", "client_id": READER, "client_secret": SECRET,
                                 "scope": "https://graph.microsoft.com/.default"}, verify=sb.ca_file, timeout=10)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["access_token"])


def get(sb: SandboxHandle, url: str, token: str, params: dict[str, str] | None = None) -> requests.Response:
    if not url.startswith("http"):
        url = f"{sb.endpoints['graph']}/v1.0/{url}"
    return requests.get(url, params=params, headers={"Authorization": f"Bearer {token}"}, verify=sb.ca_file,
                        timeout=20)


def rounds(sb: SandboxHandle, token: str, start: str, params: dict[str, str] | None = None
           ) -> tuple[list[list[dict[str, Any]]], str]:
    """Every page of one round, and the delta link it ended with."""
    pages, answer = [], get(sb, start, token, params)
    while True:
        assert answer.status_code == 200, answer.text
        body = answer.json()
        pages.append(body["value"])
        if "@odata.deltaLink" in body:
            assert "@odata.nextLink" not in body
            return pages, body["@odata.deltaLink"]
        answer = get(sb, body["@odata.nextLink"], token)


def test_a_full_read_pages_every_object_with_only_the_selected_properties(sb: SandboxHandle) -> None:
    seed(sb)
    token = bearer(sb)
    pages, link = rounds(sb, token, "servicePrincipals/delta", {"$select": SELECT_SPS})
    assert [len(p) for p in pages] == [50, 50, 22]  # 120 generated + the two seeded apps' principals
    objects = [o for p in pages for o in p]
    assert len({o["id"] for o in objects}) == 122
    assert all(set(o) <= set(SELECT_SPS.split(",")) for o in objects)
    assert "$deltatoken=" in link
    first_party = [o for o in objects if o["appOwnerOrganizationId"] == MICROSOFT]
    assert 50 <= len(first_party) <= 95
    saml = [o for o in objects if o["preferredTokenSigningKeyThumbprint"]]
    assert saml
    for sp in saml:  # addTokenSigningCertificate: Sign + Verify keys and a password sharing the thumbprint
        thumb = base64.b64encode(bytes.fromhex(sp["preferredTokenSigningKeyThumbprint"])).decode()
        assert sorted(k["usage"] for k in sp["keyCredentials"]) == ["Sign", "Verify"]
        assert {k["customKeyIdentifier"] for k in sp["keyCredentials"]} == {thumb}
        assert [p["customKeyIdentifier"] for p in sp["passwordCredentials"]] == [thumb]
    apps = [o for p in rounds(sb, token, "applications/delta", {"$select": SELECT_APPS})[0] for o in p]
    assert len(apps) == 32
    assert all(c["secretText"] is None for a in apps for c in a["passwordCredentials"])


def test_the_same_read_twice_gives_the_same_objects(sb: SandboxHandle) -> None:
    seed(sb)
    token = bearer(sb)
    one = rounds(sb, token, "applications/delta", {"$select": SELECT_APPS})[0]
    two = rounds(sb, token, "applications/delta", {"$select": SELECT_APPS})[0]
    assert one == two


def test_a_delta_round_returns_only_changes_with_only_the_changed_properties(sb: SandboxHandle) -> None:
    seed(sb)
    token = bearer(sb)
    _, link = rounds(sb, token, "applications/delta", {"$select": SELECT_APPS})
    pages, link = rounds(sb, token, link)
    assert pages == [[]]
    renewed = sb.control.inventory_change(TENANT, {"kind": "application", "op": "renew", "count": 2})
    removed = sb.control.inventory_change(TENANT, {"kind": "application", "op": "delete", "count": 1})
    added = sb.control.inventory_change(TENANT, {"kind": "application", "op": "add", "count": 1})
    pages, link = rounds(sb, token, link)
    changes = {o["id"]: o for p in pages for o in p}
    assert set(changes) == set(renewed) | set(removed) | set(added)
    for object_id in renewed:
        assert set(changes[object_id]) == {"id", "passwordCredentials"}
        assert any(c["displayName"] == "renewed" for c in changes[object_id]["passwordCredentials"])
    assert changes[removed[0]]["@removed"] == {"reason": "changed"}
    assert set(changes[added[0]]) == set(SELECT_APPS.split(","))
    assert rounds(sb, token, link)[0] == [[]]


def test_the_rotators_own_change_to_a_seeded_app_appears_in_the_next_round(sb: SandboxHandle) -> None:
    seed(sb)
    token = bearer(sb)
    _, link = rounds(sb, token, "applications/delta", {"$select": SELECT_APPS})
    sb.control.seed({"tenants": [{"id": TENANT, "applications": [
        {"appId": "a0000000-0000-4000-8000-000000000259", "displayName": "Backup", "passwordCredentials": [
            {"secretText": client_secret("bkp"), "endDateTime": "+5d"}]}]}]})
    pages, _ = rounds(sb, token, link)
    [change] = [o for p in pages for o in p]
    assert change["displayName"] == "Backup" and len(change["passwordCredentials"]) == 1


def test_a_delta_token_older_than_seven_days_is_refused_with_sync_state_not_found(sb: SandboxHandle) -> None:
    seed(sb)
    _, link = rounds(sb, bearer(sb), "applications/delta", {"$select": SELECT_APPS})
    sb.control.set_clock(7 * 86400 + 60)
    answer = get(sb, link, bearer(sb))
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "syncStateNotFound"
    sb.control.set_clock(6 * 86400)
    assert get(sb, link, bearer(sb)).status_code == 200


def test_a_synchronization_reset_answers_410_gone_with_the_initial_query(sb: SandboxHandle) -> None:
    seed(sb)
    token = bearer(sb)
    _, link = rounds(sb, token, "applications/delta", {"$select": SELECT_APPS})
    sb.control.inventory_sync_reset(TENANT)
    answer = get(sb, link, token)
    assert answer.status_code == 410 and answer.json()["error"]["code"] == "resyncRequired"
    location = answer.headers["Location"]
    assert "$deltatoken=" in requests.utils.unquote(location) and "applications/delta" in location
    pages, _ = rounds(sb, token, location)
    assert len([o for p in pages for o in p]) == 32


def test_a_token_of_one_tenant_reads_nothing_of_another(sb: SandboxHandle) -> None:
    seed(sb)
    _, link = rounds(sb, bearer(sb, TENANT), "applications/delta", {"$select": SELECT_APPS})
    answer = get(sb, link, bearer(sb, OTHER))
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "Request_BadRequest"
    mine = {o["id"]: o for p in rounds(sb, bearer(sb, TENANT), "applications/delta")[0] for o in p}
    theirs = {o["id"]: o for p in rounds(sb, bearer(sb, OTHER), "applications/delta")[0] for o in p}
    assert len(mine) == len(theirs) == 32
    generated = {i for i, o in mine.items() if o["appId"] not in (READER, PPE)}
    assert len(generated) == 30 and not generated & set(theirs)


def test_delta_needs_an_application_permission_and_known_properties(sb: SandboxHandle) -> None:
    seed(sb, roles=("User.Read.All",))
    assert get(sb, "applications/delta", bearer(sb)).status_code == 403
    seed(sb)
    answer = get(sb, "applications/delta", bearer(sb), {"$select": "id,secretText"})
    assert answer.status_code == 400 and "secretText" in answer.json()["error"]["message"]


def test_a_throttled_page_answers_429_with_retry_after(sb: SandboxHandle) -> None:
    seed(sb)
    sb.control.add_fault("graph", path=r"/servicePrincipals/delta", status=429, retry_after=2)
    answer = get(sb, "servicePrincipals/delta", bearer(sb))
    assert answer.status_code == 429 and answer.headers["Retry-After"] == "2"
    assert get(sb, "servicePrincipals/delta", bearer(sb)).status_code == 200


def test_resource_units_per_app_and_tenant_and_per_app_answer_429_with_retry_after(sb: SandboxHandle) -> None:
    seed(sb)
    sb.control.seed({"inventory": {"throttle": {"tenantApp": [3, 60], "app": [5, 60]}}})
    mine, theirs = bearer(sb, TENANT), bearer(sb, OTHER)
    for _ in range(3):
        assert get(sb, "applications/delta", mine).status_code == 200
    refused = get(sb, "applications/delta", mine)
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "TooManyRequests"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert refused.headers["x-ms-throttle-scope"] == f"Tenant_Application/Read/{READER}/{TENANT}"
    for _ in range(2):  # another tenant has its own pair budget, but the application's is shared: 5 in all
        assert get(sb, "servicePrincipals/delta", theirs).status_code == 200
    refused = get(sb, "servicePrincipals/delta", theirs)
    assert refused.status_code == 429
    assert refused.headers["x-ms-throttle-scope"].startswith(f"Application/Read/{READER}")
    response = requests.post(f"{sb.endpoints['control']}/seed", json={"inventory": {"throttle": {"app": [0, 1]}}},
                             verify=sb.ca_file, timeout=10)
    assert response.status_code == 400
