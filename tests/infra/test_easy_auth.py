"""App Service Authentication (Easy Auth) in front of the HTTP functions, as agreed with the code
(shared/entrypoints/access.py reads the X-MS-CLIENT-PRINCIPAL header the platform injects): the platform
behaviour comes from infra/app/easy-auth.json, the one file the local host reads too; AllowAnonymous, so the
code decides (401 JSON for the API, a sign-in redirect for the dashboard); the MSP tenant's issuer and the MSP
app; no function-key mode."""

from __future__ import annotations

import json
from typing import Any

from tests.infra.bicep_model import FUNCTION_APP, INFRA, MAIN, body, parse, resources, runtime_settings

EASY_AUTH = INFRA / "app/easy-auth.json"


def _auth() -> dict[str, Any]:
    configs = [
        r["config"]
        for r in resources(FUNCTION_APP, "Microsoft.Web/sites/config").values()
        if r["config"]["name"] == "authsettingsV2"
    ]
    assert len(configs) == 1, "one authsettingsV2 config on the function app"
    assert configs[0]["parent"] == "functionApp"
    properties: dict[str, Any] = configs[0]["properties"]
    return properties


def _settings() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(EASY_AUTH.read_text())
    return loaded


def test_the_platform_module_is_always_on() -> None:
    # While it is on, external requests cannot set X-MS-CLIENT-PRINCIPAL; the code trusts that header.
    assert _auth()["platform"] == {"enabled": True}
    assert _settings()["httpSettings"]["requireHttps"] is True


def test_the_bicep_takes_the_platform_behaviour_from_the_file_the_local_host_reads() -> None:
    variable = parse(FUNCTION_APP)["variables"]["easyAuth"]["value"]["function"]
    assert variable["type"] == "load_json_content" and variable["parameters"]["file_path"] == "easy-auth.json"
    for section in ("globalValidation", "httpSettings", "login"):
        assert _auth()[section] == f"easyAuth.{section}", section


def test_unauthenticated_callers_reach_the_code_which_decides() -> None:
    validation = _settings()["globalValidation"]
    assert validation["unauthenticatedClientAction"] == "AllowAnonymous"
    assert validation["requireAuthentication"] is False
    assert validation["excludedPaths"] == []


def test_there_is_no_function_key_mode() -> None:
    for path in (FUNCTION_APP, MAIN):
        assert "allowFunctionKeyCallers" not in parse(path)["parameters"], path
        assert "ALLOW_FUNCTION_KEY_CALLERS" not in path.read_text(), path
    given = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert "allowFunctionKeyCallers" not in given


def test_tokens_come_from_the_msp_tenant_for_the_msp_app() -> None:
    aad = _auth()["identityProviders"]["azureActiveDirectory"]
    assert aad["registration"]["clientId"] == "authClientId"
    assert aad["registration"]["openIdIssuer"] == "authIssuer"
    issuer = parse(FUNCTION_APP)["variables"]["authIssuer"]["value"]
    assert issuer == "${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0"
    assert aad["validation"]["allowedAudiences"] == ["authClientId", "api://${authClientId}"]
    # No client id yet (before create-msp-app.sh): no provider, so no request carries a principal and the code
    # answers 401 to every operator route.
    assert aad["enabled"]["operator"]["type"] == "not"
    assert aad["enabled"]["operator"]["operands"]["bool_value"]["function"]["type"] == "empty"
    call = body(next(m for m in parse(MAIN)["modules"].values() if m["detail"]["path"] == "./app/function-app.bicep"))
    # `!empty(authClientId) ? authClientId : mspAppClientId` (pycep nests the `!` around the whole conditional)
    chosen = json.dumps(call["params"]["authClientId"])
    assert all(f'"{name}"' in chosen for name in ("authClientId", "mspAppClientId")) and '"empty"' in chosen
    assert _settings()["login"]["tokenStore"]["enabled"] is False  # no tokens kept on the platform


def test_the_browser_sign_in_proves_the_app_with_the_managed_identity_not_a_secret() -> None:
    # learn.microsoft.com/azure/app-service/configure-authentication-provider-aad, "Use a managed identity instead
    # of a secret": clientSecretSettingName names OVERRIDE_USE_MI_FIC_ASSERTION_CLIENTID, an app setting holding the
    # client id of the user-assigned identity the app registration trusts (create-msp-app.sh's federated credential).
    registration = _auth()["identityProviders"]["azureActiveDirectory"]["registration"]
    assert registration["clientSecretSettingName"] == "OVERRIDE_USE_MI_FIC_ASSERTION_CLIENTID"
    assert runtime_settings()["OVERRIDE_USE_MI_FIC_ASSERTION_CLIENTID"] == "identityClientId"
    assert "clientSecretCertificateThumbprint" not in registration
    assert not any("SECRET" in name for name in runtime_settings()), "no client secret setting beside it"


def _site_children() -> dict[str, dict[str, Any]]:
    return {name: r["config"] for name, r in parse(FUNCTION_APP)["resources"].items()
            if r["type"].startswith("Microsoft.Web/sites/") and r["config"].get("parent") == "functionApp"}


def test_writes_to_the_site_happen_one_at_a_time_app_settings_first() -> None:
    # ARM deploys siblings in parallel; parallel writes to a site's configuration race and lose settings
    # (Azure/azure-dev PR 3125). Every child of the site must depend on exactly the one before it: a single chain.
    children = _site_children()
    assert len(children) >= 4
    after = {name: list(config.get("dependsOn") or []) for name, config in children.items()}
    first = [name for name, deps in after.items() if not deps]
    assert first == ["appSettingsConfig"], after
    chain = first
    while True:
        following = [name for name, deps in after.items() if deps == [chain[-1]]]
        assert len(following) <= 1, f"{following} all wait only for {chain[-1]}: they would run in parallel"
        if not following:
            break
        chain.append(following[0])
    assert sorted(chain) == sorted(children), f"not one chain: {after}"
    names = [children[name]["name"] for name in chain]
    assert names.index("appsettings") < names.index("authsettingsV2")
