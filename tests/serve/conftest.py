"""`python -m shared serve` in its own process against the sandbox and Azurite, on the test's own tables."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from sandbox.launch import stop
from tests.conftest import ROOT
from tests.rotation import conftest as rotation
from tests.rotation.conftest import World

world = rotation.world  # sandbox + Azurite, per-test table prefix
STARTUP_TIMEOUT = 90.0
# What the tests of this folder report at the session's end (e.g. how many cases schemathesis ran).
SUMMARY = pytest.StashKey[list[str]]()


@dataclass(frozen=True)
class Served:
    url: str  # http://127.0.0.1:PORT
    process: subprocess.Popen[bytes]
    log: Path  # its stdout and stderr

    def output(self) -> str:
        return self.log.read_bytes().decode(errors="replace")


@contextmanager
def serving(world: World, *options: str, env: dict[str, str] | None = None) -> Iterator[Served]:
    """`python -m shared serve --port 0 OPTIONS` until the block ends; its URL read from what it prints. Its output
    goes to a file: a pipe nobody reads would fill with its log and stop it."""
    handle, name = tempfile.mkstemp(prefix="serve-", suffix=".log")
    log = Path(name)
    with os.fdopen(handle, "wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "shared", "--table-prefix", world.prefix, "--work-queue", world.queue, "serve",
             "--port", "0", *options],
            cwd=ROOT, env={**os.environ, **world.env, **(env or {})}, stdout=sink, stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while (found := re.search(r"(http://127\.0\.0\.1:\d+)/api/", log.read_text(errors="replace"))) is None:
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"serve did not start (exit {process.poll()}): {log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield Served(found.group(1), process, log)
    finally:
        stop(process, timeout=30)
        log.unlink(missing_ok=True)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    for line in config.stash.get(SUMMARY, []):
        terminalreporter.write_line(line)
