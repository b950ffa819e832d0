"""Change control on the dashboard in a real browser (Debian's Chromium through Playwright) against `python -m shared
serve`, the sandbox and Azurite (issue 26): due customers in approval mode wait ("Waiting for approval", a status the
fleet filters on), one with a maintenance window waits for it and shows when it opens; an operator approves (the
rotation is reserved at once and the served app's worker carries it out), postpones to a date picked in the
calendar, rejects with a reason; a decision made elsewhere meanwhile is refused and the list read again; a read-only
caller sees the requests and no action; each decision is in the customer's audit trail with the operator's name.

The registry is the demo's (demo.json and demo-issue26.json) with change control set: Fabrikam, Tailspin and Trey
Research ask for approval (due in 12, 15 and 10 days: none near its force day), Contoso too but never forced (its
secret has expired: it keeps waiting, loudly), Lucerne Publishing has a window days ahead. Tickets go to the JSON
webhook desk (TICKET_SYSTEM=webhook) against the sandbox's ticket receiver, which answers each ticket's number and
address. One timer pass before the browser opens makes the requests and their tickets. Every page fails its test on a
console error.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sandbox.launch import running
from scripts.browser import launch, serving, sign_in, trusted_keys
from scripts.demo import CHANGE_SEED, LUCERNE, SEED, TREY, targets
from tests.browsers import require_chromium
from tests.conftest import ROOT, STARTUP_TIMEOUT
from tests.dashboard.test_browser import CONTOSO, FABRIKAM, NORTHWIND, OPERATOR, READER, TAILSPIN, Page, Stack

pytestmark = [pytest.mark.sandbox, pytest.mark.azurite]

APPROVAL = {"mode": "approval", "timeZone": "Europe/London", "forceDaysBeforeExpiry": 7}
POLICIES = {
    FABRIKAM: {"changeControl": APPROVAL},
    TAILSPIN: {"changeControl": APPROVAL},
    CONTOSO: {"changeControl": {**APPROVAL, "neverForce": True}},
}
WAITING_FOR_APPROVAL = {FABRIKAM, TAILSPIN, CONTOSO, TREY}
BY_OPERATOR = f"manual:{OPERATOR}"  # the audit actor of a decision on the dashboard
DESK_SECRET = "ticket-desk"  # the Key Vault secret holding the ticket desk's configuration (docs/tickets.md)


def ticket_desk(sandbox: Any) -> dict[str, str]:
    """The sandbox's ticket receiver as the rotator's PSA (its URL token and Authorization in Key Vault): settings."""
    token, key = f"tk-{uuid.uuid4().hex[:12]}", f"psa-key-{uuid.uuid4().hex[:12]}"
    config = {"url": f"{sandbox.endpoints['webhooks']}/tickets/{token}", "authorization": f"Bearer {key}"}
    sandbox.control.seed({"webhooks": {"tickets": token, "ticketsAuthorization": f"Bearer {key}"},
                          "keyvault": {"secrets": [{"name": DESK_SECRET, "value": json.dumps(config)}]}})
    return {"TICKET_SYSTEM": "webhook", "TICKET_SECRET_NAME": DESK_SECRET}


def shared(env: dict[str, str], prefix: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "shared", "--table-prefix", prefix, *args], cwd=ROOT, env=env,
                          check=False, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    require_chromium(azurite=True)
    from playwright.sync_api import sync_playwright

    prefix = f"appr{uuid.uuid4().hex[:8]}"
    with ExitStack() as stack:
        sandbox = stack.enter_context(running(tmp_path_factory.mktemp("approvals"), SEED, timeout=STARTUP_TIMEOUT))
        sandbox.control.seed(json.loads(CHANGE_SEED.read_text()))
        env = {**os.environ, **sandbox.settings, "VERIFY_TIMEOUT_SECONDS": "30", "RETIRE_GRACE_HOURS": "0",
               **ticket_desk(sandbox)}
        docs = targets(sandbox.control.state(), sandbox.endpoints)
        for doc in docs:
            doc.setdefault("policy", {}).update(POLICIES.get(doc["tenantId"], {}))
        registry = sandbox.state_dir / "targets.json"
        registry.write_text(json.dumps(docs))
        assert shared(env, prefix, "targets", "import", str(registry)).returncode == 0
        shared(env, prefix, "run")  # the timer pass: asks for the approvals, rotates what auto mode lets go
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


def fetch(page: Any, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    """The API's answer to the signed-in page (its own session), as the page itself would fetch it."""
    return tuple(page.evaluate(
        """async ([path, body]) => {
             const r = await fetch(path, body ? {method: 'POST', headers: {'Content-Type': 'application/json'},
                                                 body: JSON.stringify(body)} : {});
             return [r.status, await r.json()]; }""", [path, body]))


