"""No drift between the settings the code reads (shared.settings.SETTINGS), the app settings the Bicep sets
and local.settings.example.json."""

from __future__ import annotations

import json
import re
from pathlib import Path

from shared.settings import SETTINGS, Settings
from tests.infra.bicep_model import (
    FUNCTION_APP,
    MAIN,
    ROOT,
    app_settings,
    evaluate,
    local_example_values,
    parse,
    product_settings,
    runtime_settings,
)

CODE_SETTINGS = {s.name for s in SETTINGS}
DEFAULTS = {s.name: s.default for s in SETTINGS}

# Read by the code, deliberately NOT set in Azure (the Bicep must not set them):
LOCAL_ONLY = {
    # A connection string carries an account key; in Azure shared-key access is off and the code
    # reaches the tables through STATE_TABLES_ENDPOINT with the managed identity. Locally: Azurite.
    "STATE_TABLES_CONNECTION_STRING",
    # The same for the rotation work queue: in Azure WORK_QUEUE__queueServiceUri with the managed identity.
    "WORK_QUEUE",
    # Trust for the sandbox's generated CA; in Azure the public CAs apply.
    "CA_BUNDLE",
    # Lets destinations reach the sandbox on loopback; in Azure every destination must be a public address.
    "DESTINATION_ALLOWED_HOSTS",
}

# Set (in Azure or locally) but read by the Functions host, the platform or Core Tools, never by the code:
HOST_SETTINGS = {
    # Identity-based connection of the host's storage (runtime blobs, queues, timer leases).
    "AzureWebJobsStorage__credential",
    "AzureWebJobsStorage__clientId",
    "AzureWebJobsStorage__blobServiceUri",
    "AzureWebJobsStorage__queueServiceUri",
    "AzureWebJobsStorage__tableServiceUri",
    # The rest of the work queue's identity-based connection, read by the queue trigger's binding.
    "WORK_QUEUE__credential",
    "WORK_QUEUE__clientId",
    # The host's own telemetry, sent with an Entra ID token (local auth is off on Application Insights).
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
    # App Service Authentication's client assertion for the browser sign-in: the managed identity's client id
    # (infra/app/function-app.bicep, clientSecretSettingName).
    "OVERRIDE_USE_MI_FIC_ASSERTION_CLIENTID",
    # Local only (Core Tools): the language worker and the host storage (Azurite). On Flex Consumption
    # the runtime comes from functionAppConfig.runtime and these may not be set (see below).
    "FUNCTIONS_WORKER_RUNTIME",
    "AzureWebJobsStorage",
}

# The platform rejects or misbehaves with these on Flex Consumption, or they would bring back a key.
FORBIDDEN_IN_AZURE = {
    "FUNCTIONS_WORKER_RUNTIME",
    "FUNCTIONS_EXTENSION_VERSION",
    "WEBSITE_RUN_FROM_PACKAGE",
    "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING",
    "WEBSITE_CONTENTSHARE",
    "AzureWebJobsStorage",
    "APPINSIGHTS_INSTRUMENTATIONKEY",
}


def test_every_setting_the_code_reads_is_set_by_the_bicep() -> None:
    missing = CODE_SETTINGS - LOCAL_ONLY - set(app_settings())
    assert not missing, f"settings the code reads but the Bicep does not set: {sorted(missing)}"


def test_the_bicep_sets_nothing_the_code_or_host_does_not_read() -> None:
    unread = set(app_settings()) - CODE_SETTINGS - HOST_SETTINGS
    assert not unread, f"settings the Bicep sets but nothing reads: {sorted(unread)}"


def test_local_only_settings_are_not_set_in_azure() -> None:
    assert not LOCAL_ONLY & set(app_settings())


def test_no_setting_forbidden_on_flex_consumption_is_set() -> None:
    assert not FORBIDDEN_IN_AZURE & set(app_settings())


def test_runtime_and_product_settings_do_not_overlap() -> None:
    # union() in the Bicep would silently let one win over the other.
    assert not set(runtime_settings()) & set(product_settings())


def test_local_example_lists_every_setting_the_code_reads() -> None:
    missing = CODE_SETTINGS - set(local_example_values())
    assert not missing, f"missing from local.settings.example.json: {sorted(missing)}"


