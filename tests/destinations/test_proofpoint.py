"""The Proofpoint Essentials adapter against the sandbox's Proofpoint, with the account read from its Key Vault."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.adapters.keyvault import KeyVaultSecretStore
from shared.destinations import ProofpointDestination, build_destinations
from shared.destinations.proofpoint import FLAGS
from shared.destinations.transport import guarded_sessions
from shared.domain import DestinationConfig
from shared.errors import Ambiguous, DestinationRejected, NotFound, RotationError, Throttled, Unreachable
from tests.destinations import (
    APP,
    DOMAIN,
    NEW_SECRET,
    OLD_SECRET,
    OTHER_APP,
    PP_PASSWORD,
    STACK,
    TENANT,
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


def org_state(sb: Any, domain: str = DOMAIN) -> dict[str, Any]:
    return next(o for o in sb.control.state()["proofpoint"]["orgs"] if o["domain"] == domain)


def reseed_org(sb: Any, **org: Any) -> None:
    """The destinations' org again, with other settings or another GET shape."""
    settings = {"application_id": APP, "ad_key": OLD_SECRET, "sync_frequency": 168, "add_users": False,
                "remove_deleted_users": True, **org.pop("settings", {})}
    sb.control.seed({"proofpoint": {"orgs": [{"domain": DOMAIN, "stack": STACK, "tenantId": TENANT,
                                              "settings": settings, **org}]}})


async def test_delivers_the_secret_and_proofpoint_syncs_with_it(
    sb: Any, proofpoint: ProofpointDestination, caplog: pytest.LogCaptureFixture
) -> None:
    confirmation = await proofpoint.deliver(config(), delivery())

    stored = org_settings(sb)
    assert stored["application_id"] == APP
    assert stored["ad_key"] == NEW_SECRET
    # Settings the rotator does not own kept their values.
    assert stored["sync_frequency"] == 168 and stored["add_users"] is False and stored["remove_deleted_users"] is True
    assert confirmation.checks == ("application-id", "ad-key-present", "sync-reported")
    assert confirmation.sync_reported and confirmation.sync_seen == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    [result] = [r for r in sb.control.proofpoint_sync() if r["domain"] == DOMAIN]
    assert result["ok"], result["error"]
    assert org_state(sb)["lastSyncStatus"] == "success"
    assert any(r.__dict__.get("outcome") == "ok" and r.__dict__.get("destination") == "proofpoint"
               and r.__dict__.get("confirmation") == "application-id,ad-key-present,sync-reported"
               for r in caplog.records)
    for record in caplog.records:
        assert NEW_SECRET not in record.getMessage() and PP_PASSWORD not in repr(record.__dict__)


async def test_the_put_carries_exactly_the_public_clients_fields(sb: Any, proofpoint: ProofpointDestination) -> None:
    # The GET shows read-only fields (secret_expiry, last_successful_sync, tenant_id, ...): none is written back.
    reseed_org(sb, extraFields={"secret_expiry": "+20d", "last_successful_sync": "-1h", "tenant_id": TENANT,
                                "license_tier": "pro", "connected": True})
    await proofpoint.deliver(config(), delivery())
    [put] = org_state(sb)["puts"]
    assert set(put) == {"primary_domain", "application_id", "ad_key", "disable_login", "default_user_role_name",
                        "sync_frequency", "sync_active_users", "sync_distribution_groups", "sync_security_groups",
                        "add_users", "update_users", "remove_deleted_users", "add_groups", "update_groups",
                        "remove_deleted_groups"}
    assert put["sync_frequency"] == 168 and put["primary_domain"] == DOMAIN and put["application_id"] == APP
    assert all(isinstance(put[name], bool) for name in FLAGS)
    assert org_settings(sb)["ad_key"] == NEW_SECRET


