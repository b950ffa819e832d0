"""The report's pure part: which credentials need the customer (not the rotator's, not Microsoft's, not renewed, not
excluded, inside a threshold), in what order, and the HTML and PDF renderings (escaped; the PDF's text read back)."""

from __future__ import annotations

import io
from dataclasses import replace
from datetime import timedelta

import pypdfium2 as pdfium

from shared.customer_report import CustomerReport, lines_of, render_html, render_pdf
from shared.expiry_warnings import DEFAULT_THRESHOLDS, new_exclusion
from shared.inventory import CredentialKind, ObjectKind
from shared.ports import Event
from tests.warnings.test_rules import APP, KEY, KEY2, NOW, T, cred

APP2 = "66666666-6666-4666-8666-666666666666"
KEY3, KEY4, KEY5 = (f"7777777{i}-7777-4777-8777-777777777777" for i in range(3))


def report(credentials: list, exclusions: tuple = (), activity: tuple = (), targets: tuple = ()) -> CustomerReport:
    return CustomerReport(T, "Contoso", NOW - timedelta(days=30), NOW,
                          lines_of(credentials, list(exclusions), DEFAULT_THRESHOLDS, NOW), targets, activity)


def pdf_text(data: bytes) -> str:
    doc = pdfium.PdfDocument(io.BytesIO(data))
    return "\n".join(doc[i].get_textpage().get_text_range() for i in range(len(doc)))


def test_only_what_nobody_else_will_renew_needs_the_customer() -> None:
    soon = replace(cred(10), owners=("Ann Lee",))
    managed = cred(10, key=KEY2, app=APP2, managed=True)
    microsoft = replace(cred(5, key=KEY3, object_kind=ObjectKind.SERVICE_PRINCIPAL, app=APP2), first_party=True)
    far = cred(200, key=KEY4, app=APP2)
    r = report([soon, managed, microsoft, far])
    assert r.needs == [f"Renew the client secret 'nightly' of Backup connector (app registration): it ends on "
                       f"{(NOW + timedelta(days=10)):%Y-%m-%d}, in 10 day(s); owner: Ann Lee."]
    assert [x.credential.key_id for x in r.lines] == [KEY3, KEY, KEY2, KEY4]  # soonest end first
    assert r.counts == {"credentials": 4, "expired": 0, "warned": 3, "managed": 1, "excluded": 0,
                        "need you": 1}


def test_renewed_and_excluded_credentials_do_not_need_the_customer_but_stay_listed() -> None:
    old, new = cred(3), cred(400, key=KEY2)  # the same object, kind and usage: renewed
    other = cred(-2, key=KEY3, app=APP2)  # expired
    snoozed = cred(6, key=KEY4, app="88888888-8888-4888-8888-888888888888")
    rule = new_exclusion("e1", T, "app", app_id="88888888-8888-4888-8888-888888888888", key_id="", snooze=True,
                         until=NOW + timedelta(days=20), by="ops@msp", why="vendor renews it", now=NOW)
    r = report([old, new, other, snoozed], exclusions=(rule,))
    by_key = {x.credential.key_id: x for x in r.lines}
    assert by_key[KEY].renewed and not by_key[KEY].needs_customer
    assert by_key[KEY4].exclusion == rule and not by_key[KEY4].needs_customer
    assert len(r.needs) == 1 and "ended on" in r.needs[0] and "Renew or remove" in r.needs[0]
    assert r.needs[0].endswith("it has no owner in the tenant: name one, so someone answers for it.")
    page = render_html(r)
    assert "vendor renews it" in page and page.count("<tr class=") == 4
    assert "class='muted' data-key-id='" + KEY4 in page and "class='expired' data-key-id='" + KEY3 in page


def test_a_targets_open_alert_needs_the_customer() -> None:
    r = report([], targets=({"appId": APP, "alerts": ["destination-failing"]},))
    assert r.needs == [f"Proofpoint sync app {APP}: a destination refuses the new secret."]
    assert "The inventory holds no credential" in render_html(r)


def test_names_from_the_tenant_are_escaped_in_html_and_kept_readable_in_pdf() -> None:
    hostile = replace(cred(4, kind=CredentialKind.CERTIFICATE, usage="Verify"),
                      display_name="<script>alert(1)</script> Café", credential_name="a&b")
    event = Event(T, APP, "push", "acknowledged", actor="timer", rotation_id="abcdef0123456789", detail="<b>",
                  at=NOW - timedelta(days=2))
    r = report([hostile], activity=(event,))
    page = render_html(r)
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt; Café" in page and "a&amp;b" in page
    assert "push · acknowledged · rotation abcdef01 · &lt;b&gt;" in page
    text = pdf_text(render_pdf(r))
    assert "<script>alert(1)</script> Café" in text and "certificate (Verify)" in text
    assert "push · acknowledged · rotation abcdef01" in text and "What needs you" in text  # as in HTML


def test_a_pdf_of_hundreds_of_credentials_pages_and_keeps_every_row() -> None:
    rows = [replace(cred(i % 90 - 5, key=f"{i:08d}-0000-4000-8000-000000000000"), object_id=f"o{i}",
                    display_name=f"App {i:03d}") for i in range(300)]
    data = render_pdf(report(rows))
    doc = pdfium.PdfDocument(io.BytesIO(data))
    assert len(doc) > 5
    text = pdf_text(data)
    assert all(f"App {i:03d}" in text for i in range(300))


def test_a_disabled_targets_secret_needs_the_customer_the_rotator_does_not_renew_it() -> None:
    managed = cred(5, managed=True)
    running = report([managed])
    assert running.needs == [] and running.lines[0].rotated
    paused = CustomerReport(T, "Contoso", NOW - timedelta(days=30), NOW,
                            lines_of([managed], [], DEFAULT_THRESHOLDS, NOW, {APP}), (), ())
    assert paused.lines[0].paused and len(paused.needs) == 1 and "in 5 day(s)" in paused.needs[0]
    assert "<td>rotation disabled</td>" in render_html(paused)


def test_every_condition_a_targets_status_can_alert_on_is_said_in_words() -> None:
    from shared.conditions import STATUS_CONDITIONS, VERIFY_FLAGS
    from shared.customer_report import ALERT_TEXT

    named = {"stuck", "proofpoint-drift", "destination-failing", "notify-only-waiting", "needs-human"}
    assert set(STATUS_CONDITIONS) | set(VERIFY_FLAGS) | named <= set(ALERT_TEXT)
    r = report([], targets=({"appId": APP, "alerts": ["not-owner"]},))
    assert r.needs == [f"Proofpoint sync app {APP}: {ALERT_TEXT['not-owner']}."]
