"""Tickets end to end: the real rotation engine's conditions reach the webhook desk through the alert book and the
ticket book, against the sandbox's ticket receiver (sandbox/webhooks.py): an unreachable customer opens one ticket
over many passes, a new day adds one note, the fix closes it with the routed status; GET /api/tickets, the status
list's `tickets`, the audit trail with the number, the test ticket; the PSA key (the receiver's URL token and its
Authorization header, in the Key Vault secret) never in logs, Tables or answers."""

from __future__ import annotations

import json
import logging
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from azure.data.tables.aio import TableClient

from shared import bootstrap
from shared.clock import SystemClock
from tests.api.conftest import Api, ids
from tests.rotation.conftest import ROTATOR_ROLE, World

DESK_SECRET = "ticket-desk"
ROUTING = {"default": {"board": "Security", "priority": "High", "closedStatus": "Completed"},
           "conditions": {"stuck": False}}


@dataclass
class Receiver:
    """The sandbox's ticket receiver; its URL (with a secret token) and Authorization header in Key Vault."""

    world: World
    token: str
    authorization: str

    def tickets(self) -> list[dict[str, Any]]:
        return list(self.world.sb.control.state()["webhooks"]["tickets"])

    def received(self) -> list[dict[str, Any]]:
        return [r for r in self.world.sb.control.state()["webhooks"]["received"] if r["kind"] == "tickets"]

    def leaked(self, text: str) -> bool:
        return self.token in text or self.authorization in text


def configure(world: World, monkeypatch: pytest.MonkeyPatch) -> Receiver:
    """The rotator configured as in production: TICKET_SYSTEM=webhook, its configuration JSON in Key Vault named by
    TICKET_SECRET_NAME, TICKET_ROUTING, and the real alert book (not the recorder the api fixture installs)."""
    token, key = "tk-" + secrets.token_hex(10), "psa-key-" + secrets.token_hex(10)
    config = {"url": f"{world.sb.endpoints['webhooks']}/tickets/{token}", "authorization": f"Bearer {key}"}
    world.sb.control.seed({"webhooks": {"tickets": token, "ticketsAuthorization": f"Bearer {key}"},
                           "keyvault": {"secrets": [{"name": DESK_SECRET, "value": json.dumps(config)}]}})
    monkeypatch.setenv("TICKET_SYSTEM", "webhook")
    monkeypatch.setenv("TICKET_SECRET_NAME", DESK_SECRET)
    monkeypatch.setenv("TICKET_ROUTING", json.dumps(ROUTING))
    monkeypatch.delitem(bootstrap.DEFAULTS, "alerter")
    return Receiver(world, token, key)


async def run_passes(n: int) -> None:
    for _ in range(n):
        async with bootstrap.services() as svc:
            await svc.engine.run_pass()


def later(monkeypatch: pytest.MonkeyPatch, hours: float) -> None:
    monkeypatch.setitem(bootstrap.DEFAULTS, "clock", SystemClock(timedelta(hours=hours)))


async def ticket_rows(world: World, table_name: str = "tickets") -> list[dict[str, Any]]:
    async with TableClient.from_connection_string(world.env["STATE_TABLES_CONNECTION_STRING"],
                                                  table_name=f"{world.prefix}{table_name}") as table:
        return [dict(e) async for e in table.list_entities()]


