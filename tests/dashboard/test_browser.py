"""The dashboard in a real browser: Debian's Chromium through Playwright, against `python -m shared serve` with the
sandbox (demo seed: Contoso expired, Fabrikam due, Northwind healthy) and Azurite behind it.

One sandbox, one set of tables, one server and one browser for the module. People sign in as in Azure: the page
sends the browser to App Service Authentication's login, the sandbox's Entra ID shows its account picker, the
callback brings it back with a session. Two users of the MSP tenant: an operator (Rotator.Operate) and a read-only
caller (Rotator.Read), each signed in once; the browser trusts the sandbox's certificate by its public key only.
Every page fails its test on a console error.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sandbox.launch import running
from scripts.browser import launch, serving, sign_in, trusted_keys
from scripts.demo import SEED, targets
from tests.browsers import require_chromium
from tests.conftest import ROOT, STARTUP_TIMEOUT

pytestmark = [pytest.mark.sandbox, pytest.mark.azurite]

READ, OPERATE = "Rotator.Read", "Rotator.Operate"
CONTOSO = "c0a70000-0000-4000-8000-00000000c001"
FABRIKAM = "fab10000-0000-4000-8000-00000000f001"
NORTHWIND = "90e70000-0000-4000-8000-00000000e001"
ADATUM = "ada70000-0000-4000-8000-00000000a001"  # the rotator does not own its app: not-owner
TAILSPIN = "7a150000-0000-4000-8000-00000000d001"  # a tenant policy blocks passwords, learned when it rotates
WAIT_MS = 60_000  # generous: the machine may be busy; conditions are awaited, never slept on


OPERATOR, READER, NOBODY = "operator@msp.example", "reader@msp.example", "nobody@msp.example"


@dataclass
class Stack:
    url: str
    browser: Any
    env: dict[str, str]
    prefix: str
    sessions: dict[str, Any]  # upn -> the browser's storage state once signed in (its session cookie)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    require_chromium(azurite=True)
    from playwright.sync_api import sync_playwright

    prefix = f"dash{uuid.uuid4().hex[:8]}"
    with ExitStack() as stack:
        sandbox = stack.enter_context(running(tmp_path_factory.mktemp("dashboard"), SEED, timeout=STARTUP_TIMEOUT))
        env = {**os.environ, **sandbox.settings, "VERIFY_TIMEOUT_SECONDS": "30", "RETIRE_GRACE_HOURS": "0"}
        registry = sandbox.state_dir / "targets.json"
        registry.write_text(json.dumps(targets(sandbox.control.state(), sandbox.endpoints)))
        # the inventory too: Fabrikam's other apps and service principals (the seed's population), for the
        # "All credentials" view (tests/dashboard/test_credentials_browser.py)
        for args in (["targets", "import", str(registry)], ["check"], ["inventory", "scan"]):
            subprocess.run([sys.executable, "-m", "shared", "--table-prefix", prefix, *args], cwd=ROOT, env=env,
                           check=False, capture_output=True, timeout=120)
        url = stack.enter_context(serving(env, table_prefix=prefix, work_queue=f"{prefix}-work"))
        sandbox.control.add_redirect_uri("msp-app", f"{url}/.auth/login/aad/callback")
        playwright = stack.enter_context(sync_playwright())
        browser = launch(playwright, trusted_keys(sandbox.ca_file, [sandbox.endpoints["entra"]]))
        stack.callback(browser.close)
        sessions = {}
        for upn in (OPERATOR, READER):
            context = browser.new_context()
            sign_in(context.new_page(), url, upn)
            sessions[upn] = context.storage_state()
            context.close()
        yield Stack(url, browser, env, prefix, sessions)


class Page:
    """A browser page on the dashboard that records console errors and uncaught exceptions."""

    def __init__(self, stack: Stack, upn: str | None, width: int = 1280, height: int = 800) -> None:
        self.context = stack.browser.new_context(viewport={"width": width, "height": height},
                                                 storage_state=stack.sessions[upn] if upn else None)
        self.context.set_default_timeout(WAIT_MS)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))
        self.base = stack.url

    def _console(self, message: Any) -> None:
        if message.type == "error":
            self.errors.append(f"console.error: {message.text}")

    def open(self, fragment: str = "") -> Any:
        self.page.goto(f"{self.base}/api/dashboard{fragment}")
        self.page.wait_for_selector("body[data-ready=true]")
        return self.page

    def row(self, tenant_id: str) -> Any:
        return self.page.locator(f'#fleet-body tr[data-key^="{tenant_id}/"]')

    def close(self) -> None:
        self.context.close()
        assert self.errors == [], self.errors


@pytest.fixture
def operator(stack: Stack) -> Iterator[Page]:
    page = Page(stack, OPERATOR)
    yield page
    page.close()


@pytest.fixture
def reader(stack: Stack) -> Iterator[Page]:
    page = Page(stack, READER)
    yield page
    page.close()


def statuses(page: Page) -> dict[str, str]:
    rows = page.page.locator("#fleet-body tr")
    return {
        rows.nth(i).locator(".customer-name").inner_text(): rows.nth(i).get_attribute("data-status")
        for i in range(rows.count())
    }


def test_the_page_lists_the_demo_customers_with_their_statuses(reader: Page) -> None:
    page = reader.open()
    page.wait_for_selector("#fleet-body tr")
    assert statuses(reader) == {"Contoso": "expired", "Fabrikam": "due", "Northwind": "healthy",
                                "Adatum": "not-owner", "Tailspin": "due"}
    assert reader.row(CONTOSO).locator(".chip").inner_text() == "Expired"
    counts = {b.get_attribute("data-status"): b.locator(".n").inner_text()
              for b in page.locator("#counts .count").all()}
    assert counts == {"all": "5", "expired": "1", "due": "2", "healthy": "1", "not-owner": "1"}
    # days left as a bar, expiry date, destinations: nothing delivered yet
    assert reader.row(NORTHWIND).locator(".days .num").inner_text() in {"299", "300"}
    assert reader.row(NORTHWIND).locator(".bar").get_attribute("aria-label").endswith("days left")
    assert "not rotated yet" in reader.row(FABRIKAM).locator(".cell-destinations").inner_text()


def test_the_timeline_has_one_mark_per_customer(reader: Page) -> None:
    page = reader.open()
    marks = page.locator("#timeline-chart .mark")
    page.wait_for_selector("#timeline-chart .mark")
    keys = {marks.nth(i).get_attribute("data-key").split("/")[0] for i in range(marks.count())}
    assert marks.count() == 5 and keys == {CONTOSO, FABRIKAM, NORTHWIND, ADATUM, TAILSPIN}
    # the rotations the policy plans: Fabrikam and Northwind (Contoso's date is already past)
    planned = {p.get_attribute("data-key").split("/")[0] for p in page.locator("#timeline-chart .plan-mark").all()}
    assert {FABRIKAM, NORTHWIND} <= planned


def days_in_order(page: Page) -> list[int]:
    rows = page.page.locator("#fleet-body tr")
    return [int(rows.nth(i).locator(".days .num").inner_text()) for i in range(rows.count())]


def test_search_filter_sort_and_keyboard(reader: Page) -> None:
    page = reader.open()
    page.wait_for_selector("#fleet-body tr")
    page.keyboard.press("/")
    page.keyboard.type("fab1")  # part of Fabrikam's tenant id
    assert list(statuses(reader)) == ["Fabrikam"]
    page.fill("#search", "")
    page.click('.count[data-status="expired"]')
    assert list(statuses(reader)) == ["Contoso"]
    page.click('.count[data-status="expired"]')
    page.click('th[data-sort="daysLeft"] button')
    ascending = days_in_order(reader)
    assert ascending == sorted(ascending) and next(iter(statuses(reader))) == "Contoso"
    page.click('th[data-sort="daysLeft"] button')
    assert days_in_order(reader) == sorted(ascending, reverse=True)
    assert next(iter(statuses(reader))) == "Northwind"
    reader.row(NORTHWIND).focus()
    page.keyboard.press("Enter")
    page.wait_for_selector("#detail:not([hidden]) .audit, #detail:not([hidden]) #detail-body table")
    assert page.locator("#detail-title").inner_text().startswith("Northwind")
    page.keyboard.press("Escape")
    assert page.locator("#detail").is_hidden()


def test_a_read_only_caller_sees_no_action_buttons_and_the_api_refuses_it(reader: Page) -> None:
    app_id = app_ids()[CONTOSO]
    page = reader.open(f"#/target/{CONTOSO}/{app_id}")
    page.wait_for_selector("#detail-body h3:text('Credentials in Entra ID')")
    assert page.locator("#caller").inner_text().endswith("Read")
    actions = "#action-rotate, #action-dry-run, [data-ack], #action-proofpoint-check, #action-offboard"
    assert page.locator(actions).count() == 0
    status = page.evaluate(
        """async ([tenantId, appId]) => (await fetch('/api/rotations', {method: 'POST',
             headers: {'Content-Type': 'application/json'}, body: JSON.stringify({tenantId, appId})})).status""",
        [CONTOSO, app_id],
    )
    assert status == 403
    # the refused request itself is the browser's console error; nothing else may be
    reader.errors = [e for e in reader.errors if "403" not in e]


def app_ids() -> dict[str, str]:
    """Each demo tenant's Proofpoint app id, as the seed has it."""
    seed = json.loads(Path(SEED).read_text())
    return {t["id"]: t["applications"][0]["appId"] for t in seed["tenants"]}