def test_local_example_sets_nothing_the_code_or_host_does_not_read() -> None:
    unread = set(local_example_values()) - CODE_SETTINGS - HOST_SETTINGS
    assert not unread, f"local.settings.example.json sets unread settings: {sorted(unread)}"


def test_local_example_runs_the_python_worker_on_azurite() -> None:
    values = local_example_values()
    assert values["FUNCTIONS_WORKER_RUNTIME"] == "python"
    assert values["AzureWebJobsStorage"] == "UseDevelopmentStorage=true"


def test_allow_lists_are_not_stale() -> None:
    assert LOCAL_ONLY <= CODE_SETTINGS
    assert not HOST_SETTINGS & CODE_SETTINGS
    used = set(app_settings()) | set(local_example_values())
    assert HOST_SETTINGS <= used, f"allow-listed but set nowhere: {sorted(HOST_SETTINGS - used)}"


def test_local_example_is_accepted_by_the_code() -> None:
    Settings.from_env(local_example_values())


def _deployed_env() -> dict[str, tuple[str, bool]]:
    return {name: evaluate(value, MAIN) for name, value in product_settings().items()}


def test_bicep_defaults_are_accepted_by_the_code() -> None:
    env = {name: value for name, (value, _) in _deployed_env().items()}
    env["APPLICATIONINSIGHTS_CONNECTION_STRING"] = "InstrumentationKey=00000000-0000-0000-0000-000000000000"
    settings = Settings.from_env(env)
    assert settings.key_vault_url.startswith("https://")
    assert settings.tables_endpoint and not settings.tables_connection_string


def test_bicep_defaults_equal_the_code_defaults() -> None:
    # Only settings the Bicep fills from a literal or a parameter default; outputs and functions
    # (vault URI, identity, tenant, authority) are deployment-specific.
    compared = {
        name: (value, DEFAULTS[name])
        for name, (value, is_default) in _deployed_env().items()
        if is_default and DEFAULTS.get(name)
    }
    assert len(compared) >= 12, f"too few settings compared: {sorted(compared)}"
    # The Key Vault write budget is computed from the instance count (tests/infra/test_key_vault_budget.py); the
    # code's default is one process's, which the Bicep shares out.
    compared.pop("KEY_VAULT_WRITES_PER_10S", None)
    differ = {name: pair for name, pair in compared.items() if pair[0] != pair[1]}
    assert not differ, f"Bicep default differs from the code's (bicep, code): {differ}"


def test_the_function_app_gets_the_settings_from_main_and_the_runtime() -> None:
    # One object on the site's `appsettings` config, built without a loop: a variable's `for` over these
    # runtime values does not compile (BCP178; tests/infra/test_bicep_compile_safety.py). Before issue 9
    # this test asserted exactly that loop (siteConfig.appSettings = appSettingsList); it now asserts the fix.
    resources = parse(FUNCTION_APP)["resources"]
    site = next(r for r in resources.values() if r["type"] == "Microsoft.Web/sites")
    assert "appSettings" not in site["config"]["properties"]["siteConfig"], "two places would set app settings"
    configs = [r["config"] for r in resources.values() if r["type"] == "Microsoft.Web/sites/config"]
    app_settings_configs = [c for c in configs if c["name"] == "appsettings"]
    assert len(app_settings_configs) == 1
    config = app_settings_configs[0]
    assert config["parent"] == "functionApp"
    union = config["properties"]["function"]
    assert union["type"] == "union"
    assert list(union["parameters"].values())[:2] == ["runtimeSettings", "appSettings"]
    assert not any("loop_type" in json.dumps(v) for v in parse(FUNCTION_APP)["variables"].values())


_ENV_READ = re.compile(r"""(?:os\.environ(?:\.get)?[\[(]|os\.getenv\()\s*["']([A-Za-z_][A-Za-z0-9_]*)["']""")


def test_the_code_reads_no_setting_outside_settings_py() -> None:
    sources = [ROOT / "function_app.py", *sorted((ROOT / "shared").rglob("*.py"))]
    read: dict[str, Path] = {}
    for source in sources:
        if source.exists():
            for name in _ENV_READ.findall(source.read_text()):
                read[name] = source
    stray = {name: str(path.relative_to(ROOT)) for name, path in read.items() if name not in CODE_SETTINGS}
    assert not stray, f"environment read outside the declared SETTINGS: {stray}"
