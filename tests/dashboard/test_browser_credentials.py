"""The customer view's credentials and the fleet's flags in a real browser (Debian's Chromium through Playwright),
against `python -m shared serve` with the sandbox and Azurite behind it (issue 24).

The demo's customers plus scripts/demo.py's EXTRA_SEED (Wingtip: its Proofpoint org syncs with another app than the
registered one; Litware), registered and checked by the real command line: Wingtip's drift is found by the product,
not planted. The sign-in evidence is written into two rows as the evidence step stores it (Observation.sign_ins,
evidence_hold): Northwind with Entra's sign-ins of its key and a superseded key still signing in (old-key-still-used),
Adatum with a tenant that cannot say (no licence): the page must show each as the status and details documents
give it. Every page fails its test on a console error.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from sandbox.launch import running
from scripts.browser import launch, serving, sign_in, trusted_keys
from scripts.demo import EXTRA_SEED, SEED, targets
from shared.bootstrap import services
from shared.domain import CredentialSignIns, ReportedSignIns, SignInEvidence
from shared.settings import Settings
from tests.browsers import require_chromium
from tests.conftest import ROOT, STARTUP_TIMEOUT
from tests.dashboard.test_browser import ADATUM, NORTHWIND, OPERATOR, Page, Stack

pytestmark = [pytest.mark.sandbox, pytest.mark.azurite]

WINGTIP = "3d1f0000-0000-4000-8000-00000000b001"
NORTHWIND_KEY = "c1b2c3d4-0000-4000-8000-00000000e0a1"
OLD_IP, NEW_IP = "203.0.113.77", "198.51.100.20"
NO_LICENCE = "Authentication_RequestFromNonPremiumTenantOrB2CTenant"


def app_ids() -> dict[str, str]:
    docs = [json.loads(Path(p).read_text()) for p in (SEED, EXTRA_SEED)]
    return {t["id"]: t["applications"][0]["appId"] for d in docs for t in d["tenants"]}


async def plant_evidence(env: dict[str, str], prefix: str) -> None:
    """Northwind: its key signed in (first and last), and a superseded key that signed in after the push; Adatum:
    its tenant refused the read."""
    now = datetime.now(UTC).replace(microsecond=0)
    ids = app_ids()
    async with services(Settings.from_env(env), table_prefix=prefix) as svc:
        target, etag = await svc.state.get_target(NORTHWIND, ids[NORTHWIND])
        evidence = SignInEvidence(True, now - timedelta(minutes=5), now - timedelta(days=2), {
            NORTHWIND_KEY: CredentialSignIns(NORTHWIND_KEY, now - timedelta(days=2) + timedelta(hours=1),
                                             now - timedelta(hours=3), NEW_IP, "Microsoft Graph"),
        })
        await svc.state.replace_target(target.with_observed(
            sign_ins=evidence,
            evidence_hold=f"old-key-still-used: a superseded key signed in from {OLD_IP} after the grace period",
        ), etag)
        target, etag = await svc.state.get_target(ADATUM, ids[ADATUM])
        refused = SignInEvidence(False, now, now - timedelta(days=2), code=NO_LICENCE,
                                 reason="the tenant has no Microsoft Entra ID P1 or P2 licence")
        await svc.state.replace_target(target.with_observed(sign_ins=refused), etag)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    require_chromium(azurite=True)
    from playwright.sync_api import sync_playwright

    prefix = f"cred{uuid.uuid4().hex[:8]}"
    with ExitStack() as stack:
        sandbox = stack.enter_context(running(tmp_path_factory.mktemp("credentials"), SEED, timeout=STARTUP_TIMEOUT))
        sandbox.control.seed(json.loads(EXTRA_SEED.read_text()))
        env = {**os.environ, **sandbox.settings, "VERIFY_TIMEOUT_SECONDS": "30"}
        registry = sandbox.state_dir / "targets.json"
        registry.write_text(json.dumps(targets(sandbox.control.state(), sandbox.endpoints)))
        for args in (["targets", "import", str(registry)], ["check"]):
            subprocess.run([sys.executable, "-m", "shared", "--table-prefix", prefix, *args], cwd=ROOT, env=env,
                           check=False, capture_output=True, timeout=120)
        asyncio.run(plant_evidence(env, prefix))
        url = stack.enter_context(serving(env, table_prefix=prefix, work_queue=f"{prefix}-work"))
        sandbox.control.add_redirect_uri("msp-app", f"{url}/.auth/login/aad/callback")
        playwright = stack.enter_context(sync_playwright())
        browser = launch(playwright, trusted_keys(sandbox.ca_file, [sandbox.endpoints["entra"]]))
        stack.callback(browser.close)
        context = browser.new_context()
        sign_in(context.new_page(), url, OPERATOR)
        sessions = {OPERATOR: context.storage_state()}
        context.close()
        yield Stack(url, browser, env, prefix, sessions)


@pytest.fixture
def operator(stack: Stack) -> Iterator[Page]:
    page = Page(stack, OPERATOR)
    yield page
    page.close()


def flags(page: Page, tenant_id: str) -> list[str]:
    return [c.get_attribute("data-flag") for c in page.row(tenant_id).locator(".chip.flag").all()]


def visible_customers(page: Any) -> list[str]:
    return list(page.locator("#fleet-body tr .customer-name").all_inner_texts())


def test_the_fleet_shows_each_flag_as_a_chip_and_filters_by_it(operator: Page) -> None:
    page = operator.open()
    page.wait_for_selector("#fleet-body tr")
    assert flags(operator, WINGTIP) == ["proofpoint-drift"]
    assert flags(operator, NORTHWIND) == ["old-key-still-used"]
    assert flags(operator, ADATUM) == []
    assert operator.row(WINGTIP).locator(".chip.s-healthy").count() == 1, "drift leaves the status as it is"
    counts = {b.get_attribute("data-flag"): b.locator(".n").inner_text()
              for b in page.locator(".count.flag").all()}
    assert counts == {"old-key-still-used": "1", "proofpoint-drift": "1"}
    page.click('.count[data-flag="old-key-still-used"]')
    assert visible_customers(page) == ["Northwind"]
    page.click('.count[data-flag="old-key-still-used"]')
    assert len(visible_customers(page)) == 7
    page.select_option("#status-filter", "flag:proofpoint-drift")
    assert visible_customers(page) == ["Wingtip"]
    page.select_option("#status-filter", "")
    assert len(visible_customers(page)) == 7


def credential_rows(page: Any) -> Any:
    return page.locator("#entra-credentials tbody tr")


def test_the_customer_view_lists_each_credential_with_who_made_it_its_dates_and_sign_ins(operator: Page) -> None:
    page = operator.open(f"#/target/{NORTHWIND}/{app_ids()[NORTHWIND]}")
    page.wait_for_selector("#entra-credentials tbody tr")
    [row] = credential_rows(page).all()
    cells = row.locator("td").all_inner_texts()
    assert cells[0].endswith("…") and len(cells[0]) <= 4, "the hint, never more"
    assert cells[1].startswith("someone else"), cells[1]
    assert cells[3].startswith("2 Oct 2027") or "2027" in cells[3]
    first, last = row.locator('[data-signin="firstSignIn"]'), row.locator('[data-signin="lastSignIn"]')
    assert first.count() == 1 and last.count() == 1
    assert NEW_IP in last.inner_text() and NEW_IP not in first.inner_text()
    # The key was made long before the log's read began (two days ago): its first sign-in there is not its first ever.
    assert "(first since " in first.inner_text() and first.locator("[data-signin-since]").count() == 1
    assert "first since" not in last.inner_text()
    assert row.locator('[data-used-by="proofpoint"]').inner_text() == "proofpoint uses it"
    assert page.locator("#detail-title .chip.flag-old-key-still-used").count() == 1
    assert "old key still used" in page.locator("#detail-body").inner_text()


def test_a_tenant_that_cannot_say_shows_why(operator: Page) -> None:
    page = operator.open(f"#/target/{ADATUM}/{app_ids()[ADATUM]}")
    page.wait_for_selector("#entra-credentials tbody tr")
    row = credential_rows(page).first
    reasons = row.locator('[data-signin="unavailable"]').all_inner_texts()
    assert reasons == ["not available: the tenant has no Microsoft Entra ID P1 or P2 licence"] * 2
    assert row.locator('[data-signin="unavailable"]').first.get_attribute("title") == NO_LICENCE


def test_drift_is_spelled_out_on_the_customer_view(operator: Page) -> None:
    ids = app_ids()
    page = operator.open(f"#/target/{WINGTIP}/{ids[WINGTIP]}")
    page.wait_for_selector("#entra-credentials tbody tr")
    text = page.locator('[data-drift="proofpoint"]').inner_text()
    assert "a1b2c3d4-0000-4000-8000-00000000b0a2" in text and ids[WINGTIP] in text
    [row] = credential_rows(page).all()
    assert row.locator("[data-used-by]").count() == 0, "Proofpoint uses none of this app's credentials"
    assert page.locator("#detail-title .chip.flag-proofpoint-drift").count() == 1
    assert "Wt6-demo" not in page.content() and "Wt7-demo" not in page.content()


def test_phone_width_with_the_chips_and_the_credentials_has_no_horizontal_scroll(stack: Stack) -> None:
    phone = Page(stack, OPERATOR, width=390, height=844)
    try:
        page = phone.open()
        page.wait_for_selector(".chip.flag")
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        page = phone.open(f"#/target/{NORTHWIND}/{app_ids()[NORTHWIND]}")
        page.wait_for_selector("#entra-credentials tbody tr")
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        assert page.locator("#entra-credentials").is_visible()
    finally:
        phone.close()


def test_a_last_sign_in_from_the_credential_activity_report_is_labelled_so(operator: Page, stack: Stack) -> None:
    """Adatum refuses the log but gives the report: its key's last sign-in is the report's day, said to be from it."""
    adatum_key = "c1b2c3d4-0000-4000-8000-00000000ada1"
    day = (datetime.now(UTC) - timedelta(days=45)).replace(hour=0, minute=0, second=0, microsecond=0)

    async def report(restore: bool) -> None:
        async with services(Settings.from_env(stack.env), table_prefix=stack.prefix) as svc:
            target, etag = await svc.state.get_target(ADATUM, app_ids()[ADATUM])
            evidence = target.observed.sign_ins
            assert evidence is not None
            shown = None if restore else ReportedSignIns(True, evidence.read_at, {adatum_key: day})
            await svc.state.replace_target(target.with_observed(sign_ins=replace(evidence, reported=shown)), etag)

    def write(restore: bool) -> None:  # Playwright's sync API holds this thread's event loop: another thread
        with ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, report(restore)).result()

    write(restore=False)
    try:
        page = operator.open(f"#/target/{ADATUM}/{app_ids()[ADATUM]}")
        page.wait_for_selector("#entra-credentials tbody tr")
        row = credential_rows(page).first
        last = row.locator('[data-signin="lastSignIn"]')
        assert last.get_attribute("data-signin-from") == "report"
        assert "from the report" in last.inner_text() and "2" in last.inner_text()
        assert row.locator('[data-signin="unavailable"]').count() == 1, "the first sign-in: the log cannot say"
    finally:
        write(restore=True)
