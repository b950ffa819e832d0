"""The local server and Debian's Chromium for the dashboard: what the browser tests and `make demo` share.

`serving` runs `python -m shared serve` (the function app's HTTP functions on 127.0.0.1 behind the local App Service
Authentication, devhost/) until the block ends; `launch` starts Chromium through Playwright by its executable path
(Playwright's own browser download is never used), trusting the sandbox's TLS certificate by its public key only
(`--ignore-certificate-errors-spki-list`: every other certificate error still stops the browser); `sign_in` signs a
person in as in Azure: the dashboard sends the browser to `/.auth/login/aad`, Entra's (the sandbox's) sign-in page
offers the MSP tenant's users, the callback brings it back to the page with a session cookie.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sandbox.launch import stop

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# No network of its own (updates, sync, QUIC probes): the browser talks to the local server and the sandbox only.
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
SIGN_IN_TIMEOUT_MS = 120_000


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
    env: dict[str, str], *, table_prefix: str = "", work_queue: str = "", port: int = 0, timeout: float = 120.0,
) -> Iterator[str]:
    """`python -m shared serve` (the HTTP functions behind App Service Authentication, and a queue worker) on a
    loopback port (0: a free one); yields its base URL. Its function keys go to a private temporary folder."""
    command = [sys.executable, "-m", "shared"]
    if table_prefix:
        command += ["--table-prefix", table_prefix]
    if work_queue:
        command += ["--work-queue", work_queue]
    keys = tempfile.TemporaryDirectory(prefix="rotator-host-keys-")
    command += ["serve", "--port", str(port), "--keys-file", str(Path(keys.name) / "keys.json")]
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
        keys.cleanup()


def spki_hash(pem: str) -> str:
    """base64(SHA-256(SubjectPublicKeyInfo)) of a certificate: the form `--ignore-certificate-errors-spki-list`
    takes."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    key = x509.load_pem_x509_certificate(pem.encode()).public_key()
    return base64.b64encode(hashlib.sha256(key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo))
                            .digest()).decode()


def trusted_keys(ca_file: str, endpoints: Sequence[str]) -> list[str]:
    """The public-key hashes of the sandbox's CA and of the certificates its HTTPS endpoints present."""
    hashes = {spki_hash(Path(ca_file).read_text())}
    for endpoint in endpoints:
        parts = urlsplit(endpoint)
        if parts.scheme == "https" and parts.hostname:
            hashes.add(spki_hash(ssl.get_server_certificate((parts.hostname, parts.port or 443))))
    return sorted(hashes)


def launch(playwright: Any, trust: Sequence[str] = ()) -> Any:
    """Debian's Chromium, headless, through Playwright's sync API; `trust`: public-key hashes whose certificates it
    accepts although no CA it knows signed them (the sandbox's)."""
    args = list(CHROMIUM_ARGS)
    if trust:
        args.append(f"--ignore-certificate-errors-spki-list={','.join(trust)}")
    return playwright.chromium.launch(executable_path=CHROMIUM, args=args, timeout=120_000)


def sign_in(page: Any, base: str, upn: str, then: str = "/api/dashboard") -> None:
    """Open `then` on the local server and sign in as `upn` where it sends the browser: App Service Authentication's
    login, Entra's account picker (the account chosen), the callback, and back to `then`."""
    page.goto(f"{base}{then}", timeout=SIGN_IN_TIMEOUT_MS)
    page.wait_for_selector("text=Pick an account", timeout=SIGN_IN_TIMEOUT_MS)
    page.click(f'button[name="login_hint"][value="{upn}"]', timeout=SIGN_IN_TIMEOUT_MS)
    page.wait_for_url(re.compile(f"^{re.escape(base)}/"), timeout=SIGN_IN_TIMEOUT_MS)  # back on this app
    if page.url != f"{base}{then}":  # the callback refused the sign-in: say why rather than wait
        raise RuntimeError(f"the sign-in as {upn} did not come back to {then}: {page.url}: "
                           f"{page.inner_text('body')[:500]}")


@contextmanager
def browser_page(trust: Sequence[str], width: int, height: int) -> Iterator[Any]:
    """A page of Chromium (launch: trusting the sandbox's keys) at width x height, the browser closed after."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch(playwright, trust)
        try:
            yield browser.new_page(viewport={"width": width, "height": height})
        finally:
            browser.close()


def screenshot(base: str, path: Path, *, upn: str, trust: Sequence[str], width: int = 1280, height: int = 800,
               views: Sequence[tuple[str, Path]] = (), selector: str | None = None) -> None:
    """A browser screenshot of the dashboard once `upn` has signed in and the page has loaded its data (of one
    element only, when `selector` names it); then one of each customer view in `views` (its
    "#/target/<tenant>/<app>" fragment, where to save it), once its credentials are shown."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with browser_page(trust, width, height) as page:
        sign_in(page, base, upn)
        page.wait_for_selector("body[data-ready=true]", timeout=120_000)
        page.wait_for_selector("#caller:not([hidden])", timeout=120_000)
        if selector:
            page.locator(selector).screenshot(path=str(path), timeout=120_000)
        else:
            page.screenshot(path=str(path), timeout=120_000)
        for fragment, view in views:
            page.set_viewport_size({"width": width, "height": 2 * height})  # the panel's sections, unscrolled
            page.goto(f"{base}/api/dashboard{fragment}", timeout=120_000)
            page.wait_for_selector("#detail:not([hidden]) #entra-credentials tbody tr", timeout=120_000)
            page.screenshot(path=str(view), timeout=120_000)


def onboard_all(base: str, path: Path, *, operator: str, partner: str, trust: Sequence[str], method: str,
                width: int = 1280, height: int = 900) -> str:
    """Bulk onboarding on the dashboard as a person does it: `operator` signs in, opens Onboard customers, signs
    `partner` in on Entra's (the sandbox's) page, picks every customer, starts with `method` and waits for the run to
    finish; a screenshot of the result at `path`. Returns the run's id."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with browser_page(trust, width, height) as page:
        page.set_default_timeout(SIGN_IN_TIMEOUT_MS)
        sign_in(page, base, operator)
        page.goto(f"{base}/api/dashboard#/onboarding")
        page.click("#partner-sign-in-link")
        page.wait_for_selector("text=Pick an account")
        page.click(f'button[name="login_hint"][value="{partner}"]')
        page.wait_for_url(re.compile(re.escape(base) + r"/api/dashboard#/onboarding/run/[0-9a-f]{32}$"))
        run_id = str(page.url).rsplit("/", 1)[1]
        page.wait_for_selector("#onboard-customers tbody tr")
        page.select_option("#install-method", method)
        page.wait_for_selector("#onboard-customers tbody tr")
        page.check("#pick-all")
        page.click("#start-onboarding")
        page.wait_for_selector('#run-summary[data-state="finished"]')
        page.screenshot(path=str(path), full_page=True)
        return run_id


def view_screenshot(base: str, path: Path, *, upn: str, trust: Sequence[str], fragment: str, ready: str,
                    width: int = 1280, height: int = 800) -> None:
    """A browser screenshot of one view of the dashboard (its "#/..." fragment, e.g. "#/approvals") once `upn` has
    signed in and the element `ready` names is shown."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with browser_page(trust, width, height) as page:
        sign_in(page, base, upn)
        page.wait_for_selector("body[data-ready=true]", timeout=120_000)
        page.goto(f"{base}/api/dashboard{fragment}", timeout=120_000)
        page.wait_for_selector(ready, timeout=120_000)
        page.screenshot(path=str(path), timeout=120_000)
