"""infra/scripts/grant-graph-permission.sh (single-tenant mode) assigns the managed identity the rotator's Graph role
and the sign-in log's two, AuditLog.Read.All and Directory.Read.All (List signIns needs both), against the `az`
stand-in (tests/infra/fake_az.py: Graph's appRoleAssignments of a service principal); a re-run assigns nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.infra.bicep_model import INFRA
from tests.infra.test_msp_app_script import (
    AUDIT_LOG_READ_ALL,
    DIRECTORY_READ_ALL,
    FAKE_AZ,
    GRAPH_APP_ID,
    MSP_TENANT,
    OWNED_BY,
    PRINCIPAL,
)

SCRIPT = INFRA / "scripts" / "grant-graph-permission.sh"
GRAPH_SP = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"
READ_WRITE_ALL = "1bfefb4e-e0b5-418b-a88f-73c46d2cc8e9"


def _directory(root: Path) -> Path:
    roles = [(OWNED_BY, "Application.ReadWrite.OwnedBy"), (READ_WRITE_ALL, "Application.ReadWrite.All"),
             (AUDIT_LOG_READ_ALL, "AuditLog.Read.All"), (DIRECTORY_READ_ALL, "Directory.Read.All")]
    graph = {"id": GRAPH_SP, "appId": GRAPH_APP_ID, "appRoleAssignmentRequired": False,
             "appRoles": [{"id": i, "value": v, "allowedMemberTypes": ["Application"]} for i, v in roles]}
    state = root / "directory.json"
    state.write_text(json.dumps({"tenantId": MSP_TENANT, "applications": [], "servicePrincipals": [graph],
                                 "changes": []}))
    bin_dir = root / "bin"
    bin_dir.mkdir()
    (bin_dir / "az").write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE_AZ}" "$@"\n')
    (bin_dir / "az").chmod(0o755)
    return state


def _run(root: Path, *options: str) -> str:
    env = {"PATH": f"{root / 'bin'}:/usr/bin:/bin", "AZURE_IDENTITY_PRINCIPAL_ID": PRINCIPAL,
           "FAKE_AZ_STATE": str(root / "directory.json"), "FAKE_AZ_LOG": str(root / "calls")}
    result = subprocess.run(["bash", str(SCRIPT), *options], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _assigned(state: Path) -> list[dict[str, Any]]:
    held: list[dict[str, Any]] = json.loads(state.read_text()).get("appRoleAssignments", [])
    return held


def test_the_identity_gets_its_role_and_the_sign_in_logs_two(tmp_path: Path) -> None:
    state = _directory(tmp_path)
    out = _run(tmp_path)
    assert [(a["principalId"], a["resourceId"], a["appRoleId"]) for a in _assigned(state)] == [
        (PRINCIPAL, GRAPH_SP, role) for role in (OWNED_BY, AUDIT_LOG_READ_ALL, DIRECTORY_READ_ALL)]
    assert "Granted: AuditLog.Read.All" in out and "Granted: Directory.Read.All" in out
    again = _run(tmp_path)
    assert len(_assigned(state)) == 3 and again.count("Already granted") == 3


def test_all_grants_read_write_all_and_still_the_sign_in_log(tmp_path: Path) -> None:
    state = _directory(tmp_path)
    _run(tmp_path, "--all")
    assert [a["appRoleId"] for a in _assigned(state)] == [READ_WRITE_ALL, AUDIT_LOG_READ_ALL, DIRECTORY_READ_ALL]