def requests(page: Any, status: str) -> dict[str, dict[str, Any]]:
    code, body = fetch(page, f"/api/approvals?status={status}")
    assert code == 200, body
    return {a["tenantId"]: a for a in body["approvals"]}


def approvals_row(page: Page, tenant_id: str) -> Any:
    return page.page.locator(f'#approvals-table tr[data-key^="{tenant_id}/"]')


def audit(page: Any, tenant_id: str, app_id: str) -> list[dict[str, Any]]:
    code, body = fetch(page, f"/api/targets/{tenant_id}/{app_id}/details")
    assert code == 200, body
    return list(body["events"])


def test_due_customers_wait_for_approval_or_their_window_and_the_fleet_filters_them(reader: Page) -> None:
    page = reader.open()
    page.wait_for_selector("#fleet-body tr")
    waiting = {row.get_attribute("data-key").split("/")[0]: row.locator(".chip.waiting").get_attribute("data-waiting")
               for row in page.locator("#fleet-body tr:has(.chip.waiting)").all()}
    assert waiting == {**dict.fromkeys(WAITING_FOR_APPROVAL, "approval"), LUCERNE: "window"}
    assert reader.row(FABRIKAM).locator(".chip.waiting").inner_text() == "Waiting for approval"
    assert reader.row(NORTHWIND).locator(".cell-change").inner_text() == "auto"
    # Lucerne: its mode, and when the next window opens in New York's wall time (the status's nextWindow)
    lucerne = reader.row(LUCERNE).locator(".cell-change")
    assert lucerne.locator("[data-mode]").inner_text() == "Window"
    status = {t["tenantId"]: t for t in fetch(page, "/api/status")[1]["targets"]}
    opens = datetime.fromisoformat(lucerne.locator("[data-next-window]").get_attribute("data-next-window"))
    assert opens > datetime.now(UTC) + timedelta(days=1)
    assert lucerne.locator(".next-window").inner_text().endswith(("EST", "EDT", "GMT-5", "GMT-4"))
    assert status[LUCERNE]["rotationWaiting"] == "window" and status[LUCERNE]["changeMode"] == "window"
    assert status[LUCERNE]["nextWindow"]["start"] == lucerne.locator("[data-next-window]").get_attribute(
        "data-next-window")
    # a filter like a status: the count on top, and the status list
    page.click('.count[data-status="waiting:approval"]')
    shown = {r.get_attribute("data-key").split("/")[0] for r in page.locator("#fleet-body tr").all()}
    assert shown == WAITING_FOR_APPROVAL
    assert page.locator('.count[data-status="waiting:approval"] .n').inner_text() == str(len(WAITING_FOR_APPROVAL))
    page.select_option("#status-filter", "waiting:window")
    assert [r.get_attribute("data-key").split("/")[0] for r in page.locator("#fleet-body tr").all()] == [LUCERNE]
    assert page.locator("#nav-approvals-count").inner_text() == str(len(WAITING_FOR_APPROVAL))


