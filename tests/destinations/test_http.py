"""The configurable HTTP destination (and its Vircom Portal preset) against the sandbox's MSP portal."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.adapters.keyvault import KeyVaultSecretStore
from shared.destinations import HttpDestination, build_destinations
from shared.domain import DestinationConfig
from shared.errors import Ambiguous, DestinationRejected, RotationError, Throttled, Unreachable
from tests.destinations import (
    APP,
    NEW_KEY_ID,
    NEW_SECRET,
    PORTAL_AUTH,
    TENANT,
    assert_no_secret,
    delivery,
    settings_of,
)

pytestmark = pytest.mark.sandbox
PATH = "/api/office365/azure-ad"


@pytest.fixture
def http(sb: Any, store: KeyVaultSecretStore) -> HttpDestination:
    destination = build_destinations(settings_of(sb), store)["http"]
    assert isinstance(destination, HttpDestination)
    return destination


def portal(sb: Any, **options: str) -> DestinationConfig:
    return DestinationConfig("vircom", "http", {"preset": "vircom-portal", "url": sb.endpoints["portal"] + PATH,
                                                "auth_secret": "portal-auth", **options})


def received(sb: Any) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = sb.control.state()["portal"]["received"]
    return result


async def failure(destination: HttpDestination, cfg: DestinationConfig, caplog: pytest.LogCaptureFixture
                  ) -> RotationError:
    with pytest.raises(RotationError) as caught:
        await destination.deliver(cfg, delivery())
    assert_no_secret(caught.value, caplog.records)
    return caught.value


async def test_the_vircom_preset_posts_the_secret_and_the_portal_confirms(
    sb: Any, http: HttpDestination, caplog: pytest.LogCaptureFixture
) -> None:
    expires = datetime(2031, 5, 17, 8, 30, tzinfo=UTC)
    await http.deliver(portal(sb), delivery(expires=expires))
    [request] = received(sb)
    assert request["method"] == "POST" and request["path"] == PATH
    assert request["body"] == {
        "tenantId": TENANT, "applicationId": APP, "clientSecret": NEW_SECRET, "expiresOn": "2031-05-17T08:30:00Z",
        "keyId": NEW_KEY_ID, "customer": "Contoso",
    }
    for record in caplog.records:
        assert NEW_SECRET not in repr(record.__dict__) and PORTAL_AUTH not in repr(record.__dict__)


async def test_method_and_field_names_are_configurable(sb: Any, http: HttpDestination) -> None:
    cfg = DestinationConfig("portal-put", "http", {
        "url": sb.endpoints["portal"] + "/v2/sync", "method": "PUT", "auth_secret": "portal-auth",
        "success_field": "received", "success_value": "true", "field_clientSecret": "secret",
        "field_applicationId": "client_id",
    })
    await http.deliver(cfg, delivery())
    [request] = received(sb)
    assert request["method"] == "PUT"
    assert request["body"]["secret"] == NEW_SECRET and request["body"]["client_id"] == APP
    assert "clientSecret" not in request["body"]


async def test_delivering_twice_is_harmless(sb: Any, http: HttpDestination) -> None:
    same = delivery()  # a re-push after a crash sends the very same delivery (the expiry is stored, not recomputed)
    await http.deliver(portal(sb), same)
    await http.deliver(portal(sb), same)
    bodies = [r["body"] for r in received(sb)]
    assert len(bodies) == 2 and bodies[0] == bodies[1]


async def test_an_answer_failing_the_success_check_is_not_confirmed(
    sb: Any, http: HttpDestination, caplog: pytest.LogCaptureFixture
) -> None:
    error = await failure(http, portal(sb, success_value="applied"), caplog)
    assert isinstance(error, DestinationRejected) and error.code == "HttpDestinationNotConfirmed"
    assert "status='ok'" in error.message and "'applied'" in error.message


async def test_a_missing_success_field_is_not_confirmed(sb: Any, http: HttpDestination,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    error = await failure(http, portal(sb, success_field="accepted", success_value="true"), caplog)
    assert error.code == "HttpDestinationNotConfirmed" and "'accepted'" in error.message


async def test_a_success_status_outside_the_list_fails(sb: Any, http: HttpDestination,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    error = await failure(http, portal(sb, success_status="201,202"), caplog)
    assert error.code == "HttpDestinationFailed" and "HTTP 200" in error.message


async def test_a_wrong_auth_value_is_an_auth_failure(sb: Any, http: HttpDestination,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    error = await failure(http, portal(sb, auth_secret="portal-auth-wrong"), caplog)
    assert isinstance(error, Unreachable) and error.code == "HttpDestinationAuthFailed"
    assert "HTTP 401" in error.message and "Authorization" in error.message
    assert received(sb) == []


@pytest.mark.parametrize(
    ("fault", "kind", "code"),
    [
        ({"status": 429, "retry_after": 3}, Throttled, "HttpDestinationThrottled"),
        ({"status": 502}, RotationError, "HttpDestinationUnavailable"),
        ({"status": 422, "message": f"bad secret {NEW_SECRET}"}, DestinationRejected, "HttpDestinationRejected"),
        ({"drop": True}, Ambiguous, "HttpDestinationUnavailable"),
    ],
    ids=["429", "502", "422-echo", "drop"],
)
async def test_portal_failures_map_to_codes(sb: Any, http: HttpDestination, caplog: pytest.LogCaptureFixture,
                                            fault: dict[str, Any], kind: type[RotationError], code: str) -> None:
    sb.control.add_fault("portal", **fault)
    error = await failure(http, portal(sb), caplog)
    assert type(error) is kind and error.code == code
    if "retry_after" in fault:
        assert error.retry_after == 3


async def test_a_redirect_is_not_followed(sb: Any, http: HttpDestination, caplog: pytest.LogCaptureFixture) -> None:
    sb.control.add_fault("portal", status=307)
    error = await failure(http, portal(sb), caplog)
    assert isinstance(error, DestinationRejected) and error.code == "HttpDestinationRedirected"


async def test_a_slow_portal_times_out(sb: Any, store: KeyVaultSecretStore, caplog: pytest.LogCaptureFixture) -> None:
    quick = HttpDestination(store, verify=sb.ca_file, timeout=(5.0, 0.3),
                            allowed_hosts=settings_of(sb).destination_allowed_hosts)  # the sandbox is on loopback
    sb.control.add_fault("portal", latency_ms=1500)
    error = await failure(quick, portal(sb), caplog)
    assert isinstance(error, Ambiguous) and error.code == "HttpDestinationUnavailable"


async def test_an_expiry_without_timezone_is_taken_as_utc(sb: Any, http: HttpDestination) -> None:
    await http.deliver(portal(sb), delivery(expires=datetime(2030, 1, 2, 3, 4, 5) + timedelta(0)))
    assert received(sb)[0]["body"]["expiresOn"] == "2030-01-02T03:04:05Z"


async def test_the_portals_certificate_is_still_verified_against_the_trusted_store(
    sb: Any, store: KeyVaultSecretStore, caplog: pytest.LogCaptureFixture
) -> None:
    """The CA store is loaded once per process, and verification stays on: the system's store (verify=True) does not
    trust the sandbox's CA, so nothing is delivered; the sandbox's CA does, for a second connection too."""
    allowed = settings_of(sb).destination_allowed_hosts  # the sandbox is on loopback
    system_store = HttpDestination(store, verify=True, allowed_hosts=allowed)
    error = await failure(system_store, portal(sb), caplog)
    assert error.code == "HttpDestinationUnavailable" and received(sb) == []
    for _ in range(2):  # each delivery opens a session and a connection of its own
        await HttpDestination(store, verify=sb.ca_file, allowed_hosts=allowed).deliver(portal(sb), delivery())
    assert len(received(sb)) == 2
