"""GET /api/reports/{tenantId} on a real inventory read (sandbox tenant of many apps and service principals, read by
the inventory timer into Azurite) after a real rotation: the HTML and the PDF list every credential, the period's
audit events and what needs the customer; an exclusion shows with its reason; no secret anywhere; bad requests are
refused before anything is read. Every answer is checked against the OpenAPI document by the Api helper."""

from __future__ import annotations

import html
import io
import logging

import azure.functions.timer as timer
import pypdfium2 as pdfium
import pytest

from shared.bootstrap import services
from shared.customer_report import CustomerReport, gather, policy_from, state_of
from shared.inventory import InventoryQuery
from tests.api.conftest import Api, functions
from tests.material import client_secret
from tests.rotation.conftest import World
from tests.rotation.test_entrypoints import register

READER = ("reader@msp.example", ("Rotator.Read",))
BACKUP_APP, BACKUP_KEY = "b4c6b4c6-0000-4000-8000-00000000b4c6", "b4c6b4c6-0000-4000-8000-0000000000e1"
BACKUP_SECRET = client_secret("bkp")  # made at run time (tests/material.py): nothing secret-shaped is committed


async def population(api: Api, world: World):  # type: ignore[no-untyped-def]
    customer = world.seed_customer("Populous", 12)  # the sync secret is due: an operator rotates it now
    # one app whose secret surely needs the customer (the generated population varies with the tenant id), and its
    # secret's value, which must appear nowhere
    world.sb.control.seed({"tenants": [{"id": customer.tenant_id, "applications": [
        {"appId": BACKUP_APP, "displayName": "Backup connector",
         "passwordCredentials": [{"keyId": BACKUP_KEY, "displayName": "nightly", "endDateTime": "+9d",
                                  "secretText": BACKUP_SECRET}]}]}],
        "inventory": {"populations": [
            {"tenants": [customer.tenant_id], "applications": 12, "servicePrincipals": 20, "seed": "report"}]}})
    world.seed_accounts()
    await register(api, customer)
    rotated = await api.call("rotations", "POST", body={"tenantId": customer.tenant_id, "appId": customer.app_id},
                             params={"wait": "true"})
    assert rotated.status == 200 and rotated.body["result"] == "rotated", rotated.body
    await functions()["inventory_timer"](timer.TimerRequest(past_due=False))
    return customer