def test_each_open_conditions_ticket_links_to_the_psa(reader: Page) -> None:
    page = reader.open()
    page.wait_for_selector("#fleet-body tr")
    status = {t["tenantId"]: t for t in fetch(page, "/api/status")[1]["targets"]}
    ticketed = {tenant: t["tickets"] for tenant, t in status.items() if t["tickets"]}
    # an alert with its ticket number still fits the fleet's table at 1280 px (no sideways scroll)
    assert page.evaluate("(w => w.scrollWidth <= w.clientWidth)(document.querySelector('#fleet .table-wrap'))")
    assert {TREY, CONTOSO} <= set(ticketed)  # approval-requested, and Contoso's expiry change control lets come
    for tenant, tickets in ticketed.items():
        links = reader.row(tenant).locator("a.ticket")
        assert sorted((a.get_attribute("data-condition"), a.get_attribute("href"), a.inner_text())
                      for a in links.all()) == sorted((k["condition"], k["url"], f"#{k['number']}")
                                                      for k in tickets)
        for a in links.all():  # beside its condition's alert, opening the PSA in a new tab
            assert a.get_attribute("target") == "_blank" and "noopener" in a.get_attribute("rel")
    app_id = status[TREY]["appId"]
    page = reader.open(f"#/target/{TREY}/{app_id}")
    page.wait_for_selector("#detail-body .audit li")  # the details read: the tickets stay beside them
    page.wait_for_selector("#tickets a.ticket")
    assert {a.get_attribute("href") for a in page.locator("#tickets a.ticket").all()} == {
        k["url"] for k in ticketed[TREY]}

ISSUE_26_FIELDS = ("changeMode", "rotationWaiting", "nextWindow", "forceOn", "approval", "tickets")


def test_a_status_without_change_control_or_tickets_shows_auto_and_nothing_waiting(stack: Stack) -> None:
    """An API answering without issue 26's fields (a function app not yet updated): the page stays whole."""
    older = Page(stack, READER)
    try:
        def strip(route: Any) -> None:
            answer = route.fetch()
            body = answer.json()
            for target in body["targets"]:
                for name in ISSUE_26_FIELDS:
                    target.pop(name, None)
            route.fulfill(response=answer, json=body)

        older.page.route("**/api/status", strip)
        page = older.open()
        page.wait_for_selector("#fleet-body tr")
        assert page.locator("#fleet-body tr").count() == len(stack_targets(page))
        assert set(page.locator("#fleet-body .cell-change").all_inner_texts()) == {"auto"}
        assert page.locator("#fleet-body .chip.waiting, #fleet-body .ticket, .count.waiting").count() == 0
        assert page.locator("#nav-approvals-count").is_hidden()
    finally:
        older.close()


def stack_targets(page: Any) -> list[dict[str, Any]]:
    code, body = fetch(page, "/api/targets")
    assert code == 200
    return list(body["targets"])

def test_the_approvals_and_the_decision_dialog_fit_a_phone(stack: Stack) -> None:
    phone = Page(stack, OPERATOR, width=390, height=844)
    try:
        page = phone.open("#/approvals")
        row = approvals_row(phone, FABRIKAM)
        row.wait_for()
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        assert row.locator('[data-decide="postpone"]').is_visible()
        row.locator('[data-decide="postpone"]').click()
        box = page.locator("#decide").bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= 390
        assert page.locator("#decide-until").is_visible() and page.locator("#decide-confirm").is_visible()
        page.click("#decide-cancel")  # nothing sent
        assert requests(page, "pending")[FABRIKAM]["status"] == "pending"
    finally:
        phone.close()

