"""`make serve` as a newcomer and a service manager meet it: every customer assessed before the first request, and
SIGTERM to the outermost process stops everything it started (the local host, the sandbox, Azurite), as Ctrl-C
does (issue 22, item 8)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import requests

from tests.serve.conftest import free_port, wait_for_listener

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture
def make_serve(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str, dict[str, str]]]:
    """What `make serve` runs (scripts/with-azurite.sh python -m scripts.serve), listening; killed whole at the end."""
    port = free_port()
    env = {**os.environ, "SERVE_PORT": str(port), "SERVE_STATE_DIR": str(tmp_path / "serve")}
    for name in ("STATE_TABLES_CONNECTION_STRING", "WORK_QUEUE"):  # its own Azurite, as `make serve` starts
        env.pop(name, None)
    process = subprocess.Popen(["scripts/with-azurite.sh", sys.executable, "-m", "scripts.serve"], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for_listener(port, process, 180, "make serve")
        yield process, f"http://127.0.0.1:{port}", env
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


def test_every_customer_is_assessed_before_the_first_request(
        make_serve: tuple[subprocess.Popen[bytes], str, dict[str, str]]) -> None:
    _, base, env = make_serve
    token = subprocess.run([sys.executable, "-m", "scripts.token", "--role", "Rotator.Read"], cwd=ROOT, env=env,
                           capture_output=True, text=True, check=True, timeout=60).stdout.strip()
    status = requests.get(f"{base}/api/status", headers={"Authorization": f"Bearer {token}"}, timeout=60)
    assert status.status_code == 200, status.text
    targets = status.json()["targets"]
    assert len(targets) == 5
    assert {t["customer"]: t["status"] for t in targets} == {
        "Contoso": "expired", "Fabrikam": "due", "Northwind": "healthy", "Adatum": "not-owner",
        "Tailspin": "due"}  # its tenant policy shows only when a rotation tries addPassword


def _command(p: psutil.Process) -> str:
    """A process's command line; empty for one that already exited (a zombie not yet reaped, or gone): a short-lived
    child of the tree can end between listing the tree and reading its command line."""
    try:
        return " ".join(p.cmdline())
    except (psutil.ZombieProcess, psutil.NoSuchProcess):
        return ""


def test_sigterm_to_make_serve_stops_every_process_it_started(
        make_serve: tuple[subprocess.Popen[bytes], str, dict[str, str]]) -> None:
    process, _, _ = make_serve
    started = psutil.Process(process.pid).children(recursive=True)
    commands = [_command(p) for p in started]
    for part in ("-m scripts.serve", "-m sandbox", "-m shared", "azurite-table", "azurite-queue"):
        assert any(part in c for c in commands), (part, commands)
    process.send_signal(signal.SIGTERM)  # to the outermost process only, as `kill PID` sends it
    assert process.wait(timeout=60) == 143
    _, alive = psutil.wait_procs(started, timeout=30)
    assert alive == [], [_command(p) for p in alive]
