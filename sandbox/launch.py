"""Start `python -m sandbox` as a child process and stop it again: for the tests, the demo and the benchmark."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sandbox.client import SandboxClient

ROOT = Path(__file__).resolve().parent.parent


class SandboxStartError(RuntimeError):
    """The sandbox exited or did not write its endpoints in time; the message carries its stderr."""


@dataclass(frozen=True)
class RunningSandbox:
    """A running sandbox: where its files are, its base URLs and settings, and its control client."""

    state_dir: Path
    endpoints: dict[str, str]
    settings: dict[str, str]
    ca_file: str
    control: SandboxClient
    pid: int


@contextmanager
def running(state_dir: Path, seed: Path | None = None, timeout: float = 15.0) -> Iterator[RunningSandbox]:
    """The sandbox serving from state_dir until the block ends (terminated then, killed if it lingers)."""
    log_path = state_dir / "sandbox.log"
    command = [sys.executable, "-m", "sandbox", "--state-dir", str(state_dir)]
    if seed is not None:
        command += ["--seed", str(seed)]
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log_file)  # noqa: S603
    try:
        endpoints_file = state_dir / "endpoints.json"
        deadline = time.monotonic() + timeout
        while not endpoints_file.exists():  # written last, once every listener is up
            if process.poll() is not None or time.monotonic() > deadline:
                raise SandboxStartError(
                    f"the sandbox did not start within {timeout} s (exit code {process.poll()}):\n"
                    + log_path.read_text(errors="replace")[-4000:]
                )
            time.sleep(0.05)
        endpoints = json.loads(endpoints_file.read_text())
        ca_file = str(state_dir / "ca.pem")
        yield RunningSandbox(
            state_dir=state_dir,
            endpoints=endpoints,
            settings=json.loads((state_dir / "settings.json").read_text()),
            ca_file=ca_file,
            control=SandboxClient(endpoints["control"], ca_file),
            pid=process.pid,
        )
    finally:
        stop(process)


def stop(process: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    """Terminate a child process, and kill it if it lingers past `timeout` seconds."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)
