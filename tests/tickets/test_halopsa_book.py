"""End to end with HaloPSA: the real alert book and ticket book (Azurite) driving the real HaloPSA desk over HTTPS
against the sandbox's HaloPSA stand-in: one Halo ticket per customer and condition across passes and restarts, a
note a day, a Halo outage and a crash after Halo's create with nothing lost or duplicated, closed when it clears."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.alerts import AlertBook
from shared.ports import Alert, Event
from shared.tickets.book import RETRY_AFTER, TicketBook, ticket_key
from shared.tickets.halopsa import HaloDesk, build, tag
from shared.tickets.routing import parse_routing
from tests.tickets.conftest import Tables

pytestmark = pytest.mark.sandbox

T, A = "8b6f3f7e-2b1a-4c55-9d8e-1f2a3b4c5d6e", "0d1e2f3a-4b5c-6d7e-8f90-a1b2c3d4e5f6"
T2, A2 = "5a1c2d3e-0000-4000-8000-00000000000b", "6b2c3d4e-0000-4000-8000-00000000000c"
UNREACHABLE = Alert("unreachable", T, A, "the tenant answered AADSTS700016", "Société Générale \u2013 Zürich", {})
NOT_OWNER = Alert("not-owner", T2, A2, "the rotator is not an owner of the app", "Fabrikam", {})
SECRET = "halo-e2e-secret"  # the stand-in's seeded application secret


@dataclass
class Clock:
    at: datetime = datetime(2026, 12, 6, 6, 0, tzinfo=UTC)

    def now(self) -> datetime:
        return self.at


@pytest.fixture
def halo(sb: Any) -> Any:
    sb.control.seed({"psa_halopsa": {
        "applications": [{"client_id": "rotator", "client_secret": SECRET, "scopes": "edit:tickets read:tickets"}],
        "clients": [{"id": 12, "name": "Fabrikam"}, {"id": 31, "name": "Société Générale"}],
        "teams": [{"id": 1, "name": "Service Desk"}, {"id": 5, "name": "Security"}],
    }})
    return sb


def process(tables: Tables, clock: Clock, halo: Any) -> AlertBook:
    """A new process: its books over the same tables, its own HaloPSA desk (no token kept)."""
    routes = parse_routing('{"default": {"board": "Security", "priority": "High", "closedStatus": "Closed"}, '
                            f'"companies": {{"{T}": "31", "{T2}": "12"}}}}')
    alerts = AlertBook(tables.alerts, clock)
    desk = build({"url": halo.endpoints["psa_halopsa"], "client_id": "rotator", "client_secret": SECRET},
                 ca_bundle=halo.ca_file)

    async def made() -> HaloDesk:
        return desk

    async def audit(event: Event) -> None:
        pass

    tickets = TicketBook(tables.tickets, clock, routes, made, kind="halopsa", open_rows=alerts.open_rows, audit=audit)
    alerts.followers.append(tickets.reconcile)
    return alerts


async def run_pass(alerts: AlertBook, holding: Sequence[Alert]) -> None:
    for alert in holding:
        await alerts.raise_alert(alert)
    for tenant, app in ((T, A), (T2, A2)):
        held = frozenset((a.condition, "") for a in holding if (a.tenant_id, a.app_id) == (tenant, app))
        await alerts.settle(tenant, app, held)
    await alerts.redeliver()


def halo_tickets(halo: Any) -> list[dict[str, Any]]:
    tickets: list[dict[str, Any]] = halo.control.state()["psa_halopsa"]["tickets"]
    return tickets


def halo_actions(halo: Any) -> list[dict[str, Any]]:
    actions: list[dict[str, Any]] = halo.control.state()["psa_halopsa"]["actions"]
    return actions


async def test_halo_tickets_follow_the_alert_book(tables: Tables, halo: Any) -> None:
    clock = Clock()
    for _ in range(3):  # three processes, a pass each, the same day
        await run_pass(process(tables, clock, halo), [UNREACHABLE, NOT_OWNER])
    tickets = {t["client_id"]: t for t in halo_tickets(halo)}
    assert sorted(tickets) == [12, 31]
    assert tickets[31]["summary"].endswith(f"({tag(ticket_key(T, 'unreachable'))})")
    assert "Société Générale \u2013 Zürich" in tickets[31]["summary"] and tickets[31]["team"] == "Security"
    assert tickets[12]["priority_id"] == 2 and halo_actions(halo) == []

    # A day of Halo outage: nothing opens twice, nothing is lost; the day's note arrives once it is back.
    clock.at += timedelta(days=1)
    halo.control.add_fault("psa_halopsa", status=503, count=None)
    for _ in range(2):
        await run_pass(process(tables, clock, halo), [UNREACHABLE, NOT_OWNER])
    halo.control.clear_faults()
    for _ in range(2):
        await run_pass(process(tables, clock, halo), [UNREACHABLE, NOT_OWNER])
    assert len(halo_tickets(halo)) == 2
    assert sorted(a["ticket_id"] for a in halo_actions(halo)) == sorted(t["id"] for t in halo_tickets(halo))

    # Fabrikam's condition clears; Halo's create of a new condition is cut after the fact (a crash in between).
    clock.at += timedelta(hours=1)
    halo.control.add_fault("psa_halopsa", method="POST", path="^/api/Tickets$", when="after", drop=True)
    comeback = Alert("expired", T2, A2, "the sync secret expired", "Fabrikam", {})
    await run_pass(process(tables, clock, halo), [UNREACHABLE, comeback])
    assert halo.control.faults() == [] and len(halo_tickets(halo)) == 3  # made in Halo, the answer lost
    for _ in range(2):
        clock.at += RETRY_AFTER + timedelta(seconds=1)  # the cut claim is taken up again
        await run_pass(process(tables, clock, halo), [UNREACHABLE, comeback])
    assert len(halo_tickets(halo)) == 3  # found again by its reference, not made twice
    made = next(t for t in halo_tickets(halo) if tag(ticket_key(T2, "expired")) in t["summary"])
    row = await tables.tickets.get_entity(T2, "expired")
    assert (row["State"], row["Number"]) == ("open", str(made["id"]))
    closed = [t for t in halo_tickets(halo) if t["hasbeenclosed"]]
    assert [t["client_id"] for t in closed] == [12] and closed[0]["status_id"] == 9  # not-owner cleared

    # Everything clears: every Halo ticket is closed, none reopened or duplicated by further passes.
    for _ in range(2):
        await run_pass(process(tables, clock, halo), [])
    assert all(t["hasbeenclosed"] and t["status_id"] == 9 for t in halo_tickets(halo))
    assert len(halo_tickets(halo)) == 3
