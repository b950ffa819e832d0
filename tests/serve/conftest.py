"""`python -m shared serve` in its own process against the sandbox and Azurite, on the test's own tables; and the two
ways a caller signs in to it, as in Azure: a bearer token of one of the sandbox's automation principals (client
credentials, its app role in `roles`), or a user of the MSP tenant signed in through App Service Authentication's
redirect to Entra's sign-in page (`signed_in`)."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from sandbox.client import sign_in_as
from sandbox.launch import stop
from tests.conftest import ROOT, SandboxHandle
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
    keys_file: Path  # the function keys the host made at start

    def output(self) -> str:
        return self.log.read_bytes().decode(errors="replace")

    def keys(self) -> dict[str, Any]:
        found: dict[str, Any] = json.loads(self.keys_file.read_text())
        return found


@contextmanager
def serving(world: World, *options: str, env: dict[str, str] | None = None) -> Iterator[Served]:
    """`python -m shared serve --port 0 OPTIONS` until the block ends; its URL read from what it prints. Its output
    goes to a file: a pipe nobody reads would fill with its log and stop it."""
    handle, name = tempfile.mkstemp(prefix="serve-", suffix=".log")
    log = Path(name)
    keys_file = Path(tempfile.mkdtemp(prefix="serve-keys-")) / "keys.json"
    with os.fdopen(handle, "wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "shared", "--table-prefix", world.prefix, "--work-queue", world.queue, "serve",
             "--port", "0", "--keys-file", str(keys_file), *options],
            cwd=ROOT, env={**os.environ, **world.env, **(env or {})}, stdout=sink, stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while (found := re.search(r"(http://127\.0\.0\.1:\d+)/api/", log.read_text(errors="replace"))) is None:
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"serve did not start (exit {process.poll()}): {log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield Served(found.group(1), process, log, keys_file)
    finally:
        stop(process, timeout=30)
        log.unlink(missing_ok=True)
        shutil.rmtree(keys_file.parent, ignore_errors=True)


def free_port() -> int:
    """A loopback port free now, for a server that must be told its port (a registered redirect URI names it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for_listener(port: int, process: subprocess.Popen[Any], timeout: float, what: str) -> None:
    """Until something accepts connections on the port; RuntimeError when the process ends or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not listen on port {port} (exit code {process.poll()})") from None
            time.sleep(0.2)


def automation_token(sb: SandboxHandle, role: str) -> str:
    """An access token for the rotator's API (`api://<MSP app>/.default`) of the sandbox's automation principal that
    holds exactly `role`, from Entra's token endpoint (client credentials), as automation gets one in Azure."""
    api = sb.control.msp_api()
    principal = next(a for a in api["automation"] if a["roles"] == [role])
    answer = requests.post(f"{sb.endpoints['entra']}/{api['tenantId']}/oauth2/v2.0/token", data={
        "grant_type": "client_credentials", "client_id": principal["appId"], "client_secret": principal["clientSecret"],
        "scope": f"{api['identifierUri']}/.default"}, verify=sb.ca_file, timeout=30)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["access_token"])


def bearer(sb: SandboxHandle, role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {automation_token(sb, role)}"}


def register_callback(sb: SandboxHandle, url: str) -> None:
    """The local host's sign-in callback as a redirect URI of the MSP app (`az ad app update --web-redirect-uris`)."""
    sb.control.add_redirect_uri("msp-app", f"{url}/.auth/login/aad/callback")


def signed_in(sb: SandboxHandle, url: str, upn: str, then: str = "/api/me") -> requests.Session:
    """A browser-like session signed in as `upn` the way a person signs in: `/.auth/login/aad`, Entra's sign-in page
    (the account picked, `sandbox.client.sign_in_as`), the callback, and back to `then` with the session cookie."""
    session = requests.Session()
    start = session.get(f"{url}/.auth/login/aad", params={"post_login_redirect_uri": then}, allow_redirects=False,
                        timeout=30)
    assert start.status_code == 302, start.text
    answer = sign_in_as(start.headers["Location"], upn, sb.ca_file)
    assert (answer.redirect_uri, answer.method) == (f"{url}/.auth/login/aad/callback", "GET"), answer
    back = session.get(answer.redirect_uri, params=answer.params, allow_redirects=False, timeout=30)
    assert back.status_code == 302 and back.headers["Location"] == then, (back.status_code, back.text)
    return session
