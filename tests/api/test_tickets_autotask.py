"""Tickets end to end in Autotask: the real rotation engine's conditions reach the Autotask desk through the alert
book and the ticket book, against the sandbox's Autotask stand-in (sandbox/psa_autotask.py): an unreachable
customer, filed under its own company found by its (non-ASCII) name, gets one ticket over many passes and restarts,
a note on a new day; a person completes the ticket in Autotask while the condition holds, so the next day a new
ticket follows; the fix closes that one. The API user's secret and tracking identifier never appear in logs, Tables
or answers."""

from __future__ import annotations

import json
import logging
import secrets
from datetime import timedelta
from typing import Any

import pytest
from azure.data.tables.aio import TableClient

from shared import bootstrap
from shared.clock import SystemClock
from tests.api.conftest import Api, ids
from tests.rotation.conftest import ROTATOR_ROLE, World

pytestmark = pytest.mark.sandbox

DESK_SECRET = "autotask-desk"
USER = "rotator-api@msp.example"
COMPANY_ID, COMPANY = 29683616, "Bäckerei Müller, Zürich"


def configure(world: World, monkeypatch: pytest.MonkeyPatch, tenant_id: str) -> tuple[str, str]:
    """TICKET_SYSTEM=autotask, the desk's configuration JSON in Key Vault (TICKET_SECRET_NAME), TICKET_ROUTING naming
    the customer's company by name, and the real alert book."""
    secret, code = "at-" + secrets.token_urlsafe(24), "IC" + secrets.token_hex(12).upper()
    config = {"userName": USER, "secret": secret, "integrationCode": code, "queue": "Monitoring Alert",
              "zoneInformationUrl": f"{world.sb.endpoints['psa_autotask']}/atservicesrest/v1.0/zoneInformation"}
    world.sb.control.seed({
        "psa_autotask": {"users": [{"userName": USER, "secret": secret, "integrationCode": code}],
                         "companies": [{"id": COMPANY_ID, "companyName": COMPANY}]},
        "keyvault": {"secrets": [{"name": DESK_SECRET, "value": json.dumps(config)}]}})
    routing = {"default": {"board": "Monitoring Alert", "priority": "High", "closedStatus": "Complete"},
               "companies": {tenant_id: COMPANY.upper()}}
    monkeypatch.setenv("TICKET_SYSTEM", "autotask")
    monkeypatch.setenv("TICKET_SECRET_NAME", DESK_SECRET)
    monkeypatch.setenv("TICKET_ROUTING", json.dumps(routing))
    monkeypatch.delitem(bootstrap.DEFAULTS, "alerter")
    return secret, code


async def run_passes(n: int) -> None:
    for _ in range(n):  # each pass its own services: a restart
        async with bootstrap.services() as svc:
            await svc.engine.run_pass()


def later(monkeypatch: pytest.MonkeyPatch, hours: float) -> None:
    monkeypatch.setitem(bootstrap.DEFAULTS, "clock", SystemClock(timedelta(hours=hours)))


def autotask(world: World) -> dict[str, Any]:
    return world.sb.control.autotask()


async def ticket_rows(world: World) -> list[dict[str, Any]]:
    async with TableClient.from_connection_string(world.env["STATE_TABLES_CONNECTION_STRING"],
                                                  table_name=f"{world.prefix}tickets") as table:
        return [dict(e) async for e in table.list_entities()]


async def test_an_unreachable_customer_in_autotask_one_ticket_a_person_completes_it_a_new_one_then_closed(
    api: Api, world: World, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    c = world.seed_customer("Bäckerei Müller", 100, consent=False, owned=False)
    secret, code = configure(world, monkeypatch, c.tenant_id)
    await api.put(c)
    await run_passes(3)
    [first] = autotask(world)["tickets"]
    assert "unreachable" in first["title"] and "Bäckerei Müller" in first["title"]
    assert (first["companyID"], first["queueID"], first["priority"], first["status"]) == (COMPANY_ID, 8, 1, 1)

    [row] = (await api.call("tickets")).body["tickets"]
    assert (row["customer"], row["condition"], row["state"], row["number"]) == (
        "Bäckerei Müller", "unreachable", "open", first["ticketNumber"])
    assert row["url"].endswith(f"ExecuteCommand.aspx?Code=OpenTicketDetail&TicketID={first['id']}")
    [target] = (await api.call("status")).body["targets"]
    assert target["tickets"] == [{"condition": "unreachable", "number": first["ticketNumber"], "url": row["url"]}]

    # The next UTC day: one note, however many passes.
    later(monkeypatch, 25)
    await run_passes(2)
    assert [n["ticketID"] for n in autotask(world)["notes"]] == [first["id"]]

    # A person completes the ticket in Autotask while the customer is still unreachable: the next day's note is not
    # written into it, and a new ticket follows.
    world.sb.control.autotask_person_updates(first["id"], {"status": 5})
    later(monkeypatch, 49)
    await run_passes(3)
    tickets = autotask(world)["tickets"]
    assert len(tickets) == 2 and [n["ticketID"] for n in autotask(world)["notes"]] == [first["id"]]
    second = next(t for t in tickets if t["id"] != first["id"])
    assert second["status"] == 1 and second["companyID"] == COMPANY_ID
    [row] = (await api.call("tickets")).body["tickets"]
    assert row["number"] == second["ticketNumber"]

    # The customer consents again: the next pass closes the open ticket, once, with a resolving note.
    world.sb.control.seed({"tenants": [{"id": c.tenant_id, "grants": [{"appId": "msp-app", "roles": [ROTATOR_ROLE]}],
                                        "applications": [{"appId": c.app_id, "owners": ["msp-app"]}]}]})
    await run_passes(3)
    state = autotask(world)
    assert [t["status"] for t in sorted(state["tickets"], key=lambda t: t["id"])] == [5, 5]
    resolving = [n for n in state["notes"] if n["ticketID"] == second["id"]]
    assert len(resolving) == 1 and "Resolved" in resolving[0]["description"]
    assert (await api.call("tickets")).body["tickets"] == []
    steps = [e["outcome"] for e in (await api.call("details", "GET", ids(c))).body["events"] if e["step"] == "ticket"]
    assert steps.count("opened") == 2 and steps.count("closed") == 1

    rows = json.dumps(await ticket_rows(world), default=str)
    for credential in (secret, code):
        assert credential not in caplog.text and credential not in rows