def test_a_read_only_caller_sees_the_requests_and_no_action(reader: Page) -> None:
    app_id = next(t["appId"] for t in fetch(reader.open(), "/api/status")[1]["targets"] if t["tenantId"] == FABRIKAM)
    page = reader.open(f"#/target/{FABRIKAM}/{app_id}")
    page.wait_for_selector("#change-control .approval[data-approval=pending]")
    assert page.locator("[data-decide]").count() == 0
    page = reader.open("#/approvals")
    page.wait_for_selector("#approvals-body table, #approvals-body .section-error")
    assert page.locator("[data-decide]").count() == 0
    request = requests(page, "pending")[FABRIKAM]
    code, body = fetch(page, f"/api/approvals/{FABRIKAM}/{app_id}",
                       {"requestId": request["requestId"], "action": "approve"})
    assert code == 403 and body["error"]["code"]
    assert requests(page, "pending")[FABRIKAM]["status"] == "pending"  # refused: nothing changed
    reader.errors = [e for e in reader.errors if "403" not in e]  # the refused request's own console line


def test_an_operator_approves_and_the_rotation_goes_ahead(operator: Page) -> None:
    page = operator.open("#/approvals")
    row = approvals_row(operator, FABRIKAM)
    row.wait_for()
    app_id = row.get_attribute("data-key").split("/")[1]
    assert "Pending" in row.inner_text() and row.locator("[data-decide]").count() == 3
    row.locator('[data-decide="approve"]').click()
    dialog = page.locator("#decide")
    assert dialog.is_visible() and "Fabrikam" in dialog.inner_text()
    page.click("#decide-confirm")
    page.wait_for_selector("#approvals-result.good")
    assert f"Approved by {OPERATOR}" in page.locator("#approvals-result").inner_text()
    page.wait_for_function(f"() => !document.querySelector('#approvals-table tr[data-key^=\"{FABRIKAM}/\"]')")
    approved = requests(page, "approved")[FABRIKAM]
    assert approved["decidedBy"] == BY_OPERATOR and approved["decidedAt"]
    page.select_option("#approvals-status", "approved")
    approvals_row(operator, FABRIKAM).wait_for()
    assert OPERATOR in approvals_row(operator, FABRIKAM).inner_text()
    # the audit trail says who approved
    page = operator.open(f"#/target/{FABRIKAM}/{app_id}")
    page.wait_for_selector("#detail-body .audit li")
    decided = [li for li in page.locator("#detail-body .audit li").all() if "approv" in li.inner_text()]
    assert any(OPERATOR in li.inner_text() for li in decided), [li.inner_text() for li in decided]
    # the approval reserved the rotation and queued it: the served app's worker rotates it, waiting for nothing
    page.wait_for_selector(f'#fleet-body tr[data-key^="{FABRIKAM}/"][data-status="healthy"]')
    assert operator.row(FABRIKAM).locator(".chip.waiting").count() == 0
    assert operator.row(TAILSPIN).locator(".chip.waiting").count() == 1  # the others still wait


def test_an_operator_postpones_to_a_date_picked_in_the_calendar(operator: Page) -> None:
    page = operator.open("#/approvals")
    row = approvals_row(operator, TREY)
    row.wait_for()
    app_id = row.get_attribute("data-key").split("/")[1]
    row.locator('[data-decide="postpone"]').click()
    assert page.locator("#decide-until").get_attribute("type") == "date"
    page.click("#decide-confirm")  # no date: refused in the dialog, nothing sent
    assert "Pick the date" in page.locator("#decide-error").inner_text()
    assert requests(page, "pending")[TREY]["status"] == "pending"
    day = (datetime.now(UTC) + timedelta(days=5)).date().isoformat()
    page.fill("#decide-until", day)
    # Trey's force day (7 days before its expiry in 10) comes before the date picked: the dialog says so
    force_on = requests(page, "pending")[TREY]["forceOn"]
    assert force_on < day and "forced on" in page.locator("#decide-hint").inner_text()
    page.fill("#decide-reason", "month-end freeze at the customer")
    page.click("#decide-confirm")
    page.wait_for_selector("#approvals-result.good")
    postponed = requests(page, "postponed")[TREY]
    assert postponed["decidedBy"] == BY_OPERATOR and postponed["until"].startswith(day)
    assert postponed["reason"] == "month-end freeze at the customer"
    page.select_option("#approvals-status", "postponed")
    approvals_row(operator, TREY).wait_for()
    assert "Postponed" in approvals_row(operator, TREY).inner_text()
    events = audit(page, TREY, app_id)
    assert any(e["actor"] == BY_OPERATOR and (e["step"], e["outcome"]) == ("approval", "postponed") for e in events)