async def test_a_flag_the_get_does_not_show_is_left_out_never_sent_as_false(
    sb: Any, proofpoint: ProofpointDestination
) -> None:
    reseed_org(sb, getOmits=["remove_deleted_users", "sync_security_groups", "sync_frequency"])
    await proofpoint.deliver(config(), delivery())
    [put] = org_state(sb)["puts"]
    assert not {"remove_deleted_users", "sync_security_groups", "sync_frequency"} & set(put)
    stored = org_settings(sb)
    assert stored["remove_deleted_users"] is True and stored["sync_security_groups"] is True
    assert stored["sync_frequency"] == 168 and stored["ad_key"] == NEW_SECRET


async def test_confirmation_says_what_proofpoint_showed(sb: Any, proofpoint: ProofpointDestination) -> None:
    # This org's GET shows neither the key (not even masked) nor its sync: only the application id is provable.
    reseed_org(sb, adKeyOnGet="absent", reportsSync=False)
    confirmation = await proofpoint.deliver(config(), delivery())
    assert confirmation.checks == ("application-id",)
    assert not confirmation.sync_reported and confirmation.sync_seen is None
    assert await proofpoint.last_sync(config()) is None


async def test_last_sync_follows_proofpoints_own_sync(sb: Any, proofpoint: ProofpointDestination) -> None:
    assert await proofpoint.last_sync(config()) == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    await proofpoint.deliver(config(), delivery())
    before = datetime.now(UTC).replace(microsecond=0)
    [result] = [r for r in sb.control.proofpoint_sync() if r["domain"] == DOMAIN]  # "sync now", with the new key
    assert result["ok"], result["error"]
    seen = await proofpoint.last_sync(config())
    assert seen is not None and seen >= before


async def test_an_explicit_base_url_is_used_as_given(sb: Any, proofpoint: ProofpointDestination) -> None:
    cfg = DestinationConfig("proofpoint", "proofpoint", {"base_url": f"{sb.endpoints['proofpoint']}/{STACK}/api/v1",
                                                         "domain": DOMAIN, "account_secret": "pp-account"})
    await proofpoint.deliver(cfg, delivery())
    assert org_settings(sb)["ad_key"] == NEW_SECRET


async def test_the_registration_check_tests_login_stack_and_settings(
    sb: Any, proofpoint: ProofpointDestination
) -> None:
    good = await proofpoint.check(config())
    assert good.ok, good.problems
    assert "admin login ok" in good.findings and f"{DOMAIN} is on {STACK}" in good.findings
    assert any("last_successful_sync" in f for f in good.findings)

    wrong_stack = await proofpoint.check(config(stack="eu1"))
    assert not wrong_stack.ok and f"lives on {STACK}, not eu1" in wrong_stack.problems[0]

    bad_login = await proofpoint.check(config(account_secret="pp-account-wrong"))
    assert not bad_login.ok and "admin login fails" in bad_login.problems[0] and "HTTP 401" in bad_login.problems[0]

    unknown = await proofpoint.check(config(domain="unknown-dest.com"))
    assert not unknown.ok and any("not found" in p for p in unknown.problems)
    assert OLD_SECRET not in str(good) + str(wrong_stack) + str(bad_login) and PP_PASSWORD not in str(bad_login)
    assert org_state(sb)["puts"] == []  # a check changes nothing


async def test_pushing_the_same_secret_twice_is_harmless(sb: Any, proofpoint: ProofpointDestination) -> None:
    expires = datetime.now(UTC) + timedelta(days=90)
    await proofpoint.deliver(config(), delivery(expires=expires))
    first = org_settings(sb)
    await proofpoint.deliver(config(), delivery(expires=expires))
    second = org_settings(sb)
    assert second["ad_key"] == NEW_SECRET and second["application_id"] == APP
    assert second == first
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
                                  timeout=(5.0, 0.3),
                                  session_factory=guarded_sessions(settings.destination_allowed_hosts))
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
    # The org still holds another app's id; Proofpoint answers the PUT with success but stores nothing.
    reseed_org(sb, settings={"application_id": OTHER_APP})
    sb.control.add_fault("proofpoint", method="PUT", status=200, message="ok")
    error = await failure(proofpoint, caplog)
    assert error.code == "ProofpointNotConfirmed" and "application_id" in error.message
    assert org_settings(sb)["ad_key"] == OLD_SECRET
