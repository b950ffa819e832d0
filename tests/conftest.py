"""Fixtures shared by every test: the sandbox process and its control client."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sandbox.client import SandboxClient

ROOT = Path(__file__).resolve().parent.parent
STARTUP_TIMEOUT = 15.0


@dataclass(frozen=True)
class SandboxHandle:
    """A running sandbox: where its files are, its base URLs and settings, and its control client."""

    state_dir: Path
    endpoints: dict[str, str]
    settings: dict[str, str]
    ca_file: str
    control: SandboxClient


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxHandle]:
    """Start `python -m sandbox` once per session and stop it at the end."""
    state_dir = tmp_path_factory.mktemp("sandbox")
    stderr_path = state_dir / "stderr.log"
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "sandbox", "--state-dir", str(state_dir)],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr,
        )
    try:
        endpoints_file = state_dir / "endpoints.json"
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not endpoints_file.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(
                    f"sandbox did not start within {STARTUP_TIMEOUT} s (exit code {process.poll()}):\n"
                    + stderr_path.read_text(errors="replace")
                )
            time.sleep(0.05)
        endpoints = json.loads(endpoints_file.read_text())
        ca_file = str(state_dir / "ca.pem")
        yield SandboxHandle(
            state_dir=state_dir,
            endpoints=endpoints,
            settings=json.loads((state_dir / "settings.json").read_text()),
            ca_file=ca_file,
            control=SandboxClient(endpoints["control"], ca_file),
        )
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture
def sb(sandbox: SandboxHandle) -> SandboxHandle:
    """The sandbox, emptied (reset) for this test."""
    sandbox.control.reset()
    return sandbox
