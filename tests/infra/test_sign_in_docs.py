"""The documentation tells an operator and an automation author how to call the API in Azure, with what
infra/scripts/create-msp-app.sh really configures, and nothing tells them to use a function key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.infra.bicep_model import INFRA, ROOT

SCRIPT = (INFRA / "scripts" / "create-msp-app.sh").read_text()
INFRA_README = (INFRA / "README.md").read_text()
API_DOC = (ROOT / "docs" / "api.md").read_text()


def _section(text: str, heading: str) -> str:
    start = text.index(heading)
    end = text.find("\n## ", start + len(heading))
    return text[start:] if end < 0 else text[start:end]


SIGN_IN = _section(INFRA_README, "## Sign-in (Easy Auth) and app roles")


@pytest.mark.parametrize(
    "configured",
    ["/.auth/login/aad/callback", "user_impersonation", "04b07795-8ddb-461a-bbee-02f9e1bf7b46", "Rotator.Read",
     "Rotator.Operate", "appRoleAssignmentRequired", "requestedAccessTokenVersion", "api://AzureADTokenExchange"],
)
def test_the_sign_in_section_names_what_the_script_configures(configured: str) -> None:
    assert configured in SCRIPT
    assert configured in SIGN_IN


@pytest.mark.parametrize(
    "step",
    [
        "az ad app create",  # the automation's own app registration
        "az ad sp create",  # and its service principal
        "az ad app federated-credential create",  # a credential without a secret
        "--create-cert",  # or a certificate
        "/appRoleAssignedTo",  # its app role
        "az account get-access-token --resource",  # a token (client credentials once logged in as the app)
        "scope=api://<rotator client id>/.default",
        "Authorization: Bearer",
        "https://<app host>/api/dashboard",  # a person in a browser
    ],
)
def test_the_sign_in_section_has_every_step_for_people_and_automation(step: str) -> None:
    assert step in SIGN_IN


def test_the_api_doc_starts_with_calling_it_in_azure() -> None:
    first = re.search(r"^## .*$", API_DOC, re.MULTILINE)
    assert first is not None and first.group(0) == "## Calling the API in Azure"
    section = _section(API_DOC, "## Calling the API in Azure")
    for step in ("/api/dashboard", "az account get-access-token --resource api://<client id>", "appRoleAssignedTo",
                 "scope=api://<client id>/.default", "Authorization: Bearer"):
        assert step in section, step


def _operator_docs() -> list[Path]:
    return [ROOT / "README.md", INFRA / "README.md", *sorted((ROOT / "docs").glob("*.md")),
            *sorted((ROOT / "scripts").glob("*.sh")), *sorted((INFRA / "scripts").glob("*.sh"))]


@pytest.mark.parametrize("path", _operator_docs(), ids=lambda p: str(p.relative_to(ROOT)))
def test_nothing_tells_an_operator_to_use_a_function_key(path: Path) -> None:
    text = path.read_text().lower()
    for key_use in ("x-functions-key", "functionapp keys", "function keys list", "allow_function_key_callers",
                    "functionkey"):
        assert key_use not in text, key_use
