"""The control API: reset, seed, state, faults, holds, clock; and the sandbox under concurrent load."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import aiohttp
import pytest
import requests
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.data.tables import TableClient, TableServiceClient, UpdateMode

from sandbox.client import through_tables_proxy
from tests.conftest import SandboxHandle

CUSTOMER = "c0000000-0000-4000-8000-000000000021"


def openid(sb: SandboxHandle, tenant: str = CUSTOMER) -> requests.Response:
    return requests.get(
        f"{sb.endpoints['entra']}/{tenant}/v2.0/.well-known/openid-configuration", verify=sb.ca_file, timeout=10
    )


def test_files_and_settings(sb: SandboxHandle) -> None:
    assert set(sb.endpoints) == {"entra", "graph", "keyvault", "proofpoint", "portal", "webhooks", "control",
                                 "identity", "tables", "partnercenter",
                                 "psa_autotask", "psa_halopsa", "psa_connectwise"}
    assert sb.endpoints["identity"].startswith("http://127.0.0.1:")
    assert sb.endpoints["tables"].startswith("http://127.0.0.1:")  # plain http, as Azurite
    plain = ("identity", "tables")
    assert all(url.startswith("https://127.0.0.1:") for name, url in sb.endpoints.items() if name not in plain)
    assert sb.settings["GRAPH_BASE_URL"] == sb.endpoints["graph"] + "/v1.0"
    assert sb.settings["PROOFPOINT_BASE_URL"] == sb.endpoints["proofpoint"] + "/{stack}/api/v1"
    assert sb.settings["PARTNER_CENTER_URL"] == sb.endpoints["partnercenter"]
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


async def test_500_concurrent_requests_are_all_in_flight_at_once(sb: SandboxHandle) -> None:
    """Concurrency without a stopwatch: a hold parks every request, and all 500 are parked at the same time (a
    serial server would hold one). The latency fault still applies to each. Throughput is `make bench`'s job."""
    sb.control.add_fault("entra", latency_ms=50, count=None)
    hold = sb.control.add_hold("entra", method="GET", path="openid-configuration", count=500)
    tls = ssl.create_default_context(cafile=sb.ca_file)
    url = f"{sb.endpoints['entra']}/{CUSTOMER}/v2.0/.well-known/openid-configuration"
    connector = aiohttp.TCPConnector(limit=0, ssl=tls)
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one() -> int:
            async with session.get(url) as response:
                await response.read()
                return response.status

        async def all_parked() -> int:
            waiting = 0
            for _ in range(3000):
                waiting = await asyncio.to_thread(sb.control.waiting, hold)
                if waiting == 500:
                    break
                await asyncio.sleep(0.1)
            await asyncio.to_thread(sb.control.release, hold)
            return waiting

        requests_done = asyncio.gather(*(one() for _ in range(500)))
        parked = await all_parked()
        statuses = await requests_done
    assert parked == 500
    assert statuses == [200] * 500


# ---------------------------------------------------------------- faults after the work, skip, client id, counts

PPE = "a0000000-0000-4000-8000-000000000021"


def seed_app(sb: SandboxHandle) -> None:
    sb.control.seed({"tenants": [{
        "id": CUSTOMER, "name": "Faulty",
        "applications": [{"appId": PPE, "displayName": "Proofpoint Essentials", "owners": ["msp-app"]}],
        "grants": [{"appId": "msp-app", "roles": ["Application.ReadWrite.OwnedBy"]}],
    }]})


def token(sb: SandboxHandle, client_id: str, **form: str) -> requests.Response:
    return requests.post(
        f"{sb.endpoints['entra']}/{CUSTOMER}/oauth2/v2.0/token",
        data={"grant_type": "client_credentials", "scope": "https://graph.microsoft.com/.default",
              "client_id": client_id, **form},
        verify=sb.ca_file, timeout=10,
    )


