"""The local host is test equipment: the deployed package never imports it, `.funcignore` leaves it out, and in a
deployment (no devhost/) `python -m shared serve` says why it cannot run instead of failing on an import."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from shared.cli import EXIT_FAILED
from tests.conftest import ROOT


def test_no_module_of_the_deployed_package_imports_devhost() -> None:
    probe = (
        "import importlib, pkgutil, sys, function_app, shared\n"
        "for m in pkgutil.walk_packages(shared.__path__, 'shared.'):\n"
        "    m.name == 'shared.__main__' or importlib.import_module(m.name)\n"
        "found = sorted(n for n in sys.modules if n == 'devhost' or n.startswith('devhost.'))\n"
        "assert not found, found\n"
        "print(len([n for n in sys.modules if n.startswith('shared.')]))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=300,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) >= 20  # the walk really imported the package


def test_funcignore_leaves_the_test_equipment_out() -> None:
    ignored = {line.strip() for line in (ROOT / ".funcignore").read_text().splitlines()}
    assert {"devhost/", "sandbox/", "tests/", "scripts/"} <= ignored


def test_serve_in_a_deployment_says_the_local_host_is_not_there(tmp_path: Path) -> None:
    for name in ("function_app.py", "host.json"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "shared", tmp_path / "shared", ignore=shutil.ignore_patterns("__pycache__"))
    for command in ("serve", "work"):
        result = subprocess.run([sys.executable, "-m", "shared", command], cwd=tmp_path, capture_output=True,
                                text=True, timeout=120, check=False, env={"PATH": "/usr/bin:/bin"})
        assert result.returncode == EXIT_FAILED, (command, result.stderr)
        assert "devhost/" in result.stderr and "checkout" in result.stderr and "Traceback" not in result.stderr