def test_one_customer_shows_credentials_vault_destinations_and_audit(operator: Page) -> None:
    # Adatum: its assessment found the rotator not an owner, an event in its audit trail (a healthy assessment
    # writes none).
    app_id = app_ids()[ADATUM]
    page = operator.open(f"#/target/{ADATUM}/{app_id}")
    page.wait_for_selector("#detail-body .audit li")
    body = page.locator("#detail-body")
    entra = body.locator("section:has(h3:text('Credentials in Entra ID')) tbody tr")
    assert entra.count() >= 1
    assert entra.first.locator("code").inner_text().endswith("…")  # the hint, never more
    assert body.locator("section:has(h3:text('Destinations')) tbody tr").count() == 2
    assert "assess" in body.locator(".audit").inner_text()


def test_the_proofpoint_check_shows_the_get_and_the_put_with_no_secret(operator: Page) -> None:
    app_id = app_ids()[NORTHWIND]
    page = operator.open(f"#/target/{NORTHWIND}/{app_id}")
    page.wait_for_selector("#action-proofpoint-check:not([disabled])")
    page.click("#action-proofpoint-check")
    page.wait_for_selector('#proofpoint-check pre[data-check="put"]')
    shown = json.loads(page.locator('#proofpoint-check pre[data-check="get"]').inner_text())
    put = json.loads(page.locator('#proofpoint-check pre[data-check="put"]').inner_text())
    assert shown["ad_key"] == "(hidden)" and put["ad_key"] == "(the new secret)"
    assert shown["application_id"] == put["application_id"] == app_id
    seed = Path(SEED).read_text()
    secrets = [o["settings"]["ad_key"] for o in json.loads(seed)["proofpoint"]["orgs"]]
    secrets += [a["password"] for a in json.loads(seed)["proofpoint"]["accounts"]]
    text = page.locator("#detail-body").inner_text()
    assert secrets and not [s for s in secrets if s in text]


