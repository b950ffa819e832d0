"""Bulk onboarding on the dashboard in a real browser (Debian's Chromium through Playwright), against
`python -m shared serve` with the sandbox (the demo seed: six customers with GDAP relationships, Woodgrove's lacking
Privileged Role Administrator) and Azurite behind it; nobody registered yet.

The operator signs in to the dashboard as in Azure, opens "Onboard customers", signs the partner admin in on the
sandbox's Entra sign-in page (authorization code with PKCE, back through /api/onboarding/callback), sees the GDAP
customers with their roles and what is missing, picks all and starts; each tenant finishes on the page, Woodgrove
failing at the roles step naming the role and the fix. Once the role is added to the relationship, Resume onboards
it. Every page fails its test on a console error.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import pytest

from sandbox.launch import running
from scripts.browser import launch, serving, sign_in, trusted_keys
from scripts.demo import SEED
from tests.browsers import require_chromium
from tests.conftest import STARTUP_TIMEOUT

pytestmark = [pytest.mark.sandbox, pytest.mark.azurite]

OPERATOR, PARTNER = "operator@msp.example", "partner-admin@msp.example"
WOODGROVE = "b0b00000-0000-4000-8000-00000000b001"  # its GDAP relationship lacks Privileged Role Administrator
APP_GROUP, PRIVILEGED_GROUP = "5a1d0000-0000-4000-8000-000000000041", "5a1d0000-0000-4000-8000-000000000042"
WAIT_MS = 90_000  # generous: the machine may be busy; conditions are awaited, never slept on


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    require_chromium(azurite=True)
    from playwright.sync_api import sync_playwright

    prefix = f"onb{uuid.uuid4().hex[:8]}"
    with ExitStack() as stack:
        sandbox = stack.enter_context(running(tmp_path_factory.mktemp("onboarding"), SEED, timeout=STARTUP_TIMEOUT))
        env = {**os.environ, **sandbox.settings, "PROOFPOINT_CHANNEL_DOMAIN": "msp.example",
               "VERIFY_TIMEOUT_SECONDS": "30"}
        url = stack.enter_context(serving(env, table_prefix=prefix, work_queue=f"{prefix}-work"))
        for path in ("/.auth/login/aad/callback", "/api/onboarding/callback"):
            sandbox.control.add_redirect_uri("msp-app", f"{url}{path}")
        playwright = stack.enter_context(sync_playwright())
        browser = launch(playwright, trusted_keys(sandbox.ca_file, [sandbox.endpoints["entra"]]))
        stack.callback(browser.close)
        yield {"url": url, "browser": browser, "sandbox": sandbox, "prefix": prefix, "env": env}


@pytest.fixture
def page(stack: dict[str, Any]) -> Iterator[Any]:
    context = stack["browser"].new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(WAIT_MS)
    opened = context.new_page()
    errors: list[str] = []
    base = stack["url"]
    # The one refusal this test provokes: a resume after the run's session was forgotten (the page then offers the
    # partner sign-in); Chromium logs every 4xx answer to a fetch as a console error.
    expected = re.compile(re.escape(base) + r"/api/onboarding/runs/[0-9a-f]{32}/resume$")

    def console(message: Any) -> None:
        # The dashboard's own errors; Entra's (the sandbox's) sign-in pages are not under test here.
        url = str(message.location.get("url", ""))
        if message.type != "error" or not url.startswith(base):
            return
        if "status of 404" in message.text and expected.match(url):
            return
        errors.append(f"console.error: {message.text} ({url})")

    opened.on("console", console)
    opened.on("pageerror", lambda e: errors.append(f"uncaught: {e}"))
    sign_in(opened, base, OPERATOR)
    yield opened
    context.close()
    assert errors == [], errors


def tenant_row(page: Any, tenant_id: str) -> Any:
    return page.locator(f'#onboard-run tr[data-tenant="{tenant_id}"]')


def partner_signs_in(page: Any, base: str) -> str:
    """The partner admin signs in from the onboarding view (the sandbox's account picker) and is back on a new run's
    customer pick: that run's id."""
    page.goto(f"{base}/api/dashboard#/onboarding")
    page.wait_for_selector("body[data-ready=true]")
    page.click("#partner-sign-in-link")
    page.wait_for_selector("text=Pick an account")
    page.click(f'button[name="login_hint"][value="{PARTNER}"]')
    page.wait_for_selector("#onboard-customers tbody tr")
    return str(page.url.rsplit("/", 1)[1])


def test_the_partner_admin_onboards_every_customer_and_a_resume_finishes_the_one_missing_a_role(
        stack: dict[str, Any], page: Any) -> None:
    base, sandbox = stack["url"], stack["sandbox"]
    page.goto(f"{base}/api/dashboard#/onboarding")
    page.wait_for_selector("body[data-ready=true]")
    assert page.locator("#onboarding").is_visible() and not page.locator("#fleet").is_visible()

    # The partner sign-in: Entra's (the sandbox's) account picker, the partner admin chosen, back on the run.
    page.click("#partner-sign-in-link")
    page.wait_for_selector("text=Pick an account")
    assert "code_challenge_method=S256" in page.url and "code_verifier" not in page.url
    page.click(f'button[name="login_hint"][value="{PARTNER}"]')
    page.wait_for_url(re.compile(re.escape(base) + r"/api/dashboard#/onboarding/run/[0-9a-f]{32}$"))
    assert "code=" not in page.url and "state=" not in page.url  # the callback's URL is not kept
    run_id = page.url.rsplit("/", 1)[1]

    # The GDAP customers with the admin's roles and what the method still needs.
    page.wait_for_selector("#onboard-customers tbody tr")
    assert page.locator("#partner-admin").inner_text() == PARTNER
    rows = page.locator("#onboard-customers tbody tr")
    assert rows.count() == 6
    woodgrove = page.locator(f'#onboard-customers tr[data-tenant="{WOODGROVE}"]')
    assert "needs Privileged Role Administrator" in woodgrove.inner_text()
    assert woodgrove.locator("td[data-missing]").get_attribute("data-missing") == "Privileged Role Administrator"
    page.select_option("#install-method", "partner-center")
    page.wait_for_selector("#onboard-customers tbody tr")
    page.check("#pick-all")
    assert page.locator("#start-onboarding").inner_text() == "Onboard 6 customers"
    page.click("#start-onboarding")

    # Each tenant as it happens, to the end: five done, Woodgrove stopped at the roles step naming the role.
    page.wait_for_selector('#run-summary[data-state="finished"]')
    states = {row.get_attribute("data-tenant"): row.get_attribute("data-state")
              for row in page.locator("#onboard-run tbody tr").all()}
    assert len(states) == 6 and states.pop(WOODGROVE) == "failed" and set(states.values()) == {"done"}
    failed = tenant_row(page, WOODGROVE)
    assert failed.locator(".tenant-error").get_attribute("data-code") == "GdapRoleMissing"
    assert "Privileged Role Administrator" in failed.locator(".tenant-error").inner_text()
    assert "Privileged Role Administrator" in failed.locator(".fix").inner_text()
    assert failed.locator('.step[data-step="roles"]').get_attribute("data-state") == "failed"
    assert failed.locator('.step[data-step="install"]').get_attribute("data-state") == "pending"
    done = page.locator('#onboard-run tbody tr[data-state="done"]').first
    assert [done.locator(f'.step[data-step="{s}"]').get_attribute("data-state")
            for s in ("roles", "install", "owner", "register", "dry-run")] == ["done"] * 5
    assert done.locator(".dry-run").count() == 1 and done.locator("a.open-target").count() == 1
    # The run finished: no refresh token is kept after it (its Key Vault secret deleted), none was ever shown
    vault = sandbox.control.state()["keyvault"]
    name = f"onboarding-session-{run_id}"
    assert name not in vault["secrets"] and name in vault["deleted"]
    assert json.loads(vault["deleted"][name]["versions"][-1]["value"])["refreshToken"] not in page.content()

    # The fix: the relationship gets the role (as the MSP would in Partner Center). Resume: the run's session was
    # forgotten when it finished, so the page asks for the partner sign-in again, for this run, then resumes it.
    relationship = next(r for r in sandbox.control.partner()["relationships"]
                        if r["customer"]["tenantId"] == WOODGROVE)
    sandbox.control.seed({"gdap": {"relationships": [{
        "id": relationship["id"], "displayName": relationship["displayName"],
        "customer": {"tenantId": WOODGROVE, "displayName": "Woodgrove"}, "status": "active",
        "roles": ["Application Administrator", "Privileged Role Administrator"],
        "accessAssignments": [{"group": APP_GROUP, "roles": ["Application Administrator"]},
                              {"group": PRIVILEGED_GROUP, "roles": ["Privileged Role Administrator"]}]}]}})
    page.click("#resume-run")
    page.wait_for_selector("#partner-sign-in-link")
    assert page.locator("#partner-sign-in").get_attribute("data-code") == "PartnerSessionNotFound"
    page.click("#partner-sign-in-link")
    page.wait_for_selector("text=Pick an account")
    page.click(f'button[name="login_hint"][value="{PARTNER}"]')
    page.wait_for_url(f"{base}/api/dashboard#/onboarding/run/{run_id}")
    page.wait_for_selector("#resume-run")
    page.click("#resume-run")
    page.wait_for_selector(f'#onboard-run tr[data-tenant="{WOODGROVE}"][data-state="done"]')
    page.wait_for_selector('#run-summary[data-state="finished"]')
    assert page.locator("#resume-run").count() == 0  # nothing left to resume
    assert name not in sandbox.control.state()["keyvault"]["secrets"]  # forgotten again at the end

    # The run is in the latest runs of the onboarding page, to find it again.
    page.goto(f"{base}/api/dashboard#/onboarding")
    page.wait_for_selector(f'#onboard-runs tr[data-run="{run_id}"]')
    assert page.locator(f'#onboard-runs tr[data-run="{run_id}"]').get_attribute("data-state") == "finished"
    assert "6 done" in page.locator(f'#onboard-runs tr[data-run="{run_id}"]').inner_text()
    page.goto(f"{base}/api/dashboard#/onboarding/run/{run_id}")
    page.wait_for_selector("a.open-target")

    # The fleet now lists the onboarded customers (registered by the run).
    page.click("a.open-target >> nth=0")
    page.wait_for_selector("#detail:not([hidden])")
    assert page.locator("#fleet").is_visible()


def test_names_from_the_partner_relationship_are_shown_as_text_and_picking_keeps_the_focus(
        stack: dict[str, Any], page: Any) -> None:
    """A customer's name comes from another tenant (its GDAP relationship): markup in it is text on the page. Picking
    with the keyboard keeps the focus on the checkbox while the view is redrawn."""
    base, sandbox = stack["url"], stack["sandbox"]
    hostile = '<img src=x onerror="document.body.dataset.owned=1"><b id="injected">Evil</b>'
    tenant = "e0170000-0000-4000-8000-00000000e666"
    sandbox.control.seed({"gdap": {"relationships": [{
        "displayName": "hostile", "customer": {"tenantId": tenant, "displayName": hostile}, "status": "active",
        "roles": ["Application Administrator"],
        "accessAssignments": [{"group": APP_GROUP, "roles": ["Application Administrator"]}],
    }]}})
    page.goto(f"{base}/api/dashboard#/onboarding")
    page.wait_for_selector("body[data-ready=true]")
    page.click("#partner-sign-in-link")
    page.wait_for_selector("text=Pick an account")
    page.click(f'button[name="login_hint"][value="{PARTNER}"]')
    page.wait_for_selector(f'#onboard-customers tr[data-tenant="{tenant}"]')
    row = page.locator(f'#onboard-customers tr[data-tenant="{tenant}"]')
    assert row.locator(".customer-name").inner_text() == hostile
    assert page.locator("#injected").count() == 0 and page.get_attribute("body", "data-owned") is None
    box = row.locator(f'input[data-pick="{tenant}"]')
    box.focus()
    page.keyboard.press("Space")
    page.wait_for_selector("#start-onboarding:not([disabled])")
    assert page.evaluate("document.activeElement.dataset.pick") == tenant
    assert page.locator(f'input[data-pick="{tenant}"]').is_checked()
    assert page.locator("#start-onboarding").inner_text() == "Onboard 1 customer"


def test_the_onboarding_view_fits_a_phone(stack: dict[str, Any], page: Any) -> None:
    """At phone width the page itself never scrolls sideways (an operator's header too, with its test-alert button
    and the views): the tables scroll inside their own frame."""
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{stack['url']}/api/dashboard#/onboarding")
    page.wait_for_selector("#onboard-runs tbody tr")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    page.click('#onboard-runs tr[data-state="finished"] a')
    page.wait_for_selector("#onboard-run tbody tr")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    assert page.locator("#partner-sign-in-link, #resume-run, #onboard-run").first.is_visible()


def test_a_sign_in_kept_at_the_admins_request_stays_until_forgotten(stack: dict[str, Any], page: Any) -> None:
    """Only when asked is the partner sign-in kept after the run (in Key Vault, never elsewhere); the run's page
    forgets it (DELETE .../session)."""
    base, sandbox = stack["url"], stack["sandbox"]
    run_id = partner_signs_in(page, base)
    assert not page.locator("#keep-session").is_checked()  # not kept unless asked
    page.check(f'input[data-pick="{WOODGROVE}"]')  # onboarded by the first test: skipped, quickly
    page.check("#keep-session")
    page.click("#start-onboarding")
    page.wait_for_selector('#run-summary[data-state="finished"]')
    name = f"onboarding-session-{run_id}"
    assert name in sandbox.control.state()["keyvault"]["secrets"]  # kept after the run, as asked
    page.click("#forget-session")
    page.wait_for_selector("#session-forgotten")
    assert name not in sandbox.control.state()["keyvault"]["secrets"]


def test_a_sign_in_left_before_the_start_is_forgotten_from_the_pick(stack: dict[str, Any], page: Any) -> None:
    """A run signed in for and not started holds the partner sign-in in Key Vault (until it expires): the pick page
    offers to forget it now (DELETE .../session), as any run that holds one does."""
    base, sandbox = stack["url"], stack["sandbox"]
    name = f"onboarding-session-{partner_signs_in(page, base)}"
    assert name in sandbox.control.state()["keyvault"]["secrets"]
    page.click("#forget-session")
    page.wait_for_selector("#session-forgotten")
    assert name not in sandbox.control.state()["keyvault"]["secrets"]


def test_older_runs_are_a_page_away(stack: dict[str, Any], page: Any) -> None:
    """The run list shows a page (20, newest first) and "Older runs" the next, by its cursor, until the last."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor
    from datetime import UTC, datetime, timedelta

    from azure.data.tables.aio import TableServiceClient

    from shared.adapters.tables import TablesOnboardingRuns
    from shared.bulk_onboarding import Run, RunState
    from shared.ports import InstallMethod

    made = datetime.now(UTC) - timedelta(days=30)  # older than every run the module's tests make
    old = [Run(uuid.uuid4().hex, PARTNER, "Partner Admin", InstallMethod.GRAPH, False, made - timedelta(hours=i),
               state=RunState.FINISHED, finished_at=made, counts={"total": 0, "pending": 0, "running": 0, "done": 0,
                                                                  "failed": 0, "skipped": 0}) for i in range(21)]

    async def write() -> None:
        service = TableServiceClient.from_connection_string(stack["env"]["STATE_TABLES_CONNECTION_STRING"])
        async with service:
            runs = TablesOnboardingRuns(service, stack["prefix"])
            for run in old:
                await runs.create_run(run)

    with ThreadPoolExecutor(1) as thread:  # Playwright's sync API runs a loop in this thread
        thread.submit(asyncio.run, write()).result()
    page.goto(f"{stack['url']}/api/dashboard#/onboarding")
    page.wait_for_selector("#onboard-runs tbody tr")
    first = page.locator("#onboard-runs tbody tr").count()
    assert first == 20 and page.locator("#older-runs").is_visible()
    assert page.locator(f'#onboard-runs tr[data-run="{old[-1].run_id}"]').count() == 0
    while page.locator("#older-runs").count():
        page.click("#older-runs")
        page.wait_for_function(f"() => document.querySelectorAll('#onboard-runs tbody tr').length > {first}")
        first = page.locator("#onboard-runs tbody tr").count()
    rows = [r.get_attribute("data-run") for r in page.locator("#onboard-runs tbody tr").all()]
    assert rows[-21:] == [r.run_id for r in old] and len(set(rows)) == len(rows)  # each once, oldest last


def test_an_operator_offboards_a_customer_removing_the_msp_app_with_the_partner_sign_in(
        stack: dict[str, Any], page: Any) -> None:
    """Offboarding on the dashboard removes the MSP app's service principal through the partner admin's sign-in
    (the one bulk onboarding uses), not a command for the customer's admin. Tailspin was onboarded by the first
    test of the module."""
    base, sandbox = stack["url"], stack["sandbox"]
    tailspin, app_id = "7a150000-0000-4000-8000-00000000d001", "a1b2c3d4-0000-4000-8000-00000000d0a1"
    msp = sandbox.control.msp()["appId"]

    def msp_installed() -> bool:
        tenant = next(t for t in sandbox.control.state()["tenants"] if t["id"] == tailspin)
        return any(s["appId"] == msp for s in tenant.get("servicePrincipals", []))

    assert msp_installed()
    run_id = partner_signs_in(page, base)

    page.goto(f"{base}/api/dashboard#/target/{tailspin}/{app_id}")
    page.wait_for_selector("#action-offboard:not([disabled])")
    page.click("#action-offboard")
    page.wait_for_selector(f'#offboard-partner option[value="{run_id}"]', state="attached")
    assert page.locator("#offboard-partner").input_value() == run_id  # the newest sign-in, picked
    assert PARTNER in page.locator(f'#offboard-partner option[value="{run_id}"]').inner_text()
    page.check("#offboard-app")
    page.click("#offboard-confirm")
    page.wait_for_selector("#notice:not([hidden])")
    notice = page.locator("#notice").inner_text()
    assert "Tailspin" in notice and "app: done" in notice and "az login" not in notice, notice
    assert not msp_installed()
    page.goto(f"{base}/api/dashboard#/onboarding/run/{run_id}")  # the sign-in is forgotten from its run's page
    page.click("#forget-session")
    page.wait_for_selector("#session-forgotten")
    assert f"onboarding-session-{run_id}" not in sandbox.control.state()["keyvault"]["secrets"]
