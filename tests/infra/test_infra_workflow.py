"""The GitHub Actions workflow the MSP runs in their fork checks the Bicep with the real tools (there is no
Bicep CLI here): it compiles and lints every file, previews the subscription deployment with an OIDC login,
and previews azd's provisioning."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.infra.bicep_model import ROOT

WORKFLOW = ROOT / ".github" / "workflows" / "infra.yml"


def _workflow() -> dict[str, Any]:
    data = yaml.safe_load(WORKFLOW.read_text())
    assert isinstance(data, dict)
    return data


def _script(job: dict[str, Any]) -> str:
    return "\n".join(step.get("run", "") for step in job["steps"])


def test_every_bicep_file_is_built_and_linted_with_the_bicep_cli() -> None:
    job = _workflow()["jobs"]["build-and-lint"]
    script = _script(job)
    assert "az bicep install" in script
    assert 'az bicep build --file "$file"' in script
    assert 'az bicep lint --file "$file"' in script
    # Every file under infra/, not a list that could go stale; and a failure fails the job.
    assert script.count("find infra -name '*.bicep'") == 2
    assert script.count("|| status=1") == 2 and script.count("exit $status") == 2


def test_the_deployment_is_previewed_with_an_oidc_login() -> None:
    job = _workflow()["jobs"]["what-if"]
    assert job["permissions"]["id-token"] == "write"
    login = next(step for step in job["steps"] if str(step.get("uses", "")).startswith("azure/login@"))
    assert set(login["with"]) == {"client-id", "tenant-id", "subscription-id"}  # federated: no client secret
    script = _script(job)
    assert "az deployment sub what-if" in script and "--template-file infra/main.bicep" in script
    assert "azd provision --preview" in script
    assert "--federated-credential-provider github" in script
    assert "secrets." not in WORKFLOW.read_text()


def test_the_workflow_is_documented() -> None:
    readme = (ROOT / "infra" / "README.md").read_text()
    assert ".github/workflows/infra.yml" in readme
    for command in ("az bicep build", "az bicep lint", "az deployment sub what-if", "azd provision --preview"):
        assert command in readme, command
    assert Path(WORKFLOW).is_file()