def test_a_rotation_started_on_the_page_changes_the_status(operator: Page) -> None:
    app_id = app_ids()[FABRIKAM]
    page = operator.open()
    operator.row(FABRIKAM).click()
    page.wait_for_selector("#action-dry-run:not([disabled])")
    page.click("#action-dry-run")
    page.wait_for_selector("#action-result:text('would-rotate')")
    assert operator.row(FABRIKAM).get_attribute("data-status") == "due"  # a dry run changes nothing
    page.click("#action-rotate")
    dialog = page.locator("#confirm")
    assert dialog.is_visible() and "Fabrikam" in dialog.inner_text()
    page.click("#confirm-rotate")
    page.wait_for_selector(f'#fleet-body tr[data-key="{FABRIKAM}/{app_id}"][data-status="healthy"]')
    page.wait_for_selector("#action-result:text('Rotation: rotated')")
    assert operator.row(FABRIKAM).locator(".cell-destinations").inner_text() == "2/2 confirmed"
    # Drawn from the same refresh as the result: every step done, not the stage the last poll saw.
    assert page.locator(".stepper li.done").count() == 5
    assert page.locator("#detail-body .audit").inner_text().count("manual") >= 1
    # the other customers are untouched
    assert operator.row(CONTOSO).get_attribute("data-status") == "expired"
    assert operator.row(NORTHWIND).get_attribute("data-status") == "healthy"


def test_phone_width_has_no_horizontal_scroll(stack: Stack) -> None:
    phone = Page(stack, READER, width=390, height=844)
    try:
        page = phone.open()
        page.wait_for_selector("#fleet-body tr")
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        assert page.locator("#fleet-body tr").first.is_visible()
    finally:
        phone.close()


