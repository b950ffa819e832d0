"""The Proofpoint Essentials adapter against the sandbox's Proofpoint, with the account read from its Key Vault.

Every test runs under both PUT semantics the sandbox models (merge, full replace): which one Proofpoint has is
unknown, and the adapter must be right under either."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests

from shared.adapters.keyvault import KeyVaultSecretStore
from shared.destinations import ProofpointDestination, build_destinations
from shared.destinations import proofpoint as proofpoint_module
from shared.destinations.proofpoint import FLAGS, KNOWN_SETTINGS
from shared.destinations.transport import guarded_sessions
from shared.domain import DestinationConfig
from shared.errors import (
    Ambiguous,
    DestinationDrift,
    DestinationRejected,
    NotFound,
    RotationError,
    Throttled,
    Unreachable,
)
from tests.destinations import (
    APP,
    DOMAIN,
    NEW_SECRET,
    OLD_SECRET,
    OTHER_APP,
    PP_PASSWORD,
    PP_USER,
    STACK,
    SYNCED_AT,
    TENANT,
    WRONG_SECRET,
    assert_no_secret,
    delivery,
    org_settings,
    settings_of,
)

pytestmark = pytest.mark.sandbox


@pytest.fixture(params=["merge", "replace"], autouse=True)
def semantics(request: pytest.FixtureRequest, store: KeyVaultSecretStore, sb: Any) -> str:
    """The sandbox's PUT semantics for this test (after the destinations' seed)."""
    sb.control.seed({"proofpoint": {"putSemantics": request.param}})
    return str(request.param)


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


def proofpoint_get(sb: Any) -> dict[str, Any]:
    """The org's settings as Proofpoint's GET returns them (as the channel admin)."""
    response = requests.get(f"{sb.endpoints['proofpoint']}/{STACK}/api/v1/orgs/{DOMAIN}/settings/azure",
                            headers={"X-User": PP_USER, "X-Password": PP_PASSWORD}, verify=sb.ca_file, timeout=10)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


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
    assert confirmation.checks == ("application-id", "ad-key-present", "settings-kept", "sync-reported")
    assert confirmation.sync_reported and confirmation.sync_seen == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    [result] = [r for r in sb.control.proofpoint_sync() if r["domain"] == DOMAIN]
    assert result["ok"], result["error"]
    assert org_state(sb)["lastSyncStatus"] == "success"
    assert any(r.__dict__.get("outcome") == "ok" and r.__dict__.get("destination") == "proofpoint"
               and r.__dict__.get("confirmation") == "application-id,ad-key-present,settings-kept,sync-reported"
               for r in caplog.records)
    for record in caplog.records:
        assert NEW_SECRET not in record.getMessage() and PP_PASSWORD not in repr(record.__dict__)


async def test_the_put_sends_back_what_the_get_returned_changing_only_the_key(
    sb: Any, proofpoint: ProofpointDestination
) -> None:
    # Fields outside the public client's list (tenant_id, license_tier, ...) and Proofpoint's own sync state come back
    # as they were shown: a full-replace PUT that left them out would reset them.
    reseed_org(sb, extraFields={"secret_expiry": "+20d", "last_successful_sync": "-1h", "tenant_id": TENANT,
                                "license_tier": "pro", "connected": True, "max_users": 250})
    before = proofpoint_get(sb)
    await proofpoint.deliver(config(), delivery())
    [put] = org_state(sb)["puts"]
    assert list(put) == list(before)  # the same fields, in the same order, nothing added
    assert {k: v for k, v in put.items() if k != "ad_key"} == {k: v for k, v in before.items() if k != "ad_key"}
    assert put["ad_key"] == "***"  # the sandbox records the key hidden; it holds the new one
    assert org_settings(sb)["ad_key"] == NEW_SECRET
    after = proofpoint_get(sb)
    assert after["tenant_id"] == TENANT and after["license_tier"] == "pro" and after["connected"] is True
    assert after["max_users"] == 250


async def test_types_come_back_as_they_were_shown(sb: Any, proofpoint: ProofpointDestination) -> None:
    # This org stores some flags as the strings PSProofpoint sends, others as JSON booleans, its frequency an integer.
    reseed_org(sb, settings={"add_users": "false", "update_users": "true", "sync_security_groups": True},
               extraFields={"tenant_id": TENANT, "seats": 40})
    before = proofpoint_get(sb)
    await proofpoint.deliver(config(), delivery())
    [put] = org_state(sb)["puts"]
    assert put["add_users"] == "false" and put["update_users"] == "true"  # strings stay strings
    assert put["sync_security_groups"] is True and put["remove_deleted_users"] is True  # booleans stay booleans
    assert put["sync_frequency"] == 168 and type(put["sync_frequency"]) is int  # integers stay integers
    assert put["seats"] == 40 and type(put["seats"]) is int
    after = proofpoint_get(sb)
    for name, value in before.items():
        if name not in ("ad_key", "last_successful_sync", "last_sync_status", "secret_expiry"):
            assert after[name] == value and type(after[name]) is type(value), name


async def test_the_application_id_is_set_only_when_the_org_names_another_app(
    sb: Any, proofpoint: ProofpointDestination
) -> None:
    # The same app, spelt otherwise: untouched (GUIDs compare without case).
    assert proofpoint_module.put_body({"application_id": APP.upper()}, APP, "s")["application_id"] == APP.upper()
    for other in ("", OTHER_APP):  # not configured yet, or another app
        reseed_org(sb, settings={"application_id": other})
        await proofpoint.deliver(config(), delivery())
        [put] = org_state(sb)["puts"]
        assert put["application_id"] == APP and org_settings(sb)["application_id"] == APP


async def test_a_field_the_get_does_not_show_is_never_sent(sb: Any, proofpoint: ProofpointDestination) -> None:
    reseed_org(sb, adKeyOnGet="absent", getOmits=["remove_deleted_users", "sync_security_groups"],
               extraFields={"tenant_id": TENANT})
    before = proofpoint_get(sb)
    await proofpoint.deliver(config(), delivery())
    [put] = org_state(sb)["puts"]
    assert set(put) == set(before) | {"ad_key"}  # the key is the one field added
    assert not {"remove_deleted_users", "sync_security_groups"} & set(put)
    assert org_settings(sb)["ad_key"] == NEW_SECRET


async def test_a_flag_the_get_does_not_show_keeps_its_value_under_a_merging_put(
    sb: Any, proofpoint: ProofpointDestination, semantics: str
) -> None:
    if semantics == "replace":
        pytest.skip("under a full replace no client can keep what the GET does not show; the check warns of it")
    reseed_org(sb, getOmits=["remove_deleted_users", "sync_security_groups", "sync_frequency"])
    await proofpoint.deliver(config(), delivery())
    [put] = org_state(sb)["puts"]
    assert not {"remove_deleted_users", "sync_security_groups", "sync_frequency"} & set(put)
    stored = org_settings(sb)
    assert stored["remove_deleted_users"] is True and stored["sync_security_groups"] is True
    assert stored["sync_frequency"] == 168 and stored["ad_key"] == NEW_SECRET


def old_writable_body(current: dict[str, Any], app_id: str, secret: str) -> dict[str, Any]:
    """The adapter's former body: only the fifteen fields PSProofpoint sends, flags made booleans, tenant_id and
    every other field dropped."""
    body = {k: current[k] for k in KNOWN_SETTINGS if k in current}
    body.update({k: v == "true" if isinstance(v, str) else v for k, v in body.items() if k in FLAGS})
    return {**body, "application_id": app_id, "ad_key": secret}


async def test_the_former_body_dropping_tenant_id_is_caught_as_drift_under_a_full_replace(
    sb: Any, proofpoint: ProofpointDestination, semantics: str, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reseed_org(sb, extraFields={"tenant_id": TENANT, "last_successful_sync": SYNCED_AT})
    monkeypatch.setattr(proofpoint_module, "put_body", old_writable_body)
    if semantics == "merge":
        # A merging PUT keeps what the body left out: the former body did no harm there.
        await proofpoint.deliver(config(), delivery())
        assert proofpoint_get(sb)["tenant_id"] == TENANT
        return
    error = await failure(proofpoint, caplog)
    assert isinstance(error, DestinationDrift) and error.code == "ProofpointDrift"
    assert error.fields == ("tenant_id",) and "tenant_id dropped" in error.message
    assert "tenant_id" not in proofpoint_get(sb)  # the damage the read-back found


async def test_drift_names_each_changed_field_and_never_a_secret_like_value(
    sb: Any, proofpoint: ProofpointDestination, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
) -> None:
    reseed_org(sb, settings={"add_users": "false"}, extraFields={"tenant_id": TENANT, "api_token": "tok-1"})

    def careless(current: dict[str, Any], app_id: str, secret: str) -> dict[str, Any]:
        # Converts a string flag to a boolean, changes a value and a secret-like field: each must be named.
        return {**current, "add_users": False, "sync_frequency": 12, "api_token": "tok-2", "ad_key": secret}

    monkeypatch.setattr(proofpoint_module, "put_body", careless)
    sb.control.seed({"proofpoint": {"strict": False}})  # a lenient Proofpoint that takes a type change
    assert proofpoint_get(sb)["add_users"] == "false"
    error = await failure(proofpoint, caplog)
    assert isinstance(error, DestinationDrift)
    assert set(error.fields) == {"add_users", "sync_frequency", "api_token"}
    assert "add_users changed type (string to boolean)" in error.message
    assert "sync_frequency changed (168 to 12)" in error.message
    assert "api_token changed (a hidden value to a hidden value)" in error.message
    assert "tok-1" not in error.message and "tok-2" not in error.message


async def test_confirmation_says_what_proofpoint_showed(sb: Any, proofpoint: ProofpointDestination) -> None:
    # This org's GET shows neither the key (not even masked) nor its sync: only the application id is provable.
    reseed_org(sb, adKeyOnGet="absent", reportsSync=False)
    confirmation = await proofpoint.deliver(config(), delivery())
    assert confirmation.checks == ("application-id", "settings-kept")
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
    assert any("last_successful_sync" in f and "ad_key (masked)" in f for f in good.findings)

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

