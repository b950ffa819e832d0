"""The control API: reset, seed, state, faults, holds, clock; and the sandbox under concurrent load."""

from __future__ import annotations

import asyncio
import ssl
import threading
import time

import aiohttp
import pytest
import requests

from tests.conftest import SandboxHandle

CUSTOMER = "c0000000-0000-4000-8000-000000000021"


def openid(sb: SandboxHandle, tenant: str = CUSTOMER) -> requests.Response:
    return requests.get(
        f"{sb.endpoints['entra']}/{tenant}/v2.0/.well-known/openid-configuration", verify=sb.ca_file, timeout=10
    )


def test_files_and_settings(sb: SandboxHandle) -> None:
    assert set(sb.endpoints) == {"entra", "graph", "keyvault", "proofpoint", "portal", "control", "identity"}
    assert sb.endpoints["identity"].startswith("http://127.0.0.1:")
    assert all(url.startswith("https://127.0.0.1:") for name, url in sb.endpoints.items() if name != "identity")
    assert sb.settings["GRAPH_BASE_URL"] == sb.endpoints["graph"] + "/v1.0"
    assert sb.settings["PROOFPOINT_BASE_URL"] == sb.endpoints["proofpoint"] + "/{stack}/api/v1"
    assert sb.settings["CA_BUNDLE"] == sb.ca_file and sb.settings["IDENTITY_MODE"] == "federated"


def test_reset_recreates_the_msp_identity_and_seed_is_additive(sb: SandboxHandle) -> None:
    msp = sb.control.msp()
    assert msp["tenantId"] == sb.settings["MSP_TENANT_ID"] and msp["appId"] == sb.settings["MSP_APP_CLIENT_ID"]
    sb.control.seed({"tenants": [{"id": CUSTOMER, "name": "A"}]})
    sb.control.seed({"tenants": [{"id": CUSTOMER, "applications": [{"appId": "a0000000-0000-4000-8000-000000000021",
                                                                     "displayName": "PPE"}]}]})
    tenants = {t["id"]: t for t in sb.control.state()["tenants"]}
    assert tenants[CUSTOMER]["name"] == "A" and len(tenants[CUSTOMER]["applications"]) == 1
    sb.control.reset()
    assert [t["id"] for t in sb.control.state()["tenants"]] == [msp["tenantId"]]


def test_bad_seed_is_400(sb: SandboxHandle) -> None:
    with pytest.raises(RuntimeError, match="400"):
        sb.control.seed({"tenants": [{"name": "no id"}]})


def test_graph_fault_429_has_retry_after_and_graph_body(sb: SandboxHandle) -> None:
    sb.control.add_fault("graph", method="GET", path=r"/applications$", status=429, retry_after=3)
    first = requests.get(f"{sb.endpoints['graph']}/v1.0/applications", verify=sb.ca_file, timeout=10)
    assert first.status_code == 429 and first.headers["Retry-After"] == "3"
    assert first.json()["error"]["code"] == "TooManyRequests"
    assert {"date", "request-id"} <= first.json()["error"]["innerError"].keys()
    second = requests.get(f"{sb.endpoints['graph']}/v1.0/applications", verify=sb.ca_file, timeout=10)
    assert second.status_code == 401  # count=1: the fault is used up
    assert sb.control.faults() == []


def test_fault_matches_method_and_path(sb: SandboxHandle) -> None:
    sb.control.add_fault("graph", method="POST", path="addPassword", status=409, code="Directory_ConcurrencyViolation",
                         message="Another object with the same value for property keyCredentials already exists.")
    assert requests.get(f"{sb.endpoints['graph']}/v1.0/applications", verify=sb.ca_file, timeout=10).status_code == 401
    hit = requests.post(f"{sb.endpoints['graph']}/v1.0/applications/x/addPassword", json={}, verify=sb.ca_file,
                        timeout=10)
    assert hit.status_code == 409 and hit.json()["error"]["code"] == "Directory_ConcurrencyViolation"


