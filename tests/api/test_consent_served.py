"""Onboarding as an MSP engineer and a customer admin do it, every part real: `scripts/onboard-customer.sh
consent-url` asks the served function app (`python -m shared serve`) for the link, the admin's browser opens it at
Entra (the sandbox), which redirects to the app's /api/consent, which records the consent and shows the app."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from urllib.parse import parse_qsl, urlparse

import pytest
import requests

from sandbox.launch import stop
from tests.conftest import ROOT
from tests.rotation.conftest import World
from tests.sandbox.test_admin_consent import register_redirect_uris
from tests.serve.conftest import automation_token, free_port, wait_for_listener

SCRIPT = ROOT / "scripts" / "onboard-customer.sh"


@pytest.fixture
def served(world: World) -> Iterator[str]:
    """The function app on a loopback port, its consent redirect URI registered on the sandbox's MSP app."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    register_redirect_uris(world.sb, f"{base}/api/consent")
    env = {**os.environ, **world.env, "CONSENT_REDIRECT_URI": f"{base}/api/consent"}
    process = subprocess.Popen(
        [sys.executable, "-m", "shared", "--table-prefix", world.prefix, "serve", "--port", str(port), "--no-worker",
         "--keys-file", str(world.sb.state_dir / f"keys-{port}.json")],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_listener(port, process, 60, "python -m shared serve")
        yield base
    finally:
        stop(process, timeout=30)


def _script(*args: str, base: str, token: str) -> subprocess.CompletedProcess[str]:
    """The script as an MSP engineer runs it, with a token for the API from Entra (the sandbox's automation principal
    holding Rotator.Operate), which the served app's App Service Authentication validates."""
    env = {"PATH": os.environ["PATH"], "ROTATOR_TOKEN": token}
    return subprocess.run(["bash", str(SCRIPT), *args, "--url", base], env=env, capture_output=True, text=True,
                          timeout=120, check=False)


def test_the_script_link_leads_the_admin_through_entra_to_the_consent_page(world: World, served: str) -> None:
    c = world.seed_customer("Walkthrough", 20, consent=False, owned=False)
    token = automation_token(world.sb, "Rotator.Operate")
    made = _script("consent-url", "--tenant", c.tenant_id, base=served, token=token)
    assert made.returncode == 0, made.stderr
    link = next(line.strip() for line in made.stdout.splitlines() if "/adminconsent?" in line)
    query = dict(parse_qsl(urlparse(link).query))
    assert query["redirect_uri"] == f"{served}/api/consent" and query["state"]

    # The admin's browser: Entra's page (accepting), then its redirect to the rotator's page.
    page = requests.get(link, verify=world.sb.ca_file, timeout=60)
    assert page.url.startswith(f"{served}/api/consent?admin_consent=True")
    assert page.status_code == 200, page.text
    assert "Consent recorded" in page.text and c.app_id in page.text
    assert page.headers["Content-Type"].startswith("text/html")

    # The link is good once: the same answer again is refused, and the script now says the tenant consented.
    again = requests.get(page.url, timeout=60)
    assert again.status_code == 409 and "StateReplayed" in again.text
    second = _script("consent-url", "--tenant", c.tenant_id, base=served, token=token)
    assert "consented already" in second.stdout


def test_the_script_needs_a_credential_for_the_api(world: World, served: str) -> None:
    c = world.seed_customer("Nokey", 20, consent=False, owned=False)
    result = subprocess.run(["bash", str(SCRIPT), "consent-url", "--tenant", c.tenant_id, "--url", served],
                            env={"PATH": os.environ["PATH"]}, capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 2 and "ROTATOR_TOKEN" in result.stderr


@pytest.mark.parametrize("role", ["Rotator.Read", None])
def test_the_script_is_refused_without_the_operate_role(world: World, served: str, role: str | None) -> None:
    c = world.seed_customer("Noop", 20, consent=False, owned=False)
    token = automation_token(world.sb, role) if role else "not-a-token"
    result = _script("consent-url", "--tenant", c.tenant_id, base=served, token=token)
    assert result.returncode != 0 and "/adminconsent?" not in result.stdout
