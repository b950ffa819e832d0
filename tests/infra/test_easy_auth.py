"""App Service Authentication (Easy Auth) in front of the operator API, as agreed with the code
(shared/entrypoints/access.py reads the X-MS-CLIENT-PRINCIPAL header the platform injects):
requireAuthentication with 401 for the unauthenticated, the MSP tenant's issuer and the MSP app, the
anonymous consent callback and the Event Grid extension path excluded, and one switch,
allowFunctionKeyCallers, that lets function-key callers through (AllowAnonymous) and tells the code so."""

from __future__ import annotations

import json
from typing import Any

from tests.infra.bicep_model import FUNCTION_APP, INFRA, MAIN, body, parse, resources

# The two paths that must not need a sign-in: Entra's admin-consent redirect (a browser with no token,
# trusted only through the rotator's signed state) and the Functions host's Event Grid extension endpoint,
# which Event Grid calls for an AzureFunction endpoint with the extension's system key, never a token.
EXCLUDED = ["/api/consent", "/runtime/webhooks/eventgrid"]


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


def _evaluate(expression: Any, allow_function_key_callers: bool) -> Any:
    """The value of the few expressions used here for one setting of allowFunctionKeyCallers."""
    if expression == "allowFunctionKeyCallers":
        return allow_function_key_callers
    if isinstance(expression, dict) and "operator" in expression:
        operator = expression["operator"]
        operands = operator["operands"]
        if operator["type"] == "not":
            return not _evaluate(operands["bool_value"], allow_function_key_callers)
        if operator["type"] == "conditional":
            chosen = (
                operands["true_value"]
                if _evaluate(operands["condition"], allow_function_key_callers)
                else (operands["false_value"])
            )
            return _evaluate(chosen, allow_function_key_callers)
    return expression


def test_the_platform_module_is_always_on() -> None:
    # While it is on, external requests cannot set X-MS-CLIENT-PRINCIPAL; the code trusts that header.
    assert _auth()["platform"] == {"enabled": True}
    assert _auth()["httpSettings"]["requireHttps"] is True


def test_by_default_every_caller_must_sign_in() -> None:
    validation = _auth()["globalValidation"]
    assert _evaluate(validation["requireAuthentication"], False) is True
    assert _evaluate(validation["unauthenticatedClientAction"], False) == "Return401"
    for path in (FUNCTION_APP, MAIN):
        assert parse(path)["parameters"]["allowFunctionKeyCallers"]["default"] is False
    given = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert given["allowFunctionKeyCallers"]["value"] == "${ALLOW_FUNCTION_KEY_CALLERS=false}"


def test_function_key_callers_are_let_through_only_when_asked() -> None:
    validation = _auth()["globalValidation"]
    assert _evaluate(validation["requireAuthentication"], True) is False
    assert _evaluate(validation["unauthenticatedClientAction"], True) == "AllowAnonymous"
    call = body(next(m for m in parse(MAIN)["modules"].values() if m["detail"]["path"] == "./app/function-app.bicep"))
    assert call["params"]["allowFunctionKeyCallers"] == "allowFunctionKeyCallers"


def test_only_the_consent_callback_and_the_event_grid_extension_skip_sign_in() -> None:
    validation = _auth()["globalValidation"]
    assert validation["excludedPaths"] == "authExcludedPaths"
    assert parse(FUNCTION_APP)["variables"]["authExcludedPaths"]["value"] == EXCLUDED
    # The Event Grid path is excluded because the subscription is of endpoint type AzureFunction.
    events = INFRA / "app/keyvault-events.bicep"
    subscription = next(iter(resources(events, "Microsoft.EventGrid/systemTopics/eventSubscriptions").values()))
    assert subscription["config"]["properties"]["destination"]["endpointType"] == "AzureFunction"


def test_tokens_come_from_the_msp_tenant_for_the_msp_app() -> None:
    aad = _auth()["identityProviders"]["azureActiveDirectory"]
    assert aad["registration"] == {"clientId": "authClientId", "openIdIssuer": "authIssuer"}
    issuer = parse(FUNCTION_APP)["variables"]["authIssuer"]["value"]
    assert issuer == "${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0"
    assert aad["validation"]["allowedAudiences"] == ["authClientId", "api://${authClientId}"]
    # No client id yet (before create-msp-app.sh): no provider, so every request outside the excluded
    # paths gets 401 rather than reaching the code unauthenticated.
    assert aad["enabled"]["operator"]["type"] == "not"
    assert aad["enabled"]["operator"]["operands"]["bool_value"]["function"]["type"] == "empty"
    call = body(next(m for m in parse(MAIN)["modules"].values() if m["detail"]["path"] == "./app/function-app.bicep"))
    # `!empty(authClientId) ? authClientId : mspAppClientId` (pycep nests the `!` around the whole conditional)
    chosen = json.dumps(call["params"]["authClientId"])
    assert all(f'"{name}"' in chosen for name in ("authClientId", "mspAppClientId")) and '"empty"' in chosen
    assert _auth()["login"]["tokenStore"]["enabled"] is False  # no tokens kept on the platform