def test_an_operator_rejects_with_a_reason(operator: Page) -> None:
    page = operator.open("#/approvals")
    row = approvals_row(operator, TAILSPIN)
    row.wait_for()
    app_id = row.get_attribute("data-key").split("/")[1]
    row.locator('[data-decide="reject"]').click()
    page.click("#decide-confirm")  # a rejection needs its reason
    assert "Say why" in page.locator("#decide-error").inner_text()
    page.fill("#decide-reason", "the customer replaces Proofpoint next month")
    page.click("#decide-confirm")
    page.wait_for_selector("#approvals-result.good")
    rejected = requests(page, "rejected")[TAILSPIN]
    assert rejected["decidedBy"] == BY_OPERATOR and rejected["reason"] == "the customer replaces Proofpoint next month"
    page = operator.open(f"#/target/{TAILSPIN}/{app_id}")
    block = page.locator("#change-control .approval[data-approval=rejected]")
    block.wait_for()
    assert "the customer replaces Proofpoint next month" in block.inner_text() and OPERATOR in block.inner_text()
    assert block.locator("[data-decide]").count() == 0
    page.wait_for_selector("#detail-body .audit li")
    trail = page.locator("#detail-body .audit").inner_text()
    assert OPERATOR in trail and "the customer replaces Proofpoint next month" in trail


def test_a_request_decided_elsewhere_meanwhile_is_refused_and_the_list_read_again(operator: Page) -> None:
    page = operator.open("#/approvals")
    row = approvals_row(operator, CONTOSO)
    row.wait_for()
    app_id = row.get_attribute("data-key").split("/")[1]
    assert "never" in row.inner_text()  # never forced: its expired secret keeps waiting
    # meanwhile, another operator (or a signed link) approves it
    request = requests(page, "pending")[CONTOSO]
    code, _ = fetch(page, f"/api/approvals/{CONTOSO}/{app_id}",
                    {"requestId": request["requestId"], "action": "approve"})
    assert code == 200
    row.locator('[data-decide="reject"]').click()
    page.fill("#decide-reason", "too late")
    page.click("#decide-confirm")
    page.wait_for_selector("#approvals-result.bad")
    assert "not recorded" in page.locator("#approvals-result").inner_text()
    page.wait_for_function(f"() => !document.querySelector('#approvals-table tr[data-key^=\"{CONTOSO}/\"]')")
    assert requests(page, "approved")[CONTOSO]["reason"] in (None, "")  # the page's rejection changed nothing
    # every request, whatever its status: the decisions made in this module, as the API lists them all
    page.select_option("#approvals-status", "all")
    code, body = fetch(page, "/api/approvals")
    assert code == 200
    page.wait_for_function(f"() => document.querySelectorAll('#approvals-table tbody tr').length === "
                           f"{len(body['approvals'])}")
    shown = {r.get_attribute("data-key").split("/")[0]: r.get_attribute("data-approval")
             for r in page.locator("#approvals-table tbody tr").all()}
    assert shown == {a["tenantId"]: a["status"] for a in body["approvals"]}
    assert {FABRIKAM: "approved", TREY: "postponed", TAILSPIN: "rejected", CONTOSO: "approved"}.items() <= shown.items()
    operator.errors = [e for e in operator.errors if "409" not in e]  # the refused request's own console line