async def test_an_unreachable_customer_gets_one_ticket_a_note_a_day_and_it_closes_when_fixed(
    api: Api, world: World, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    receiver = configure(world, monkeypatch)
    c = world.seed_customer("Gone", 100, consent=False, owned=False)
    await api.put(c)
    await run_passes(3)
    [ticket] = receiver.tickets()
    assert "unreachable" in ticket["title"] and "Gone" in ticket["title"] and not ticket["closed"]
    assert ticket["route"]["board"] == "Security" and ticket["route"]["priority"] == "High"
    assert ticket["key"] == f"ssr:{c.tenant_id}/unreachable" and ticket["notes"] == []

    listed = await api.call("tickets")
    assert listed.status == 200 and listed.body["system"] == "webhook"
    [row] = listed.body["tickets"]
    assert (row["customer"], row["condition"], row["state"], row["number"], row["url"]) == (
        "Gone", "unreachable", "open", ticket["number"], ticket["url"])
    assert row["appIds"] == [c.app_id] and row["opened"] and row["lastNote"] is None
    assert listed.body["routing"]["conditions"] == {"stuck": False}
    [target] = (await api.call("status")).body["targets"]
    assert target["tickets"] == [{"condition": "unreachable", "number": ticket["number"], "url": ticket["url"]}]
    details = (await api.call("details", "GET", ids(c))).body
    assert details["tickets"] == target["tickets"]  # the customer view links them too
    events = details["events"]
    assert any(e["step"] == "ticket" and e["outcome"] == "opened" and ticket["number"] in e["detail"] for e in events)

    # The next UTC day, several passes: one note.
    later(monkeypatch, 25)
    await run_passes(2)
    [ticket] = receiver.tickets()
    assert len(ticket["notes"]) == 1 and "Still holds" in ticket["notes"][0]

    # The tenant consents and owns the app again: the next pass resolves the alert and closes the ticket, once.
    world.sb.control.seed({"tenants": [{"id": c.tenant_id, "grants": [{"appId": "msp-app", "roles": [ROTATOR_ROLE]}],
                                        "applications": [{"appId": c.app_id, "owners": ["msp-app"]}]}]})
    await run_passes(3)
    [ticket] = receiver.tickets()
    assert ticket["closed"] and ticket["closedStatus"] == "Completed" and "Resolved" in ticket["notes"][-1]
    assert len(ticket["notes"]) == 2
    assert (await api.call("tickets")).body["tickets"] == []
    [target] = (await api.call("status")).body["targets"]
    assert target["tickets"] == []
    steps = [e["outcome"] for e in (await api.call("details", "GET", ids(c))).body["events"] if e["step"] == "ticket"]
    assert sorted(steps) == ["closed", "noted", "opened"]

    # The PSA key and the receiver's token: in no log record, no ticket row, no answer.
    assert not [r for r in caplog.records if receiver.leaked(r.getMessage()) or receiver.leaked(str(r.__dict__))]
    assert not receiver.leaked(json.dumps(await ticket_rows(world), default=str))
    assert all(r["accepted"] for r in receiver.received())


async def test_a_receiver_refusing_the_key_keeps_the_condition_until_it_is_fixed(
    api: Api, world: World, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    receiver = configure(world, monkeypatch)
    world.sb.control.seed({"webhooks": {"ticketsAuthorization": "Bearer another-key"}})  # the key was revoked
    c = world.seed_customer("Gone", 100, consent=False, owned=False)
    await api.put(c)
    await run_passes(2)
    assert receiver.tickets() == []
    [row] = (await api.call("tickets")).body["tickets"]
    assert (row["state"], row["errorCode"], row["number"]) == ("opening", "TicketAuthRefused", None)
    # People are told: the one-off notice ticket-refused, once a day, naming the customer and the PSA's code.
    [told] = [r for r in await ticket_rows(world, "alerts") if r["Condition"] == "ticket-refused"]
    assert (told["TenantId"], told["AppId"]) == (c.tenant_id, c.app_id) and "TicketAuthRefused" in told["Message"]
    # The key is put right: the next pass opens the one ticket (a retried open is the same ticket at the receiver).
    world.sb.control.seed({"webhooks": {"ticketsAuthorization": f"Bearer {receiver.authorization}"}})
    later(monkeypatch, 1)
    await run_passes(2)
    [ticket] = receiver.tickets()
    [row] = (await api.call("tickets")).body["tickets"]
    assert (row["state"], row["errorCode"], row["number"]) == ("open", None, ticket["number"])
    assert not [r for r in caplog.records if receiver.leaked(r.getMessage()) or receiver.leaked(str(r.__dict__))]
    for table in ("tickets", "alerts", "events"):
        assert not receiver.leaked(json.dumps(await ticket_rows(world, table), default=str)), table


async def test_send_a_test_ticket(api: Api, world: World, monkeypatch: pytest.MonkeyPatch,
                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    receiver = configure(world, monkeypatch)
    reply = await api.call("ticket_test", "POST", body={"condition": "expired"})
    assert reply.status == 200 and reply.body["opened"] is True and reply.body["system"] == "webhook", reply.body
    [ticket] = receiver.tickets()
    assert reply.body["number"] == ticket["number"] and "test ticket" in ticket["title"]
    assert "operator@msp.example" in ticket["text"] and reply.body["route"]["board"] == "Security"
    async with bootstrap.services() as svc:
        [audit] = await svc.state.events("rotator", "tickets")
    assert (audit.step, audit.outcome, audit.actor) == ("ticket-test", "opened", "operator@msp.example")
    assert ticket["number"] in audit.detail

    # The receiver refuses the key: the answer names the PSA's code, never the key or the URL.
    world.sb.control.seed({"webhooks": {"ticketsAuthorization": "Bearer another-key"}})
    refused = await api.call("ticket_test", "POST")
    assert refused.status == 200 and refused.body["opened"] is False
    assert refused.body["errorCode"] == "TicketAuthRefused" and refused.body["number"] is None
    assert not receiver.leaked(refused.text) and not receiver.leaked(reply.text)
    assert not [r for r in caplog.records if receiver.leaked(r.getMessage()) or receiver.leaked(str(r.__dict__))]

    # A secret that is not the desk's JSON: TicketConfigInvalid, its value never shown. (Key Vault's named secrets
    # are read once per worker process: the new value is read by a new one.)
    world.sb.control.seed({"keyvault": {"secrets": [{"name": DESK_SECRET, "value": "not json s3cr3t-v"}]}})
    await bootstrap.close_invocation_services()
    bad = await api.call("ticket_test", "POST")
    assert bad.body["errorCode"] == "TicketConfigInvalid" and "s3cr3t-v" not in bad.text


async def test_tickets_need_their_roles_and_a_system(api: Api) -> None:
    reader = ("reader@msp.example", ("Rotator.Read",))
    assert (await api.call("ticket_test", "POST", caller=reader)).status == 403
    none = await api.call("ticket_test", "POST")
    assert none.status == 409 and none.code == "NoTicketSystem"
    listed = await api.call("tickets", caller=reader)
    assert listed.status == 200 and listed.body["system"] is None and listed.body["tickets"] == []
    assert (await api.call("tickets", caller=None)).status == 401
    assert (await api.call("ticket_test", "GET")).status == 405
    bad = await api.call("ticket_test", "POST", body={"condition": "no-such-condition"})
    assert bad.status == 422 and bad.code == "InvalidRequest"


async def test_the_command_line_sends_a_test_ticket_and_lists(
    api: Api, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver = configure(world, monkeypatch)
    world.env.update({"TICKET_SYSTEM": "webhook", "TICKET_SECRET_NAME": DESK_SECRET,
                      "TICKET_ROUTING": json.dumps(ROUTING)})
    run = world.cli("tickets", "test", "--as", "ops-script", "--condition", "not-owner")
    assert run.wait(120) == 0, run.output()
    out = run.output()
    answer = json.loads(out[out.index("{"):out.rindex("}") + 1])
    [ticket] = receiver.tickets()
    assert (answer["opened"], answer["number"]) == (True, ticket["number"]) and "ops-script" in ticket["text"]
    assert not receiver.leaked(out)
    listed = world.cli("tickets", "list")
    assert listed.wait(120) == 0
    assert json.loads(listed.output()[listed.output().index("{"):])["system"] == "webhook"
    world.env["TICKET_SYSTEM"] = ""
    refused = world.cli("tickets", "test")
    assert refused.wait(120) == 1 and "NoTicketSystem" in refused.output()
