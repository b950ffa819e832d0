"""The Proofpoint Essentials adapter against the sandbox's Proofpoint, with the account read from its Key Vault."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.adapters.keyvault import KeyVaultSecretStore
from shared.destinations import ProofpointDestination, build_destinations
from shared.domain import DestinationConfig
from shared.errors import Ambiguous, DestinationRejected, NotFound, RotationError, Throttled, Unreachable
from tests.destinations import (
    APP,
    DOMAIN,
    NEW_SECRET,
    OLD_SECRET,
    PP_PASSWORD,
    STACK,
    WRONG_SECRET,
    assert_no_secret,
    delivery,
    org_settings,
    settings_of,
)

pytestmark = pytest.mark.sandbox


def config(**options: str) -> DestinationConfig:
    return DestinationConfig("proofpoint", "proofpoint",
                             {"stack": STACK, "domain": DOMAIN, "account_secret": "pp-account", **options})


@pytest.fixture
def proofpoint(sb: Any, store: KeyVaultSecretStore) -> ProofpointDestination:
    destination = build_destinations(settings_of(sb), store)["proofpoint"]
    assert isinstance(destination, ProofpointDestination)
    return destination


async def failure(
    destination: ProofpointDestination, caplog: pytest.LogCaptureFixture, cfg: DestinationConfig | None = None,
    secret: str = NEW_SECRET,
) -> RotationError:
    with pytest.raises(RotationError) as caught:
        await destination.deliver(cfg or config(), delivery(secret))
    assert_no_secret(caught.value, caplog.records)
    return caught.value


async def test_delivers_the_secret_and_proofpoint_syncs_with_it(
    sb: Any, proofpoint: ProofpointDestination, caplog: pytest.LogCaptureFixture
) -> None:
    expires = datetime.now(UTC) + timedelta(days=180)
    await proofpoint.deliver(config(), delivery(expires=expires))

    stored = org_settings(sb)
    assert stored["application_id"] == APP
    assert stored["ad_key"] == NEW_SECRET
    assert stored["secret_expiry"][:10] == expires.date().isoformat()
    # The full body was written back: settings the rotator does not own kept their values.
    assert stored["sync_frequency"] == "weekly" and stored["add_users"] is False
    [result] = [r for r in sb.control.proofpoint_sync() if r["domain"] == DOMAIN]
    assert result["ok"], result["error"]
    assert org_settings(sb)["last_sync_status"] == "success"
    assert any(r.__dict__.get("outcome") == "ok" and r.__dict__.get("destination") == "proofpoint"
               for r in caplog.records)
    for record in caplog.records:
        assert NEW_SECRET not in record.getMessage() and PP_PASSWORD not in repr(record.__dict__)


async def test_pushing_the_same_secret_twice_is_harmless(sb: Any, proofpoint: ProofpointDestination) -> None:
    expires = datetime.now(UTC) + timedelta(days=90)
    await proofpoint.deliver(config(), delivery(expires=expires))
    first = org_settings(sb)
    await proofpoint.deliver(config(), delivery(expires=expires))
    second = org_settings(sb)
    assert second["ad_key"] == NEW_SECRET and second["application_id"] == APP
    assert {k: v for k, v in second.items() if k != "last_successful_sync"} == {
        k: v for k, v in first.items() if k != "last_successful_sync"
    }
    assert all(r["ok"] for r in sb.control.proofpoint_sync() if r["domain"] == DOMAIN)


async def test_a_secret_that_does_not_work_is_rejected_with_proofpoints_reason(
    sb: Any, proofpoint: ProofpointDestination, caplog: pytest.LogCaptureFixture
) -> None:
    error = await failure(proofpoint, caplog, secret=WRONG_SECRET)
    assert isinstance(error, DestinationRejected) and error.code == "ProofpointRejected"
    assert "HTTP 422" in error.message and "ad_key" in error.message and "AADSTS7000215" in error.message
    assert org_settings(sb)["ad_key"] == OLD_SECRET  # nothing changed


@pytest.mark.parametrize(
    ("options", "kind", "code", "words"),
    [
        ({"account_secret": "pp-account-wrong"}, Unreachable, "ProofpointAuthFailed", "HTTP 401"),
        ({"account_secret": "pp-org-admin"}, Unreachable, "ProofpointForbidden", "permission"),
        ({"domain": "unknown-dest.com"}, NotFound, "ProofpointOrgNotFound", "not found"),
        ({"stack": "eu1"}, NotFound, "ProofpointOrgNotFound", "HTTP 404"),
    ],
    ids=["401-wrong-password", "403-other-org-admin", "404-unknown-org", "404-wrong-stack"],
)
async def test_real_errors_carry_distinct_codes_and_proofpoints_message(
    sb: Any, proofpoint: ProofpointDestination, caplog: pytest.LogCaptureFixture,
    options: dict[str, str], kind: type[RotationError], code: str, words: str,
) -> None:
    error = await failure(proofpoint, caplog, config(**options))
    assert type(error) is kind and error.code == code
    assert words in error.message
    assert org_settings(sb)["ad_key"] == OLD_SECRET


async def test_throttling_carries_retry_after(sb: Any, proofpoint: ProofpointDestination,
                                              caplog: pytest.LogCaptureFixture) -> None:
    sb.control.add_fault("proofpoint", method="PUT", status=429, retry_after=7)
    error = await failure(proofpoint, caplog)
    assert isinstance(error, Throttled) and error.code == "ProofpointThrottled"
    assert error.retry_after == 7 and "slow down" in error.message


@pytest.mark.parametrize("status", [500, 503])
async def test_server_errors_are_unavailable(sb: Any, proofpoint: ProofpointDestination,
                                            caplog: pytest.LogCaptureFixture, status: int) -> None:
    sb.control.add_fault("proofpoint", status=status, message="Maintenance window")
    error = await failure(proofpoint, caplog)
    assert error.code == "ProofpointUnavailable" and "Maintenance window" in error.message
    assert not isinstance(error, DestinationRejected)


async def test_a_dropped_connection_is_unavailable_and_ambiguous(
    sb: Any, proofpoint: ProofpointDestination, caplog: pytest.LogCaptureFixture
) -> None:
    sb.control.add_fault("proofpoint", method="PUT", drop=True)
    error = await failure(proofpoint, caplog)
    assert isinstance(error, Ambiguous) and error.code == "ProofpointUnavailable"


async def test_an_answer_slower_than_the_read_timeout_is_unavailable(
    sb: Any, store: KeyVaultSecretStore, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings_of(sb)
    quick = ProofpointDestination(store, base_url=settings.proofpoint_base_url, verify=settings.ca_bundle,
                                  timeout=(5.0, 0.3))
    sb.control.add_fault("proofpoint", method="GET", latency_ms=1500)
    error = await failure(quick, caplog)
    assert isinstance(error, Ambiguous) and error.code == "ProofpointUnavailable"
    assert "0.3 s" in error.message


async def test_an_error_body_echoing_the_secret_or_password_is_scrubbed(
    sb: Any, proofpoint: ProofpointDestination, caplog: pytest.LogCaptureFixture
) -> None:
    sb.control.add_fault("proofpoint", method="PUT", status=500,
                         message=f"could not save ad_key={NEW_SECRET} for password {PP_PASSWORD}")
    error = await failure(proofpoint, caplog)
    assert "could not save ad_key=*** for password ***" in error.message


async def test_a_422_echoing_the_secret_is_rejected_and_scrubbed(
    sb: Any, proofpoint: ProofpointDestination, caplog: pytest.LogCaptureFixture
) -> None:
    sb.control.add_fault("proofpoint", method="PUT", status=422, message=f"Invalid key {NEW_SECRET}")
    error = await failure(proofpoint, caplog)
    assert isinstance(error, DestinationRejected) and error.code == "ProofpointRejected"
    assert "Invalid key ***" in error.message


async def test_an_account_secret_that_is_not_json_is_refused_without_echoing_it(
    sb: Any, proofpoint: ProofpointDestination, caplog: pytest.LogCaptureFixture
) -> None:
    error = await failure(proofpoint, caplog, config(account_secret="pp-account-not-json"))
    assert error.code == "ProofpointAccountSecretInvalid" and "pp-account-not-json" in error.message


async def test_a_missing_account_secret_is_not_found(sb: Any, proofpoint: ProofpointDestination,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    error = await failure(proofpoint, caplog, config(account_secret="no-such-secret"))
    assert isinstance(error, NotFound) and error.code == "SecretNotFound"


async def test_an_invalid_registry_entry_is_rejected_before_any_call(
    sb: Any, proofpoint: ProofpointDestination, caplog: pytest.LogCaptureFixture
) -> None:
    error = await failure(proofpoint, caplog, config(stack="us9"))
    assert isinstance(error, DestinationRejected) and error.code == "InvalidDestinationConfig"
    assert "us9" in error.message


async def test_a_put_that_is_not_visible_on_read_back_is_not_confirmed(
    sb: Any, proofpoint: ProofpointDestination, caplog: pytest.LogCaptureFixture
) -> None:
    # Proofpoint answers the PUT with success but does nothing (the sandbox's fault answers 200 without storing).
    sb.control.add_fault("proofpoint", method="PUT", status=200, message="ok")
    error = await failure(proofpoint, caplog)
    assert error.code == "ProofpointNotConfirmed" and "secret_expiry" in error.message
    assert org_settings(sb)["ad_key"] == OLD_SECRET
