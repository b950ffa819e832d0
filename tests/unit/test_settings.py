"""Settings: defaults, validation, and a message that names the bad setting."""

from __future__ import annotations

import json

import pytest

from shared.settings import IdentityMode, Settings, SettingsError

BASE = {"KEY_VAULT_URL": "https://kv-demo.vault.azure.net/", "STATE_TABLES_ENDPOINT": "https://st.table.core.windows.net"}
GUID = "5a1d0000-0000-4000-8000-000000000001"


def test_defaults() -> None:
    s = Settings.from_env(BASE)
    assert s.identity_mode is IdentityMode.MANAGED_IDENTITY
    assert (s.renew_before_days, s.secret_lifetime_days, s.retire_grace_hours) == (30, 180, 24)
    assert s.retire_quiet_hours == 26
    assert s.rotation_schedule == "0 0 6 * * *"
    assert s.key_vault_url == "https://kv-demo.vault.azure.net"
    assert s.discovery_name_patterns == ("PPE", "Proofpoint", "ModusCloud")
    assert s.partner_center_url == "https://api.partnercenter.microsoft.com"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"KEY_VAULT_URL": ""}, "KEY_VAULT_URL"),
        ({"KEY_VAULT_URL": "http://kv.example"}, "KEY_VAULT_URL"),
        ({"STATE_TABLES_ENDPOINT": ""}, "STATE_TABLES_ENDPOINT"),
        ({"IDENTITY_MODE": "password"}, "IDENTITY_MODE"),
        ({"IDENTITY_MODE": "federated"}, "MSP_APP_CLIENT_ID"),
        ({"IDENTITY_MODE": "federated", "MSP_APP_CLIENT_ID": GUID}, "MSP_TENANT_ID"),
        ({"RENEW_BEFORE_DAYS": "soon"}, "RENEW_BEFORE_DAYS"),
        ({"SECRET_LIFETIME_DAYS": "731"}, "SECRET_LIFETIME_DAYS"),
        ({"SCAN_CONCURRENCY": "0"}, "SCAN_CONCURRENCY"),
        ({"RETIRE_UNMANAGED_EXPIRED": "maybe"}, "RETIRE_UNMANAGED_EXPIRED"),
        ({"RETIRE_QUIET_HOURS": "0"}, "RETIRE_QUIET_HOURS"),
        ({"RETIRE_QUIET_HOURS": "721"}, "RETIRE_QUIET_HOURS"),  # the sign-in log keeps 30 days
        ({"RETIRE_QUIET_HOURS": "a day"}, "RETIRE_QUIET_HOURS"),
        ({"PROOFPOINT_BASE_URL": "https://us1.proofpointessentials.com/api/v1"}, "PROOFPOINT_BASE_URL"),
        ({"DISCOVERY_NAME_PATTERNS": " , "}, "DISCOVERY_NAME_PATTERNS"),
        ({"PARTNER_CENTER_URL": "http://api.partnercenter.microsoft.com"}, "PARTNER_CENTER_URL"),
    ],
)
def test_a_bad_setting_is_named(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        Settings.from_env({**BASE, **env})


def test_federated_mode_with_its_ids() -> None:
    s = Settings.from_env({**BASE, "IDENTITY_MODE": "federated", "MSP_APP_CLIENT_ID": GUID, "MSP_TENANT_ID": GUID})
    assert s.identity_mode is IdentityMode.FEDERATED


def test_local_connection_string_is_not_shown_in_repr() -> None:
    s = Settings.from_env({**BASE, "STATE_TABLES_ENDPOINT": "", "STATE_TABLES_CONNECTION_STRING": "AccountKey=x"})
    assert "AccountKey" not in repr(s)


def test_the_consent_redirect_uri_comes_from_the_app_host_unless_set() -> None:
    assert Settings.from_env(BASE).consent_redirect_uri == ""
    on_azure = Settings.from_env({**BASE, "WEBSITE_HOSTNAME": "func-rotator.azurewebsites.net"})
    assert on_azure.consent_redirect_uri == "https://func-rotator.azurewebsites.net/api/consent"
    custom = {**BASE, "WEBSITE_HOSTNAME": "x.azurewebsites.net",
              "CONSENT_REDIRECT_URI": "https://rotator.msp.example/api/consent"}
    assert Settings.from_env(custom).consent_redirect_uri == "https://rotator.msp.example/api/consent"
    local = Settings.from_env({**BASE, "CONSENT_REDIRECT_URI": "http://localhost:7071/api/consent"})
    assert local.consent_redirect_uri == "http://localhost:7071/api/consent" and local.consent_link_hours == 72


@pytest.mark.parametrize(
    "uri", ["http://rotator.msp.example/api/consent", "https://rotator.example/api/consent?x=1", "ftp://x/", "consent"]
)
def test_a_consent_redirect_uri_entra_would_not_accept_is_refused(uri: str) -> None:
    with pytest.raises(SettingsError, match="CONSENT_REDIRECT_URI"):
        Settings.from_env({**BASE, "CONSENT_REDIRECT_URI": uri})


def test_bulk_onboarding_settings_default_and_validated() -> None:
    s = Settings.from_env(BASE)
    assert (s.onboarding_concurrency, s.proofpoint_channel_domain, s.proofpoint_channel_stack) == (8, "", "us1")
    assert json.loads(s.onboarding_destinations) == [{"name": "proofpoint", "kind": "proofpoint", "options": {
        "stack": "{stack}", "domain": "{domain}", "account_secret": "proofpoint-api-account"}}]
    hash(s)  # the services are keyed by the settings
    custom = ('[{"name": "pp", "kind": "proofpoint", "options": {"stack": "{stack}", "domain": "{domain}", '
              '"account_secret": "pp-account"}}, {"name": "portal", "kind": "notify-only", '
              '"options": {"instructions": "Paste it into the portal for {customer}"}}]')
    s = Settings.from_env({**BASE, "ONBOARDING_DESTINATIONS": custom, "PROOFPOINT_CHANNEL_DOMAIN": "MSP.example",
                           "PROOFPOINT_CHANNEL_STACK": "eu1", "PROOFPOINT_ACCOUNT_SECRET": "pp-account"})
    assert [d["name"] for d in json.loads(s.onboarding_destinations)] == ["pp", "portal"]
    assert (s.proofpoint_channel_domain, s.proofpoint_channel_stack) == ("msp.example", "eu1")
    for env, named in (({"ONBOARDING_CONCURRENCY": "0"}, "ONBOARDING_CONCURRENCY"),
                       ({"ONBOARDING_DESTINATIONS": "{"}, "ONBOARDING_DESTINATIONS must be a JSON list"),
                       ({"ONBOARDING_DESTINATIONS": "[]"}, "ONBOARDING_DESTINATIONS: must be a non-empty"),
                       ({"ONBOARDING_DESTINATIONS": '[{"name": "p", "kind": "proofpoint", "options": '
                                                    '{"domain": "{org}"}}]'}, "unknown placeholder"),
                       ({"PROOFPOINT_CHANNEL_DOMAIN": "not a domain"}, "PROOFPOINT_CHANNEL_DOMAIN"),
                       ({"PROOFPOINT_CHANNEL_STACK": "us9"}, "PROOFPOINT_CHANNEL_STACK")):
        with pytest.raises(SettingsError, match=named):
            Settings.from_env({**BASE, **env})


@pytest.mark.parametrize(("raw", "days"), [("", 90), ("1", 1), ("3650", 3650)])
def test_the_offboarding_retention(raw: str, days: int) -> None:
    assert Settings.from_env({**BASE, "OFFBOARD_RETENTION_DAYS": raw}).offboard_retention_days == days


@pytest.mark.parametrize("raw", ["0", "3651", "-1", "ninety"])
def test_a_bad_offboarding_retention_is_named(raw: str) -> None:
    with pytest.raises(SettingsError, match="OFFBOARD_RETENTION_DAYS"):
        Settings.from_env({**BASE, "OFFBOARD_RETENTION_DAYS": raw})


def test_the_quiet_period_reaches_the_engine() -> None:
    from datetime import timedelta

    from shared.bootstrap import engine_config

    assert engine_config(Settings.from_env({**BASE, "RETIRE_QUIET_HOURS": "720"})).retire_quiet == timedelta(days=30)