def test_empty_and_error_states(stack: Stack) -> None:
    """The page's answer to an empty registry and to a failing API (the API's answers replaced in the browser)."""
    empty = Page(stack, READER)
    try:
        empty.page.route("**/api/status", lambda route: route.fulfill(
            status=200, content_type="application/json", body='{"targets": []}'))
        page = empty.open()
        page.wait_for_selector("#fleet-empty:not([hidden])")
        assert "No customers registered yet" in page.locator("#fleet-empty").inner_text()
    finally:
        empty.close()
    failing = Page(stack, READER)
    try:
        failing.page.route("**/api/status", lambda route: route.fulfill(
            status=502, content_type="application/json",
            body='{"error": {"code": "TablesUnavailable", "message": "the state store did not answer"}}'))
        page = failing.open()
        page.wait_for_selector("#banner:not([hidden])")
        assert "TablesUnavailable" in page.locator("#banner").inner_text()
        # the failed fetch itself is the browser's console error (a 502 resource); nothing else may be
        failing.errors = [e for e in failing.errors if "502" not in e]
    finally:
        failing.close()


def test_a_browser_without_a_session_signs_in_through_the_redirect_and_comes_back(stack: Stack) -> None:
    fresh = Page(stack, None)
    try:
        page = fresh.page
        page.goto(f"{stack.url}/api/dashboard#/target/{CONTOSO}/{app_ids()[CONTOSO]}")
        # Entra's (the sandbox's) account picker, reached through App Service Authentication's login
        page.wait_for_selector("text=Pick an account")
        assert page.url.startswith(stack.env["AZURE_AUTHORITY_HOST"]) and "/oauth2/v2.0/authorize?" in page.url
        offered = {b.get_attribute("value") for b in page.locator('button[name="login_hint"]').all()}
        assert {OPERATOR, READER, NOBODY} <= offered
        page.click(f'button[name="login_hint"][value="{OPERATOR}"]')
        page.wait_for_url(f"{stack.url}/api/dashboard")
        page.wait_for_selector("body[data-ready=true]")
        assert page.locator("#caller").inner_text().startswith(OPERATOR)
        cookies = {c["name"]: c for c in fresh.context.cookies()}
        assert cookies["AppServiceAuthSession"]["httpOnly"] and cookies["AppServiceAuthSession"]["sameSite"] == "Lax"
    finally:
        fresh.close()


def test_a_user_without_an_app_role_is_stopped_at_entra(stack: Stack) -> None:
    fresh = Page(stack, None)
    try:
        page = fresh.page
        page.goto(f"{stack.url}/api/dashboard")
        page.click(f'button[name="login_hint"][value="{NOBODY}"]')
        page.wait_for_selector("text=AADSTS50105")
        assert not [c for c in fresh.context.cookies() if c["name"] == "AppServiceAuthSession"]
        # Entra's error page is itself a 400, which the browser reports; nothing else may be
        fresh.errors = [e for e in fresh.errors if "400" not in e]
    finally:
        fresh.close()


def test_an_operator_sends_a_test_alert_a_reader_sees_no_button(operator: Page, reader: Page) -> None:
    page = operator.open()
    page.click("#alert-test-send")
    # This stack configures no alert channel: the page says so in text, from the API's 409.
    result = page.locator("#alert-test-result[data-outcome=failed]")
    result.wait_for()
    assert "NoAlertChannel" in result.inner_text() and "ALERT_WEBHOOK_KIND" in result.inner_text()
    operator.errors = [e for e in operator.errors if "409" not in e]  # the refused request's own console line
    assert reader.open().locator("#alert-test-send").count() == 0


def test_an_operator_offboards_a_customer_after_confirming(operator: Page) -> None:
    # Last in the module: Tailspin leaves the fleet for good.
    app_id = app_ids()[TAILSPIN]
    page = operator.open(f"#/target/{TAILSPIN}/{app_id}")
    page.wait_for_selector("#action-offboard:not([disabled])")
    page.click("#action-offboard")
    dialog = page.locator("#offboard")
    assert dialog.is_visible() and "Tailspin" in dialog.inner_text()
    page.click("#offboard-cancel")  # cancelled: nothing is sent
    assert not dialog.is_visible() and operator.row(TAILSPIN).count() == 1
    page.click("#action-offboard")
    page.check("#offboard-owner")
    page.click("#offboard-confirm")
    page.wait_for_selector("#notice:not([hidden])")
    notice = page.locator("#notice").inner_text()
    assert "Tailspin" in notice and "owner: done" in notice and "registry: done" in notice
    assert "operator@msp.example" in notice
    page.wait_for_function(f"() => !document.querySelector('#fleet-body tr[data-key^=\"{TAILSPIN}/\"]')")
    assert operator.row(CONTOSO).count() == 1  # the others stay