async def test_the_report_lists_every_credential_the_rotations_and_what_needs_the_customer(
        api: Api, world: World, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    customer = await population(api, world)
    async with services() as svc:
        assert svc.inventory is not None and svc.warning_rules is not None
        rows = await svc.inventory.list_credentials(InventoryQuery(tenant_id=customer.tenant_id))
        events = await svc.state.events(customer.tenant_id, customer.app_id, 100)
        expected: CustomerReport = await gather(svc.state, svc.inventory, svc.warning_rules, customer.tenant_id,
                                                policy_from(svc.settings), svc.engine.clock.now())
    assert len(rows) > 10 and any(BACKUP_KEY == x.credential.key_id and x.needs_customer for x in expected.lines)
    assert {e.step for e in events} >= {"create", "store", "verify", "finish"}, events
    excluded = next(x.credential for x in expected.lines if x.needs_customer)
    reply = await api.call("exclusions", "POST", body={
        "tenantId": customer.tenant_id, "scope": "credential", "keyId": excluded.key_id,
        "why": "the vendor renews this one"})
    assert reply.status == 201, reply.body

    async with services() as svc:
        assert svc.inventory is not None and svc.warning_rules is not None
        after = await gather(svc.state, svc.inventory, svc.warning_rules, customer.tenant_id,
                             policy_from(svc.settings), svc.engine.clock.now())
    assert any(x.credential.managed for x in after.lines) and len(after.needs) == len(expected.needs) - 1

    page = await api.call("report", route={"tenantId": customer.tenant_id}, caller=READER)
    assert page.status == 200 and page.text.startswith("<!doctype html>")
    assert page.headers["Cache-Control"] == "no-store"
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    assert page.text.count("data-key-id=") == len(rows) == len(after.lines)
    table = page.text.split("<h2>Credentials</h2>")[1].split("</table>")[0]
    shown = [row.split("'>", 1)[0] for row in table.split("data-key-id='")[1:]]
    assert shown == [x.credential.key_id for x in after.lines]  # soonest end first
    for line in after.lines:  # each row says its state: managed, Microsoft's, renewed, expired, excluded ...
        row = table.split(f"data-key-id='{line.credential.key_id}'")[1].split("</tr>")[0]
        assert f"<td>{html.escape(state_of(line))}</td>" in row
    assert f"class='muted' data-key-id='{excluded.key_id}'" in page.text and "the vendor renews this one" in page.text
    assert all(e.step in page.text for e in events) and "warnings · excluded" in page.text
    needs = page.text.split("<h2>What needs you</h2>")[1].split("<h2>")[0]
    assert needs.count("<li>") == len(after.needs)

    pdf = await api.call("report", route={"tenantId": customer.tenant_id}, params={"format": "pdf", "days": "7"},
                         caller=READER)
    assert pdf.status == 200 and pdf.data.startswith(b"%PDF-")
    assert pdf.headers["Content-Disposition"].startswith('attachment; filename="credentials-')
    doc = pdfium.PdfDocument(io.BytesIO(pdf.data))
    text = "\n".join(doc[i].get_textpage().get_text_range() for i in range(len(doc))).replace("\r", "")
    flowing = " ".join(text.split())  # a cell's text wraps to the column's width
    assert "Populous" in text and "the vendor renews this one" in flowing
    assert all(r.display_name in flowing for r in rows if r.display_name)
    rotated = [v["value"] for v in world.versions(customer)]  # the secret the rotation made, and the seeded one
    assert rotated and all(len(v) > 12 for v in rotated)
    for out in (page.text, text, caplog.text):
        for secret in (customer.secret, BACKUP_SECRET, *rotated):
            assert secret not in out and secret[3:12] not in out


async def test_bad_requests_are_refused_and_only_customers_have_reports(api: Api, world: World) -> None:
    customer = world.seed_customer("Fabrikam", 200)
    world.seed_accounts()
    await register(api, customer)
    route = {"tenantId": customer.tenant_id}
    for bad in ({"format": "docx"}, {"days": "0"}, {"days": "367"}, {"days": "-1"}, {"days": "x"},
                {"days": "\u00b2"}, {"days": "\u0663"}, {"days": " 7"}, {"colour": "red"}):
        reply = await api.call("report", route=route, params=bad, caller=READER)
        assert (reply.status, reply.code) == (400, "InvalidQuery"), bad
    reply = await api.call("report", route={"tenantId": "99999999-9999-4999-8999-999999999999"}, caller=READER)
    assert (reply.status, reply.code) == (404, "TenantNotFound")
    assert (await api.call("report", route={"tenantId": "not-a-guid"}, caller=READER)).status == 400
    assert (await api.call("report", "POST", route=route, caller=READER)).status == 405
    assert (await api.call("report", route=route, caller=None)).status == 401
    assert (await api.call("report", route=route, caller=("x@msp.example", ()))).status == 403
    empty = await api.call("report", route=route, caller=READER)
    assert empty.status == 200 and "The inventory holds no credential of this tenant yet." in empty.text


async def test_the_command_line_writes_the_report_as_pdf_and_html(api: Api, world: World, tmp_path) -> None:  # type: ignore[no-untyped-def]
    customer = await population(api, world)
    out = tmp_path / "report.pdf"
    process = world.cli("report", customer.tenant_id, "--format", "pdf", "--out", str(out))
    assert process.wait(timeout=120) == 0, process.output()
    doc = pdfium.PdfDocument(io.BytesIO(out.read_bytes()))
    assert "Credential report: Populous" in doc[0].get_textpage().get_text_range()
    process = world.cli("report", customer.tenant_id, "--days", "0")
    assert process.wait(timeout=120) == 2 and "days" in process.output()
    process = world.cli("report", "99999999-9999-4999-8999-999999999999")
    assert process.wait(timeout=120) != 0 and "TenantNotFound" in process.output()
