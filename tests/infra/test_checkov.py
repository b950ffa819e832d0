"""checkov (`--framework bicep --skip-download`) finds no failed check in infra/, and every skip is justified
inline in the template. checkov lives in its own virtual environment (.tools/checkov): its pinned
dependencies conflict with the app's. When it is missing, the test installs it with
scripts/install-checkov.sh (the Makefile normally does that first)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.infra.bicep_model import INFRA, ROOT

CHECKOV = ROOT / ".tools" / "checkov" / "bin" / "checkov"
INSTALL = ROOT / "scripts" / "install-checkov.sh"
# A deadline, not a speed target: checkov takes about 20 s here; `make bench` is where speed is measured.
TIME_LIMIT_SECONDS = 600

# Each resource type whose checks must actually run (a parse problem would silently check nothing).
MUST_BE_CHECKED = {
    "Microsoft.Web/sites",
    "Microsoft.Web/serverfarms",
    "Microsoft.Storage/storageAccounts",
    "Microsoft.KeyVault/vaults",
}


def _checkov() -> Path:
    if not CHECKOV.exists():
        subprocess.run([str(INSTALL)], check=True, timeout=900)
    assert CHECKOV.exists(), f"{INSTALL} did not install {CHECKOV}"
    return CHECKOV


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    checkov = _checkov()
    # Offline and quiet: no policy download, no version check, no telemetry.
    env = {**os.environ, "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false", "BC_SKIP_MAPPING": "TRUE", "LOG_LEVEL": "ERROR"}
    result = subprocess.run(
        [str(checkov), "--framework", "bicep", "--skip-download", "--directory", str(INFRA), "--output", "json"],
        capture_output=True,
        text=True,
        timeout=TIME_LIMIT_SECONDS,
        env=env,
        cwd=ROOT,
    )
    assert result.stdout.strip(), f"checkov printed nothing (rc {result.returncode}): {result.stderr[-2000:]}"
    data = json.loads(result.stdout)
    reports = data if isinstance(data, list) else [data]
    bicep: dict[str, Any] = next(r for r in reports if r.get("check_type") == "bicep")
    bicep["returncode"] = result.returncode
    return bicep


def _describe(check: dict[str, Any]) -> str:
    return f"{check['check_id']} {check['resource']} ({check['file_path']}:{check['file_line_range'][0]})"


def test_checkov_finds_no_failed_check(report: dict[str, Any]) -> None:
    failed = [_describe(c) for c in report["results"]["failed_checks"]]
    assert not failed, "checkov failed checks:\n" + "\n".join(failed)
    assert report["returncode"] == 0


def test_checkov_parses_every_template(report: dict[str, Any]) -> None:
    assert report["summary"]["parsing_errors"] == 0, report["results"].get("parsing_errors")
    results = report["results"]
    checked = {c["resource"].rsplit(".", 1)[0] for c in results["passed_checks"] + results["skipped_checks"]}
    assert MUST_BE_CHECKED <= checked, f"never checked: {sorted(MUST_BE_CHECKED - checked)}"
    assert report["summary"]["passed"] >= 20


def test_every_skip_is_justified_inline(report: dict[str, Any]) -> None:
    for check in report["results"]["skipped_checks"]:
        reason = (check["check_result"].get("suppress_comment") or "").strip()
        assert len(reason) >= 40, f"{_describe(check)}: skip needs a real justification, got {reason!r}"
        # Skips come from the template itself (a `// checkov:skip=ID: reason` line), not from the command line.
        source = (INFRA / check["file_path"].lstrip("/")).read_text()
        assert f"checkov:skip={check['check_id']}:" in source, _describe(check)


def test_no_skip_comment_is_left_without_a_check_to_skip(report: dict[str, Any]) -> None:
    skipped = {(c["check_id"], c["file_path"].lstrip("/")) for c in report["results"]["skipped_checks"]}
    for path in sorted(INFRA.rglob("*.bicep")):
        relative = str(path.relative_to(INFRA))
        for line in path.read_text().splitlines():
            if "checkov:skip=" in line:
                check_id = line.split("checkov:skip=", 1)[1].split(":", 1)[0].strip()
                assert (check_id, relative) in skipped, f"{relative}: stale skip of {check_id}"

