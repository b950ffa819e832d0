"""infra/scripts/create-msp-app.sh defines the API's app roles and registers the consent redirect URI.

The script runs against stand-ins for `az` and `azd` that answer the queries it makes as the real CLIs do
and record every call with its exact arguments; the test reads what would have been sent to Entra ID."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.infra.bicep_model import INFRA

SCRIPT = INFRA / "scripts" / "create-msp-app.sh"
APP_ID = "0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0"
SP_ID = "7a6b5c4d-3e2f-4a1b-9c8d-7e6f5a4b3c2d"
MSP_TENANT = "11111111-2222-4333-8444-555555555555"
GRAPH_ROLE = "18a4783c-866b-4cc7-a460-3d5e5662c884"
APP_URL = "https://func-rotator-abc.azurewebsites.net/api"
# The ids are part of the contract: a role id must never change once people are assigned to it.
ROLE_IDS = {
    "Rotator.Read": "5d0c3f0e-7c4b-4f2a-9a51-2f6e8b1c7a01",
    "Rotator.Operate": "9b7e2a64-1d3f-4c8e-b0a2-6c5d4e3f2a02",
}

_AZ = """#!{python} -S
import json, sys
args = sys.argv[1:]
with open({log!r}, "a") as log:
    log.write(json.dumps(["az", *args]) + "\\n")
joined = " ".join(args)
if joined.startswith("account show"):
    print({tenant!r})
elif joined.startswith("ad app list"):
    print({app!r})
elif joined.startswith("ad sp show --id 00000003-0000-0000-c000-000000000000"):
    print({graph_role!r})
elif joined.startswith("ad app show") and "web.redirectUris" in joined:
    print(open({redirects!r}).read(), end="")
elif joined.startswith("ad app federated-credential show"):
    print("{{}}")
elif joined.startswith("ad sp show --id " + {app!r}):
    print({sp!r})
"""

_AZD = """#!{python} -S
import json, sys
with open({log!r}, "a") as log:
    log.write(json.dumps(["azd", *sys.argv[1:]]) + "\\n")
"""


def _run(tmp_path: Path, registered: list[str], app_url: str | None = APP_URL) -> list[list[str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls"
    redirects = tmp_path / "redirects"
    redirects.write_text("".join(f"{uri}\n" for uri in registered))
    values = {
        "python": sys.executable,
        "log": str(log),
        "redirects": str(redirects),
        "tenant": MSP_TENANT,
        "app": APP_ID,
        "sp": SP_ID,
        "graph_role": GRAPH_ROLE,
    }
    for name, template in (("az", _AZ), ("azd", _AZD)):
        path = bin_dir / name
        path.write_text(template.format(**values))
        path.chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "AZURE_IDENTITY_PRINCIPAL_ID": "3c2b1a09-8f7e-4d6c-9b5a-493827161504"}
    if app_url:
        env["AZURE_FUNCTION_APP_URL"] = app_url
    subprocess.run(["bash", str(SCRIPT)], env=env, check=True, capture_output=True, text=True, timeout=900)
    return [json.loads(line) for line in log.read_text().splitlines()]


def _argument(call: list[str], flag: str) -> list[str]:
    """The values after `flag` up to the next flag."""
    start = call.index(flag) + 1
    end = next((i for i in range(start, len(call)) if call[i].startswith("--")), len(call))
    return call[start:end]


def _updates(calls: list[list[str]], flag: str) -> list[list[str]]:
    return [c for c in calls if c[:4] == ["az", "ad", "app", "update"] and flag in c]


def test_the_api_app_roles_are_defined_with_fixed_ids(tmp_path: Path) -> None:
    calls = _run(tmp_path, [])
    role_updates = _updates(calls, "--app-roles")
    assert len(role_updates) == 1
    roles: list[dict[str, Any]] = json.loads(_argument(role_updates[0], "--app-roles")[0])
    assert {r["value"]: r["id"] for r in roles} == ROLE_IDS
    for role in roles:
        assert role["isEnabled"] is True
        assert set(role["allowedMemberTypes"]) == {"User", "Application"}  # people and automation
        assert role["displayName"] and role["description"]
    assert _argument(role_updates[0], "--identifier-uris") == [f"api://{APP_ID}"]
    assert _argument(role_updates[0], "--id") == [APP_ID]


def test_role_assignment_is_required_in_the_msp_tenant(tmp_path: Path) -> None:
    calls = _run(tmp_path, [])
    assert ["az", "ad", "sp", "update", "--id", SP_ID, "--set", "appRoleAssignmentRequired=true"] in calls


@pytest.mark.parametrize(
    "registered",
    [[], ["https://portal.example/callback"], ["https://a.example/x", "https://b.example/y"]],
    ids=["none", "one-other", "two-others"],
)
def test_the_consent_redirect_uri_is_added_to_the_registered_ones(tmp_path: Path, registered: list[str]) -> None:
    calls = _run(tmp_path, registered)
    updates = _updates(calls, "--web-redirect-uris")
    assert len(updates) == 1
    assert _argument(updates[0], "--web-redirect-uris") == [*registered, f"{APP_URL}/consent"]


def test_a_registered_consent_redirect_uri_is_left_alone(tmp_path: Path) -> None:
    calls = _run(tmp_path, ["https://portal.example/callback", f"{APP_URL}/consent"])
    assert not _updates(calls, "--web-redirect-uris")


def test_without_the_app_url_no_redirect_uri_is_guessed(tmp_path: Path) -> None:
    calls = _run(tmp_path, [], app_url=None)
    assert not _updates(calls, "--web-redirect-uris")
    assert ["azd", "env", "set", "MSP_APP_CLIENT_ID", APP_ID] in calls
