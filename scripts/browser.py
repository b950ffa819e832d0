"""The local server and Debian's Chromium for the dashboard: what the browser tests and `make demo` share.

`serving` runs `python -m shared serve` (the function app's HTTP functions on 127.0.0.1, signed in through the
local stand-in for App Service Authentication) until the block ends; `launch` starts Chromium through Playwright
by its executable path (Playwright's own browser download is never used).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sandbox.launch import stop

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# No network of its own (updates, sync, QUIC probes): the browser talks to the local server only.
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
_SERVING = re.compile(r"Serving the function app at (http://127\.0\.0\.1:\d+)/api/")


def chromium_missing() -> str | None:
    """Why the browser cannot run here, or None when it can."""
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} is not installed (make test installs it: scripts/install-chromium.sh, apt-get as root)"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (requirements-dev.txt)"
    return None


@contextmanager
def serving(
    env: dict[str, str], *, caller: str, roles: Sequence[str], table_prefix: str = "", work_queue: str = "",
    timeout: float = 120.0,
) -> Iterator[str]:
    """`python -m shared serve` (the HTTP functions and a queue worker) on a free loopback port as `caller` with
    `roles`; yields its base URL."""
    command = [sys.executable, "-m", "shared"]
    if table_prefix:
        command += ["--table-prefix", table_prefix]
    if work_queue:
        command += ["--work-queue", work_queue]
    command += ["serve", "--port", "0", "--as", caller, "--roles", ",".join(roles)]
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: list[str] = []
    found = threading.Event()
    url: list[str] = []

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:  # keeps draining, so the server never blocks on a full pipe
            lines.append(line)
            match = _SERVING.search(line)
            if match and not found.is_set():
                url.append(match.group(1))
                found.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + timeout
        while not found.wait(0.1):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"`python -m shared serve` did not start (exit code {process.poll()}):\n"
                                   + "".join(lines)[-4000:])
        yield url[0]
    finally:
        stop(process)


def launch(playwright: Any) -> Any:
    """Debian's Chromium, headless, through Playwright's sync API."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=list(CHROMIUM_ARGS), timeout=120_000)


def screenshot(url: str, path: Path, width: int = 1280, height: int = 800) -> None:
    """A browser screenshot of the dashboard at `url` once it has loaded its data."""
    from playwright.sync_api import sync_playwright

    path.parent.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.goto(url, timeout=120_000)
            page.wait_for_selector("body[data-ready=true]", timeout=120_000)
            page.screenshot(path=str(path), timeout=120_000)
        finally:
            browser.close()
