"""Key Vault stand-in behaviour beyond the examples: versions, tags, disabled secrets, soft delete, paging, auth."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from tests.contract.test_keyvault_examples import Vault

pytestmark = pytest.mark.sandbox


@pytest.fixture
def vault(sb: Any) -> Vault:
    return Vault(sb)


def test_versions_are_32_hex_and_latest_wins(vault: Vault) -> None:
    first = vault.call("PUT", "/secrets/target", json={"value": "one"}).json()
    second = vault.call("PUT", "/secrets/target", json={"value": "two", "tags": {"stage": "pending"}}).json()
    version = first["id"].rsplit("/", 1)[-1]
    assert first["id"] == f"{vault.base}/secrets/target/{version}"
    assert len(version) == 32 and int(version, 16) >= 0
    assert vault.call("GET", "/secrets/target/").json()["value"] == "two"
    assert vault.call("GET", f"/secrets/target/{version}").json()["value"] == "one"
    attributes = second["attributes"]
    assert attributes["recoveryLevel"] == "Recoverable+Purgeable" and attributes["recoverableDays"] == 90
    versions = vault.call("GET", "/secrets/target/versions").json()["value"]
    assert [v["id"] for v in versions] == [first["id"], second["id"]]
    assert versions[1]["tags"] == {"stage": "pending"}


def test_patch_replaces_tags_and_disables_a_version(vault: Vault) -> None:
    created = vault.call("PUT", "/secrets/s", json={"value": "v", "tags": {"a": "1"}}).json()
    version = created["id"].rsplit("/", 1)[-1]
    patched = vault.call(
        "PATCH", f"/secrets/s/{version}", json={"tags": {"stage": "previous"}, "attributes": {"enabled": False}}
    )
    assert patched.status_code == 200
    assert patched.json()["tags"] == {"stage": "previous"} and "value" not in patched.json()
    refused = vault.call("GET", f"/secrets/s/{version}")
    assert refused.status_code == 403
    assert refused.json()["error"] == {
        "code": "Forbidden", "message": "Operation get is not allowed on a disabled secret."
    }
    listed = vault.call("GET", "/secrets/s/versions").json()["value"]
    assert listed[0]["attributes"]["enabled"] is False


def test_too_many_tags_and_bad_names_are_400(vault: Vault) -> None:
    tags = {f"t{i}": "x" for i in range(16)}
    assert vault.call("PUT", "/secrets/s", json={"value": "v", "tags": tags}).json()["error"]["code"] == "BadParameter"
    assert vault.call("PUT", "/secrets/bad_name", json={"value": "v"}).status_code == 400
    assert vault.call("PUT", "/secrets/s", json={"value": "x" * (25 * 1024 + 1)}).status_code == 400
    assert vault.call("PUT", "/secrets/s", json={}).status_code == 400


def test_soft_delete_blocks_the_name_until_recovered_or_purged(vault: Vault) -> None:
    vault.call("PUT", "/secrets/s", json={"value": "v1"})
    vault.call("PUT", "/secrets/s", json={"value": "v2"})
    assert vault.call("DELETE", "/secrets/s").status_code == 200
    assert vault.call("GET", "/secrets/s/").status_code == 404
    conflict = vault.call("PUT", "/secrets/s", json={"value": "v3"})
    assert conflict.status_code == 409 and conflict.json()["error"]["code"] == "Conflict"
    assert vault.call("POST", "/deletedsecrets/s/recover").status_code == 200
    assert len(vault.call("GET", "/secrets/s/versions").json()["value"]) == 2
    vault.call("DELETE", "/secrets/s")
    assert vault.call("DELETE", "/deletedsecrets/s").status_code == 204
    assert vault.call("GET", "/deletedsecrets/s").status_code == 404
    assert vault.call("PUT", "/secrets/s", json={"value": "v4"}).status_code == 200


def test_names_are_case_insensitive(vault: Vault) -> None:
    vault.call("PUT", "/secrets/MySecret", json={"value": "v"})
    assert vault.call("GET", "/secrets/mysecret/").json()["value"] == "v"


def test_paging_limits(vault: Vault, sb: Any) -> None:
    sb.control.seed({"keyvault": {"secrets": [{"name": f"s{i:02d}", "value": "v"} for i in range(30)]}})
    first = vault.call("GET", "/secrets").json()
    assert len(first["value"]) == 25 and first["nextLink"]
    rest = vault.get(first["nextLink"]).json()
    assert len(rest["value"]) == 5 and rest["nextLink"] is None
    for bad in (0, 26, "x"):
        assert vault.call("GET", "/secrets", params={"maxresults": bad}).status_code == 400


def test_tokens_of_other_tenants_or_audiences_are_refused(sb: Any, vault: Vault) -> None:
    graph_token = requests.get(
        sb.settings["IDENTITY_ENDPOINT"],
        params={"resource": "https://graph.microsoft.com", "api-version": "2019-08-01"},
        headers={"X-IDENTITY-HEADER": sb.settings["IDENTITY_HEADER"]},
        timeout=10,
    ).json()["access_token"]
    response = requests.get(
        f"{vault.base}/secrets",
        params={"api-version": "2025-07-01"},
        headers={"Authorization": f"Bearer {graph_token}"},
        verify=sb.ca_file,
        timeout=10,
    )
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith('Bearer authorization="')


def test_vault_tokens_of_another_tenant_are_refused(sb: Any, vault: Vault) -> None:
    tenant, app, secret = "7e570000-0000-4000-8000-0000000000c1", "4b7e0000-0000-4000-8000-0000000000c2", "s3cret"
    sb.control.seed({"tenants": [{"id": tenant, "name": "Customer", "applications": [
        {"appId": app, "passwordCredentials": [{"secretText": secret, "endDateTime": "+1d"}]}]}]})
    token = requests.post(
        f"{sb.endpoints['entra']}/{tenant}/oauth2/v2.0/token",
        data={"grant_type": "client_credentials", "client_id": app, "client_secret": secret,
              "scope": "https://vault.azure.net/.default"},
        verify=sb.ca_file,
        timeout=10,
    ).json()["access_token"]
    response = requests.get(
        f"{vault.base}/secrets", params={"api-version": "7.6"}, headers={"Authorization": f"Bearer {token}"},
        verify=sb.ca_file, timeout=10,
    )
    assert response.status_code == 401 and "AKV10032" in response.json()["error"]["message"]


def test_expired_token_is_refused(sb: Any, vault: Vault) -> None:
    sb.control.set_clock(2 * 3600)
    assert vault.call("GET", "/secrets").status_code == 401


def test_unknown_api_version_is_400(vault: Vault) -> None:
    assert vault.call("GET", "/secrets", api_version="2016-10-01-bogus").status_code == 400


def test_state_dump_holds_values(sb: Any, vault: Vault) -> None:
    vault.call("PUT", "/secrets/s", json={"value": "v", "contentType": "text/plain"})
    dumped = sb.control.state()["keyvault"]["secrets"]["s"]
    assert [(v["value"], v["content_type"]) for v in dumped] == [("v", "text/plain")]


def test_writes_are_counted_per_10_s_window_and_creates_over_300_throttled(vault: Vault, sb: Any) -> None:
    vault.call("PUT", "/secrets/counted", json={"value": "v"})
    version = vault.call("GET", "/secrets/counted/").json()["id"].rsplit("/", 1)[-1]
    vault.call("PATCH", f"/secrets/counted/{version}", json={"tags": {"stage": "current"}})
    counts = sb.control.keyvault_writes()
    assert counts["windowSeconds"] == 10 and counts["createLimit"] == 300
    assert counts["create"] == {"total": 1, "maxPerWindow": 1, "windows": [1]}
    assert counts["update"]["total"] == 1 and counts["delete"]["total"] == 0

    sb.control.set_keyvault_create_limit(4)  # Key Vault's 300, lowered to reach it within one window here
    for i in range(3):  # 4 creates within this 10 s window, then one too many
        assert vault.call("PUT", f"/secrets/bulk-{i}", json={"value": "v"}).status_code == 200
    refused = vault.call("PUT", "/secrets/one-too-many", json={"value": "v"})
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "Throttled" and int(refused.headers["Retry-After"]) >= 1
    assert vault.call("GET", "/secrets/one-too-many/").status_code == 404  # nothing stored
    counts = sb.control.keyvault_writes()
    assert counts["create"]["total"] == 4 and counts["create"]["maxPerWindow"] == 4  # the 429 is not counted

    sb.control.reset()
    counts = sb.control.keyvault_writes()
    assert counts["create"] == {"total": 0, "maxPerWindow": 0, "windows": []} and counts["createLimit"] == 300