def msp_token(sb: SandboxHandle) -> str:
    assertion = requests.get(
        f"{sb.endpoints['identity']}/msi/token", params={"resource": "api://AzureADTokenExchange",
                                                          "api-version": "2019-08-01"},
        headers={"X-IDENTITY-HEADER": sb.settings["IDENTITY_HEADER"]}, timeout=10,
    ).json()["access_token"]
    answer = token(sb, sb.settings["MSP_APP_CLIENT_ID"], client_assertion=assertion,
                   client_assertion_type="urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
    return str(answer.json()["access_token"])


def add_password(sb: SandboxHandle, bearer: str) -> requests.Response:
    return requests.post(
        f"{sb.endpoints['graph']}/v1.0/applications(appId='{PPE}')/addPassword", json={},
        headers={"Authorization": f"Bearer {bearer}"}, verify=sb.ca_file, timeout=10,
    )


def passwords(sb: SandboxHandle) -> list[dict[str, object]]:
    tenant = next(t for t in sb.control.state()["tenants"] if t["id"] == CUSTOMER)
    return list(tenant["applications"][0]["passwordCredentials"])


@pytest.mark.parametrize("status", [500, 503])
def test_fault_after_the_work_answers_an_error_but_the_work_is_done(sb: SandboxHandle, status: int) -> None:
    seed_app(sb)
    bearer = msp_token(sb)
    sb.control.add_fault("graph", method="POST", path="addPassword$", when="after", status=status)
    answer = add_password(sb, bearer)
    assert answer.status_code == status and "secretText" not in answer.text
    assert answer.json()["error"]["code"]  # the service's own error format
    assert len(passwords(sb)) == 1  # the credential was created all the same
    assert add_password(sb, bearer).status_code == 200 and len(passwords(sb)) == 2  # count=1: used up


def test_dropped_connection_after_the_work(sb: SandboxHandle) -> None:
    seed_app(sb)
    bearer = msp_token(sb)
    sb.control.add_fault("graph", method="POST", path="addPassword$", when="after", drop=True)
    with pytest.raises(requests.ConnectionError):
        add_password(sb, bearer)
    assert len(passwords(sb)) == 1


def test_a_fault_before_the_work_does_nothing(sb: SandboxHandle) -> None:
    seed_app(sb)
    bearer = msp_token(sb)
    sb.control.add_fault("graph", method="POST", path="addPassword$", status=503)
    assert add_password(sb, bearer).status_code == 503
    assert passwords(sb) == []


def test_skip_lets_the_first_matches_through_and_count_spans_requests(sb: SandboxHandle) -> None:
    seed_app(sb)
    bearer = msp_token(sb)
    sb.control.add_fault("graph", method="POST", path="addPassword$", status=503, skip=1, count=2)
    assert [add_password(sb, bearer).status_code for _ in range(4)] == [200, 503, 503, 200]
    assert sb.control.faults() == []


def test_faults_and_holds_match_the_token_request_by_client_id(sb: SandboxHandle) -> None:
    seed_app(sb)
    sb.control.add_fault("entra", path="/token$", client_id=PPE.upper(), status=503, count=None)
    assert token(sb, PPE, client_secret="x").status_code == 503
    msp_token(sb)  # the MSP app's own token request is not caught
    hold = sb.control.add_hold("entra", path="/token$", client_id=PPE)
    sb.control.clear_faults()
    results: list[int] = []
    worker = threading.Thread(target=lambda: results.append(token(sb, PPE, client_secret="x").status_code))
    worker.start()
    sb.control.wait_held(hold)
    msp_token(sb)  # passes the hold while the customer app's request is parked
    assert results == [] and sb.control.held(hold) == 1
    sb.control.release(hold)
    worker.join(timeout=10)
    assert results == [401]  # served after release: the secret is wrong


def test_skip_on_a_hold_catches_the_nth_match(sb: SandboxHandle) -> None:
    hold = sb.control.add_hold("entra", method="GET", path="openid-configuration", skip=2)
    assert [openid(sb).status_code for _ in range(2)] == [200, 200]
    assert sb.control.held(hold) == 0
    worker = threading.Thread(target=openid, args=(sb,))
    worker.start()
    sb.control.wait_held(hold)
    sb.control.release(hold)
    worker.join(timeout=10)
    assert not worker.is_alive()


@pytest.mark.parametrize("doc", [
    {"service": "graph", "when": "during", "status": 500},
    {"service": "graph", "skip": -1, "status": 500},
    {"service": "graph", "count": 0, "status": 500},
    {"service": "graph", "client_id": 5, "status": 500},
    {"service": "graph", "when": "after"},  # after the work, only a status or a drop makes sense
    {"service": "nowhere", "status": 500},
])
def test_bad_fault_is_400(sb: SandboxHandle, doc: dict[str, object]) -> None:
    response = requests.post(f"{sb.endpoints['control']}/faults", json=doc, verify=sb.ca_file, timeout=10)
    assert response.status_code == 400 and response.json()["error"]
    assert sb.control.faults() == []


def test_per_app_propagation_delay_in_sandbox_time(sb: SandboxHandle) -> None:
    seed_app(sb)
    bearer = msp_token(sb)
    sb.control.set_propagation_delays({PPE: 3600})  # sandbox time: an hour, without waiting one
    secret = add_password(sb, bearer).json()["secretText"]
    assert token(sb, PPE, client_secret=secret).status_code == 401
    sb.control.set_clock(1800)
    assert token(sb, PPE, client_secret=secret).status_code == 401
    sb.control.set_clock(3601)
    assert token(sb, PPE, client_secret=secret).status_code == 200
    assert passwords(sb)[0]["propagationDelaySeconds"] == 3600


def test_random_propagation_delays_are_seeded(sb: SandboxHandle) -> None:
    def draws() -> list[float]:
        sb.control.reset()
        seed_app(sb)
        bearer = msp_token(sb)
        sb.control.set_random_propagation(seed=7, max_seconds=300)
        for _ in range(5):
            add_password(sb, bearer)
        return [float(str(p["propagationDelaySeconds"])) for p in passwords(sb)]

    first = draws()
    assert first == draws() and len(set(first)) == 5 and all(0 <= d <= 300 for d in first)
    sb.control.reset()
    assert sb.control.state()["propagationDelays"] == {}


def test_bad_settings_are_400(sb: SandboxHandle) -> None:
    for doc in ({"propagation_delays": {PPE: -1}}, {"propagation_delays": [1]}, {"random_propagation": {"seed": 1}},
                {"tables_upstream": "http://example.com:10002"}, {"propagation_delay_seconds": "x"}):
        response = requests.post(f"{sb.endpoints['control']}/settings", json=doc, verify=sb.ca_file, timeout=10)
        assert response.status_code == 400, doc


# ---------------------------------------------------------------- the Tables proxy in front of Azurite


@pytest.fixture
def table(sb: SandboxHandle) -> Iterator[TableClient]:
    connection = os.environ.get("STATE_TABLES_CONNECTION_STRING")
    if not connection:
        pytest.fail("STATE_TABLES_CONNECTION_STRING is not set: run the tests through `make test` (starts Azurite)")
    proxied = through_tables_proxy(connection, sb.endpoints["tables"])
    service = TableServiceClient.from_connection_string(proxied, retry_total=0)  # a fault reaches the test
    name = "proxy" + uuid.uuid4().hex[:12]
    client = service.create_table(name)
    yield client
    service.delete_table(name)


def test_tables_proxy_forwards_to_azurite(sb: SandboxHandle, table: TableClient) -> None:
    table.upsert_entity({"PartitionKey": "p", "RowKey": "r", "Stage": "idle"})
    direct = TableServiceClient.from_connection_string(os.environ["STATE_TABLES_CONNECTION_STRING"])
    assert direct.get_table_client(table.table_name).get_entity("p", "r")["Stage"] == "idle"


# The rotator's state writes are PUTs (replace, ETag-guarded) and POSTs (insert); upsert's default, merge, is a PATCH.
REPLACE = UpdateMode.REPLACE


def test_tables_fault_after_the_write(sb: SandboxHandle, table: TableClient) -> None:
    sb.control.add_fault("tables", method="PUT", when="after", status=503)
    with pytest.raises(HttpResponseError) as caught:
        table.upsert_entity({"PartitionKey": "p", "RowKey": "r", "Stage": "creating"}, mode=REPLACE)
    assert caught.value.status_code == 503
    assert table.get_entity("p", "r")["Stage"] == "creating"  # Azurite stored it all the same


def test_tables_hold_parks_a_state_write(sb: SandboxHandle, table: TableClient) -> None:
    hold = sb.control.add_hold("tables", method="PUT", path=rf"/{table.table_name}\(", when="before")
    worker = threading.Thread(target=table.upsert_entity, args=({"PartitionKey": "p", "RowKey": "r", "V": 1}, REPLACE))
    worker.start()
    sb.control.wait_held(hold)
    with pytest.raises(ResourceNotFoundError):
        table.get_entity("p", "r")  # not written yet: held before Azurite saw it
    sb.control.release(hold)
    worker.join(timeout=10)
    assert table.get_entity("p", "r")["V"] == 1


def test_a_hold_can_match_on_the_body(sb: SandboxHandle, table: TableClient) -> None:
    hold = sb.control.add_hold("tables", method="PUT", body_match=r'"Stage": ?"idle"', when="after")
    table.upsert_entity({"PartitionKey": "p", "RowKey": "r", "Stage": "creating"}, mode=REPLACE)  # not caught
    idle = {"PartitionKey": "p", "RowKey": "r", "Stage": "idle"}
    worker = threading.Thread(target=table.upsert_entity, args=(idle, REPLACE))
    worker.start()
    sb.control.wait_held(hold)
    assert table.get_entity("p", "r")["Stage"] == "idle"  # after: Azurite has it, the answer is held
    sb.control.release(hold)
    worker.join(timeout=10)
    assert sb.control.held(hold) == 0 or not worker.is_alive()


def test_a_request_held_before_whose_caller_is_gone_never_reaches_the_service(sb: SandboxHandle) -> None:
    seed_app(sb)
    bearer = msp_token(sb)
    hold = sb.control.add_hold("graph", method="POST", path="addPassword$", when="before")
    url = urlsplit(sb.endpoints["graph"])
    tls = ssl.create_default_context(cafile=sb.ca_file)
    raw = socket.create_connection((url.hostname, url.port), timeout=30)
    conn = tls.wrap_socket(raw, server_hostname=url.hostname)
    conn.sendall(
        f"POST /v1.0/applications(appId='{PPE}')/addPassword HTTP/1.1\r\nHost: {url.netloc}\r\n"
        f"Authorization: Bearer {bearer}\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}".encode()
    )
    sb.control.wait_held(hold, timeout=30)
    conn.close()  # the caller dies while its request is parked
    time.sleep(0.3)
    sb.control.release(hold)
    time.sleep(0.3)
    assert passwords(sb) == []  # as if killed before sending: the service never saw it


@pytest.mark.parametrize("offset_seconds", [900, 86400 * 30])
def test_tokens_minted_on_a_moved_clock_are_valid_on_that_clock(sb: SandboxHandle, offset_seconds: int) -> None:
    """Token lifetimes are judged by the sandbox clock: a token minted after the clock moved forward is valid at once
    (its not-before is in the real clock's future) and one minted before the move has expired once past its hour."""
    seed_app(sb)
    before_the_move = msp_token(sb)
    sb.control.set_clock(offset_seconds)
    assert add_password(sb, msp_token(sb)).status_code == 200
    older = add_password(sb, before_the_move)
    if offset_seconds < 3600:
        assert older.status_code == 200  # within its hour
    else:
        assert older.status_code == 401 and older.json()["error"]["code"] == "InvalidAuthenticationToken"


# ---------------------------------------------------------------- test equipment does not change what it observes


def graph_post(sb: SandboxHandle, bearer: str, action: str, doc: dict[str, object]) -> requests.Response:
    return requests.post(
        f"{sb.endpoints['graph']}/v1.0/applications(appId='{PPE}')/{action}", json=doc,
        headers={"Authorization": f"Bearer {bearer}"}, verify=sb.ca_file, timeout=10,
    )


@pytest.mark.parametrize("installed", ["fault-no-match", "fault-match-latency", "hold-no-match", "hold-and-client-id"])
def test_a_body_matching_fault_or_hold_leaves_graph_the_request_body(sb: SandboxHandle, installed: str) -> None:
    """Matching reads the body; addPassword and removePassword must still see it (display name, end, key id)."""
    seed_app(sb)
    bearer = msp_token(sb)
    if installed == "fault-no-match":
        sb.control.add_fault("graph", method="POST", body_match="never-in-a-body", status=500, count=None)
    elif installed == "fault-match-latency":
        sb.control.add_fault("graph", method="POST", body_match="displayName|keyId", latency_ms=1, count=None)
    elif installed == "hold-no-match":
        sb.control.add_hold("graph", method="POST", body_match="never-in-a-body")
    else:
        sb.control.add_hold("graph", method="POST", body_match="never-in-a-body", client_id="nobody")
    end = "2027-06-01T00:00:00Z"
    added = graph_post(sb, bearer, "addPassword",
                       {"passwordCredential": {"displayName": "ppsync-rot-1", "endDateTime": end}})
    assert added.status_code == 200, added.text
    assert added.json()["displayName"] == "ppsync-rot-1" and added.json()["endDateTime"].startswith("2027-06-01")
    [stored] = passwords(sb)
    assert stored["displayName"] == "ppsync-rot-1"
    removed = graph_post(sb, bearer, "removePassword", {"keyId": added.json()["keyId"]})
    assert removed.status_code == 204, removed.text
    assert passwords(sb) == []


def test_a_body_matching_hold_on_the_token_endpoint_sees_the_form_beside_a_client_id_match(
    sb: SandboxHandle,
) -> None:
    """The client id is read from the form first; the body match must still see the same form."""
    seed_app(sb)
    sb.control.add_fault("entra", path="/token$", client_id=PPE, body_match="client_secret=wrong", status=503,
                         count=None)
    assert token(sb, PPE, client_secret="wrong").status_code == 503  # both matched
    assert token(sb, PPE, client_secret="other").status_code == 401  # body differs: served, and refused
