"""The dashboard's "All credentials" view and the customer's other credentials in a real browser (Debian's Chromium
through Playwright), on the demo seed read by a real inventory pass (Fabrikam's generated apps and service
principals: secrets, certificates, SAML, expired, Microsoft's). What the page shows is compared with what the API
answers the same signed-in caller; every page fails its test on a console error."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.dashboard.test_browser import FABRIKAM, OPERATOR, READER, Page, Stack, app_ids, stack

__all__ = ["stack"]
pytestmark = [pytest.mark.sandbox, pytest.mark.azurite]


@pytest.fixture
def reader(stack: Stack) -> Iterator[Page]:
    page = Page(stack, READER)
    yield page
    page.close()


@pytest.fixture
def operator(stack: Stack) -> Iterator[Page]:
    page = Page(stack, OPERATOR)
    yield page
    page.close()


def inventory(page: Any, query: str) -> list[dict[str, Any]]:
    """Every row the API answers for `query`, pages followed, as the signed-in page itself would fetch them."""
    return page.evaluate("""async (query) => {
        const rows = []; let cursor = null;
        do {
          const answer = await (await fetch(`/api/inventory?${query}${cursor ? `&cursor=${cursor}` : ""}`)).json();
          rows.push(...answer.credentials); cursor = answer.next;
        } while (cursor);
        return rows; }""", query)


def shown(page: Any) -> list[tuple[str, str]]:
    rows = page.locator("#credentials-body tr")
    return [(rows.nth(i).get_attribute("data-key-id"), rows.nth(i).get_attribute("data-state"))
            for i in range(rows.count())]


def days(page: Any) -> list[float]:
    cells = page.locator("#credentials-body tr td:nth-child(4)").all_inner_texts()
    return [float("inf") if c == "—" else int(c) for c in cells]


def test_all_credentials_lists_the_window_sorts_filters_and_searches(reader: Page) -> None:
    page = reader.open()
    page.wait_for_selector("#credentials-body tr")
    expected = inventory(page, "daysLeft=90")  # the view's default window
    assert expected and {c["tenantId"] for c in expected} >= {FABRIKAM}
    assert sorted(k for k, _ in shown(page)) == sorted(c["keyId"] for c in expected)
    assert days(page) == sorted(days(page))  # soonest first by default
    assert f"{len(expected)} of {len(expected)}" in page.locator("#credentials-count").inner_text()
    # the state chips count the rows and filter them
    states = {b.get_attribute("data-state"): int(b.locator(".n").inner_text())
              for b in page.locator("#credentials-states .count").all()}
    assert states["all"] == len(expected) and sum(v for k, v in states.items() if k != "all") == len(expected)
    assert states.get("expired", 0) == sum(1 for c in expected if c["state"] == "expired")
    # each chip says the API's state in its words, the words of the customer report ("expired, renewed", ...)
    chips = {r.get_attribute("data-key-id"): r.locator(".chip").first.inner_text()
             for r in page.locator("#credentials-body tr").all()}
    assert chips == {c["keyId"]: c["stateText"] for c in expected if not c["excluded"]}
    for state in (s for s in states if s != "all"):  # each chip filters to its rows, as the API says them
        page.click(f'#credentials-states .count[data-state="{state}"]')
        assert sorted(k for k, _ in shown(page)) == sorted(c["keyId"] for c in expected if c["state"] == state)
        page.click(f'#credentials-states .count[data-state="{state}"]')
    # sort: days left descending, then by application name
    page.click('#credentials-table th[data-sort="daysLeft"] button')
    assert days(page) == sorted(days(page), reverse=True)
    page.click('#credentials-table th[data-sort="app"] button')
    cells = page.locator("#credentials-body tr td:nth-child(2) > div:first-child")
    names = [n.lower() for n in cells.all_inner_texts()]
    assert names == sorted(names)
    # search: one application's name narrows to its credentials
    target = expected[0]
    page.fill("#credentials-search", target["displayName"])
    assert sorted(k for k, _ in shown(page)) == sorted(
        c["keyId"] for c in expected if target["displayName"].lower() in c["displayName"].lower())
    page.fill("#credentials-search", "")
    # a server-side filter: certificates only, any end
    page.select_option("#credentials-window", "")
    page.select_option("#credentials-kind", "certificate")
    certificates = inventory(page, "kind=certificate")
    page.wait_for_function("n => document.querySelectorAll('#credentials-body tr').length === n", arg=len(certificates))
    assert sorted(k for k, _ in shown(page)) == sorted(c["keyId"] for c in certificates)


def test_an_excluded_credential_stays_listed_greyed_with_its_reason(operator: Page) -> None:
    page = operator.open()
    page.wait_for_selector("#credentials-body tr")
    candidates = [c for c in inventory(page, f"tenantId={FABRIKAM}&excluded=false") if not c["managed"]]
    chosen = candidates[0]
    status = page.evaluate("""async (body) => (await fetch('/api/exclusions', {method: 'POST',
        headers: {'Content-Type': 'application/json'}, body: JSON.stringify(body)})).status""",
        {"tenantId": FABRIKAM, "scope": "credential", "keyId": chosen["keyId"], "why": "vendor-managed test key"})
    assert status == 201
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    page.select_option("#credentials-window", "")
    row = page.locator(f'#credentials-body tr[data-key-id="{chosen["keyId"]}"]')
    row.wait_for()
    assert row.get_attribute("class") == "excluded" and row.get_attribute("data-state") == "excluded"
    assert "vendor-managed test key" in row.inner_text() and "Excluded by" in row.inner_text()
    grey = row.locator("td").first.evaluate("td => getComputedStyle(td).backgroundColor")
    plain = page.locator("#credentials-body tr:not(.excluded) td").first.evaluate(
        "td => getComputedStyle(td).backgroundColor")
    assert grey != plain
    page.select_option("#credentials-excluded", "true")
    page.wait_for_function(
        "() => [...document.querySelectorAll('#credentials-body tr')].every(r => r.dataset.state === 'excluded')")
    assert chosen["keyId"] in [k for k, _ in shown(page)]


def test_the_customer_shows_its_tenants_other_credentials_the_report_and_the_timeline(reader: Page) -> None:
    app_id = app_ids()[FABRIKAM]
    page = reader.open(f"#/target/{FABRIKAM}/{app_id}")
    page.wait_for_selector("#tenant-credentials tbody tr")
    others = [c for c in inventory(page, f"tenantId={FABRIKAM}") if c["appId"] != app_id]
    listed = page.locator("#tenant-credentials tbody tr")
    assert sorted(listed.nth(i).get_attribute("data-key-id") for i in range(listed.count())) == sorted(
        c["keyId"] for c in others)
    link = page.locator("#tenant-credentials a", has_text="Report")
    assert link.get_attribute("href") == f"/api/reports/{FABRIKAM}"
    report = page.evaluate("async (href) => { const r = await fetch(href); return [r.status, await r.text()]; }",
                           link.get_attribute("href"))
    assert report[0] == 200 and "Credential report: Fabrikam" in report[1]
    assert all(c["keyId"] in report[1] for c in others)
    # the timeline: the customers' other credentials of the view's window, on their customer's lane
    page.keyboard.press("Escape")
    assert page.locator("#timeline-chart .other-credential").count() == 0
    page.check("#timeline-others")
    window = [c for c in inventory(page, "daysLeft=90") if c["end"] and not c["excluded"]
              and c["appId"] not in app_ids().values()]
    page.wait_for_selector("#timeline-chart .other-credential")
    plotted = page.locator("#timeline-chart .other-credential")
    assert sorted(plotted.nth(i).get_attribute("data-key-id") for i in range(plotted.count())) == sorted(
        c["keyId"] for c in window)