def test_fault_without_count_lasts_until_cleared(sb: SandboxHandle) -> None:
    sb.control.add_fault("entra", status=503, count=None)
    assert [openid(sb).status_code for _ in range(3)] == [503, 503, 503]
    assert openid(sb).json()["error"] == "temporarily_unavailable"
    sb.control.clear_faults()
    assert openid(sb).status_code == 200


def test_keyvault_fault_uses_key_vault_error_format(sb: SandboxHandle) -> None:
    sb.control.add_fault("keyvault", status=429, retry_after=1, message="Too many requests")
    response = requests.get(f"{sb.endpoints['keyvault']}/secrets/x?api-version=2025-07-01", verify=sb.ca_file,
                            timeout=10)
    assert response.status_code == 429 and response.headers["Retry-After"] == "1"
    error = response.json()["error"]
    assert isinstance(error["code"], str) and error["message"] == "Too many requests"


def test_drop_closes_the_connection_without_a_response(sb: SandboxHandle) -> None:
    sb.control.add_fault("entra", drop=True)
    with pytest.raises(requests.ConnectionError):
        openid(sb)
    assert openid(sb).status_code == 200


def test_latency_fault_delays_then_serves(sb: SandboxHandle) -> None:
    sb.control.add_fault("entra", latency_ms=300)
    started = time.monotonic()
    assert openid(sb).status_code == 200
    assert time.monotonic() - started >= 0.3


@pytest.mark.parametrize("when", ["before", "after"])
def test_hold_parks_a_request_until_released(sb: SandboxHandle, when: str) -> None:
    hold = sb.control.add_hold("entra", method="GET", path="openid-configuration", when=when)
    results: list[int] = []
    worker = threading.Thread(target=lambda: results.append(openid(sb).status_code))
    worker.start()
    sb.control.wait_held(hold)
    assert sb.control.waiting(hold) == 1 and results == []
    sb.control.release(hold)
    worker.join(timeout=10)
    assert results == [200] and sb.control.waiting(hold) == 0
    assert openid(sb).status_code == 200  # a released hold catches nothing more


def test_after_hold_has_done_the_work_before_holding(sb: SandboxHandle) -> None:
    sb.control.seed({"tenants": [{"id": CUSTOMER, "name": "Held"}]})
    hold = sb.control.add_hold("entra", path="token", when="after")
    worker = threading.Thread(target=lambda: requests.post(
        f"{sb.endpoints['entra']}/{CUSTOMER}/oauth2/v2.0/token", data={"grant_type": "client_credentials"},
        verify=sb.ca_file, timeout=10))
    worker.start()
    sb.control.wait_held(hold)
    sb.control.release_all()
    worker.join(timeout=10)
    assert not worker.is_alive()


def test_clock_offset_moves_now(sb: SandboxHandle) -> None:
    sb.control.set_clock(86400)
    assert sb.control.state()["clockOffsetSeconds"] == 86400
    sb.control.reset()
    assert sb.control.state()["clockOffsetSeconds"] == 0


async def test_500_concurrent_requests_with_latency(sb: SandboxHandle) -> None:
    sb.control.add_fault("entra", latency_ms=500, count=None)
    tls = ssl.create_default_context(cafile=sb.ca_file)
    url = f"{sb.endpoints['entra']}/{CUSTOMER}/v2.0/.well-known/openid-configuration"
    connector = aiohttp.TCPConnector(limit=0, ssl=tls)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> int:
            async with session.get(url) as response:
                await response.read()
                return response.status

        started = time.monotonic()
        statuses = await asyncio.gather(*(one() for _ in range(500)))
        elapsed = time.monotonic() - started
    assert statuses == [200] * 500
    # Serially this would take 250 s; concurrently it is the latency plus TLS handshakes.
    assert elapsed < 8, elapsed
