"""The one visit in a real browser (Debian's Chromium through Playwright, no script on the consent page): the customer's
admin opens the consent link, accepts at Entra (the sandbox), lands on the served consent page, clicks "Add the
rotator as owner and register", picks their account at Entra and comes back to a page that says what was done."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from scripts.browser import launch, trusted_keys
from tests.api.test_consent_served import served  # noqa: F401 - the served function app fixture
from tests.browsers import require_chromium
from tests.rotation.conftest import World, customer_seed
from tests.serve.conftest import automation_token

pytestmark = [pytest.mark.sandbox, pytest.mark.azurite]
CHANNEL = "msp-browser.example"
WAIT_MS = 60_000


@pytest.fixture
def channel(world: World) -> Iterator[None]:
    """The MSP's Proofpoint channel org, in the served app's settings and in the sandbox."""
    world.seed_accounts()
    world.sb.control.seed({"proofpoint": {"channels": [{"domain": CHANNEL, "stack": "us1"}]}})
    world.env.update(PROOFPOINT_CHANNEL_DOMAIN=CHANNEL, PROOFPOINT_CHANNEL_STACK="us1")
    yield


@pytest.fixture
def browser(world: World) -> Iterator[object]:
    require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = launch(playwright, trusted_keys(world.sb.ca_file, [world.sb.endpoints["entra"]]))
        try:
            yield chromium
        finally:
            chromium.close()


def test_the_admin_consents_then_adds_the_owner_and_registers_in_one_visit(
    world: World, channel: None, served: str, browser: object  # noqa: F811
) -> None:
    c, seed = customer_seed("Browserco", days_left=20, consent=False, owned=False)
    admin = f"admin@{c.domain}"
    seed["tenants"][0].update(domains=[c.domain], users=[{
        "userPrincipalName": admin, "displayName": "Browserco Admin", "directoryRoles": ["Application Administrator"]}])
    seed["proofpoint"]["orgs"][0].update({"parent": CHANNEL, "name": "Browserco Ltd"})
    world.sb.control.seed(seed)
    token = automation_token(world.sb, "Rotator.Operate")
    made = requests.get(f"{served}/api/consent-url/{c.tenant_id}", headers={"Authorization": f"Bearer {token}"},
                        timeout=60)
    assert made.status_code == 200, made.text

    context = browser.new_context()  # type: ignore[attr-defined]
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    failed: list[str] = []
    # Every answer the visit gets is a success, but the browser's own favicon request (the pages name none).
    page.on("response", lambda r: failed.append(f"{r.status} {r.url}")
            if r.status >= 400 and not r.url.endswith("/favicon.ico") else None)
    page.goto(made.json()["url"])  # Entra's admin consent answers at once: straight back to the consent page
    page.wait_for_selector("h1:text('Consent recorded')")
    page.click("a.button:text('Add the rotator as owner and register')")
    page.click(f"button[value='{admin}']")  # Entra's account picker
    page.wait_for_selector("h1:text('Rotator added as owner and registered')")
    text = page.locator("main").inner_text()
    assert f"signed in as {admin}" in text and "Proofpoint Essentials" in text and c.app_id in text
    assert text.count("Done") >= 3 and "registered for customer Browserco Ltd" in text
    assert c.secret not in page.content()
    context.close()
    assert failed == []
    msp = world.sb.control.msp()["appId"]
    tenant = next(t for t in world.sb.control.state()["tenants"] if t["id"] == c.tenant_id)
    sp = next(s["id"] for s in tenant["servicePrincipals"] if s["appId"] == msp)
    assert world.application(c)["owners"] == [sp]
