"""The ticket lifecycle on real Tables (Azurite), driven by the real alert book, against a fake PSA (tests/fakes.py
FakeDesk): one ticket per customer and condition across many passes and restarts, a note on each new day it holds,
closed on resolution with the routed status, a new ticket naming the previous one when it comes back, an outage and
a crash between the PSA's create and our record with nothing lost or duplicated, routing that excludes a condition."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.alerts import AlertBook
from shared.ports import Alert, Event
from shared.tickets.book import RETRY_AFTER, TicketBook, ticket_key
from shared.tickets.port import TicketError
from shared.tickets.routing import Routing, parse_routing
from tests.fakes import Crash, FakeDesk
from tests.tickets.conftest import Tables

T, A = "8b6f3f7e-2b1a-4c55-9d8e-1f2a3b4c5d6e", "0d1e2f3a-4b5c-6d7e-8f90-a1b2c3d4e5f6"
T2, A2 = "5a1c2d3e-0000-4000-8000-00000000000b", "6b2c3d4e-0000-4000-8000-00000000000c"
UNREACHABLE = Alert("unreachable", T, A, "the tenant answered AADSTS700016", "Woodgrove", {})
NOT_OWNER = Alert("not-owner", T2, A2, "the rotator is not an owner of the app", "Fabrikam", {})
ROUTING = parse_routing('{"default": {"board": "Security", "closedStatus": "Completed"}}')


@dataclass
class Clock:
    at: datetime = datetime(2026, 12, 6, 6, 0, tzinfo=UTC)

    def now(self) -> datetime:
        return self.at

    def next_day(self) -> None:
        self.at += timedelta(days=1)


def process(tables: Tables, clock: Clock, desk: FakeDesk, routing: Routing = ROUTING) -> tuple[AlertBook, TicketBook]:
    """A new process's books over the same tables (a restart: nothing kept in memory)."""
    alerts = AlertBook(tables.alerts, clock)

    async def build() -> FakeDesk:
        return desk

    async def audit(event: Event) -> None:
        tables.audit.append(event)

    book = TicketBook(tables.tickets, clock, routing, build, kind="fake", open_rows=alerts.open_rows, audit=audit,
                      tell=alerts.raise_alert)
    alerts.followers.append(book.reconcile)
    return alerts, book


async def run_pass(alerts: AlertBook, holding: Sequence[Alert]) -> None:
    """What a pass does with the alert book: raise what holds, settle every target, then redeliver (the followers)."""
    for alert in holding:
        await alerts.raise_alert(alert)
    for tenant, app in ((T, A), (T2, A2)):
        held = frozenset((a.condition, a.details.get("destination", "")) for a in holding
                         if (a.tenant_id, a.app_id) == (tenant, app))
        await alerts.settle(tenant, app, held)
    await alerts.redeliver()


async def rows(tables: Tables) -> list[dict[str, Any]]:
    return [dict(e) async for e in tables.tickets.list_entities()]


async def test_one_ticket_across_passes_and_restarts_a_note_each_new_day_closed_when_it_clears(tables: Tables) -> None:
    clock, desk = Clock(), FakeDesk()
    key = ticket_key(T, "unreachable")
    for _ in range(4):  # four processes, each a pass, the same day
        alerts, _book = process(tables, clock, desk)
        await run_pass(alerts, [UNREACHABLE])
    [ticket] = desk.of(key)
    assert not ticket.closed and ticket.notes == [] and ticket.route.board == "Security"
    assert "Woodgrove" in ticket.title and "unreachable" in ticket.title and "AADSTS700016" in ticket.body

    for day in range(2):  # two more days, three passes each: one note a day
        clock.next_day()
        for _ in range(3):
            alerts, _book = process(tables, clock, desk)
            await run_pass(alerts, [UNREACHABLE])
        assert len(ticket.notes) == day + 1 and clock.at.date().isoformat() in ticket.notes[-1]
    assert desk.of(key) == [ticket]

    clock.at += timedelta(hours=2)
    alerts, book = process(tables, clock, desk)
    await run_pass(alerts, [])  # fixed: the alert book resolves it, the ticket book closes the ticket
    assert ticket.closed and ticket.status == "Completed" and "Resolved" in ticket.notes[-1]
    assert await book.open_tickets() == []
    for _ in range(3):
        await run_pass(process(tables, clock, desk)[0], [])
    assert len(ticket.notes) == 3 and desk.of(key) == [ticket]
    steps = [(e.outcome, e.tenant_id, e.app_id) for e in tables.audit]
    assert steps == [("opened", T, A), ("noted", T, A), ("noted", T, A), ("closed", T, A)]
    assert all(f"ticket {ticket.id}" in e.detail or f"T{ticket.id}" in e.detail for e in tables.audit)


async def test_a_condition_that_comes_back_gets_a_new_ticket_naming_the_closed_one(tables: Tables) -> None:
    clock, desk = Clock(), FakeDesk()
    alerts, book = process(tables, clock, desk)
    await run_pass(alerts, [UNREACHABLE])
    await run_pass(alerts, [])
    clock.next_day()
    await run_pass(alerts, [UNREACHABLE])
    first, second = desk.of(ticket_key(T, "unreachable"))
    assert first.closed and not second.closed
    assert f"previous ticket was T{first.id}" in second.body
    [row] = await book.open_tickets()
    assert row.document()["number"] == f"T{second.id}" and row.document()["previous"] == f"T{first.id}"


@pytest.mark.parametrize("outage", [1, 3, 7])
async def test_an_outage_then_recovery_loses_nothing_and_duplicates_nothing(tables: Tables, outage: int) -> None:
    clock, desk = Clock(), FakeDesk()
    desk.down(outage)
    passes = 0
    while desk.refused_while_down < outage:
        alerts, _ = process(tables, clock, desk)
        await run_pass(alerts, [UNREACHABLE, NOT_OWNER])
        passes += 1
        assert passes < 20
    # Each pass calls a desk that is down at most once per condition (it stops at the first refusal).
    assert passes >= outage / 2
    await run_pass(process(tables, clock, desk)[0], [UNREACHABLE, NOT_OWNER])  # the first pass after the recovery
    assert len(desk.open_for(ticket_key(T, "unreachable"))) == 1
    assert len(desk.open_for(ticket_key(T2, "not-owner"))) == 1
    # Down again while both clear: both are closed once it answers, each once.
    desk.down(outage)
    for _ in range(outage + 2):
        await run_pass(process(tables, clock, desk)[0], [])
    assert [t.closed for t in desk.tickets.values()] == [True, True]
    assert all(sum("Resolved" in n for n in t.notes) == 1 for t in desk.tickets.values())


async def test_a_crash_between_the_psas_create_and_our_record_makes_no_second_ticket(tables: Tables) -> None:
    clock, desk = Clock(), FakeDesk()
    desk.faults.crash("desk.open", when="after")
    alerts, _ = process(tables, clock, desk)
    with pytest.raises(Crash):
        await run_pass(alerts, [UNREACHABLE])
    desk.faults.revive()
    [made] = desk.tickets.values()
    [row] = await rows(tables)
    assert row["State"] == "opening" and row["Number"] == ""

    # Another runner within the claim's window leaves it alone; after it, the desk's find_open finds the ticket.
    await run_pass(process(tables, clock, desk)[0], [UNREACHABLE])
    assert desk.faults.counts["desk.find_open"] == 1  # the first pass's, before its open
    clock.at += RETRY_AFTER + timedelta(seconds=1)
    alerts, book = process(tables, clock, desk)
    await run_pass(alerts, [UNREACHABLE])
    assert list(desk.tickets.values()) == [made] and desk.faults.counts["desk.open"] == 1
    [ticket] = await book.open_tickets()
    assert ticket.document()["number"] == f"T{made.id}" and ticket.document()["state"] == "open"


async def test_a_crash_while_opening_then_the_condition_clears_closes_the_ticket_made(tables: Tables) -> None:
    clock, desk = Clock(), FakeDesk()
    desk.faults.crash("desk.open", when="after")
    with pytest.raises(Crash):
        await run_pass(process(tables, clock, desk)[0], [UNREACHABLE])
    desk.faults.revive()
    clock.at += RETRY_AFTER + timedelta(seconds=1)
    await run_pass(process(tables, clock, desk)[0], [])
    [made] = desk.tickets.values()
    assert made.closed
    [row] = await rows(tables)
    assert row["State"] == "closed" and row["Number"] == f"T{made.id}"


async def test_concurrent_runners_open_one_ticket(tables: Tables) -> None:
    clock, desk = Clock(), FakeDesk()
    await process(tables, clock, desk)[0].raise_alert(UNREACHABLE)
    books = [process(tables, clock, desk)[1] for _ in range(4)]
    await asyncio.gather(*(b.reconcile() for b in books))
    assert len(desk.of(ticket_key(T, "unreachable"))) == 1


async def test_routing_excludes_a_condition_and_routes_another(tables: Tables) -> None:
    clock, desk = Clock(), FakeDesk()
    routing = parse_routing('{"default": {"board": "Security"}, "conditions": {"unreachable": false, '
                            '"not-owner": {"priority": "High", "board": "Onboarding"}}, '
                            f'"companies": {{"{T2}": "Fabrikam Inc"}}}}')
    for _ in range(2):
        await run_pass(process(tables, clock, desk, routing)[0], [UNREACHABLE, NOT_OWNER])
    assert desk.of(ticket_key(T, "unreachable")) == []
    [ticket] = desk.of(ticket_key(T2, "not-owner"))
    assert (ticket.route.board, ticket.route.priority, ticket.route.company) == ("Onboarding", "High", "Fabrikam Inc")
    # One-off notices never get a ticket: nothing would close it.
    await run_pass(process(tables, clock, desk, routing)[0], [Alert("poison-message", T2, A2, "bad message", "F", {})])
    assert [t.key for t in desk.tickets.values()] == [ticket_key(T2, "not-owner")]


async def test_a_refusal_that_needs_a_person_is_kept_on_the_row_and_others_go_on(tables: Tables) -> None:
    clock, desk = Clock(), FakeDesk()
    desk.faults.add("desk.open", lambda: TicketError("board 'Nope' does not exist", code="TicketRouteUnknown"))
    alerts, book = process(tables, clock, desk)
    await run_pass(alerts, [UNREACHABLE, NOT_OWNER])
    documents = {t.document()["condition"]: t.document() for t in await book.open_tickets()}
    assert {d["errorCode"] for d in documents.values()} == {"TicketRouteUnknown", None}
    assert len(desk.tickets) == 1
    # People hear of it (e-mail, the channel) as the one-off notice ticket-refused, naming the customer and the code;
    # it never becomes a ticket itself.
    [refused] = [d for d in documents.values() if d["errorCode"]]
    [told] = [r for r in await alerts.open_rows() or [] if r["Condition"] == "ticket-refused"]
    assert (told["TenantId"], [told["AppId"]]) == (refused["tenantId"], refused["appIds"])
    assert "TicketRouteUnknown" in told["Message"] and refused["condition"] in told["Message"]
    await run_pass(alerts, [UNREACHABLE, NOT_OWNER])  # the fault was once: the next pass opens it
    assert len(desk.tickets) == 2 and all(d.document()["errorCode"] is None for d in await book.open_tickets())
    assert not [t for t in desk.tickets.values() if "ticket-refused" in t.key]


async def test_a_credentials_staged_warnings_are_one_ticket_noted_at_each_threshold(tables: Tables) -> None:
    clock, desk = Clock(), FakeDesk()
    alerts, book = process(tables, clock, desk)

    def warning(days: int) -> Alert:
        return Alert(f"expiring-{days}d", T, A, f"client secret abc of 'Payroll' expires in {days} days", "Woodgrove",
                     {"destination": "app:k1", "display_name": "Payroll", "threshold": str(days)})

    await alerts.raise_alert(warning(30))
    await alerts.settle_stages(T, A, frozenset({("expiring-30d", "app:k1")}))
    await alerts.redeliver()
    clock.next_day()
    await alerts.raise_alert(warning(14))
    await alerts.settle_stages(T, A, frozenset({("expiring-14d", "app:k1")}))
    await alerts.redeliver()
    [ticket] = desk.tickets.values()
    assert "Payroll" in ticket.title and len(ticket.notes) == 1 and "14 days" in ticket.notes[0]
    await alerts.settle_stages(T, A, frozenset())  # renewed
    await alerts.redeliver()
    assert ticket.closed and await book.open_tickets() == []


async def test_an_unreadable_alert_book_closes_nothing(tables: Tables) -> None:
    clock, desk = Clock(), FakeDesk()
    alerts, book = process(tables, clock, desk)
    await run_pass(alerts, [UNREACHABLE])

    async def unreadable() -> None:
        return None

    blind = TicketBook(tables.tickets, clock, ROUTING, book.desk_factory, kind="fake", open_rows=unreadable)
    assert (await blind.reconcile())["skipped"] == 1
    assert [t.closed for t in desk.tickets.values()] == [False]


@pytest.mark.parametrize("call", ["desk.find_open", "desk.open", "desk.add_note", "desk.close"])
@pytest.mark.parametrize("when", ["before", "after"])
async def test_a_crash_at_any_desk_call_loses_and_duplicates_no_ticket(tables: Tables, call: str, when: str) -> None:
    """Opened, noted the next day, cleared, back two days later: whichever call the process dies at (before the PSA
    did it, or after it did and before we recorded it), restarted processes end with the same two tickets."""
    clock, desk = Clock(), FakeDesk()
    desk.faults.crash(call, when=when)
    crashed = 0

    async def stage(holding: list[Alert]) -> None:
        nonlocal crashed
        for _ in range(3):
            try:
                await run_pass(process(tables, clock, desk)[0], holding)
                break
            except Crash:
                crashed += 1
                desk.faults.revive()
                clock.at += RETRY_AFTER + timedelta(seconds=1)  # the restarted process takes the cut claim up
        await run_pass(process(tables, clock, desk)[0], holding)

    await stage([UNREACHABLE])
    clock.next_day()
    await stage([UNREACHABLE])
    clock.at += timedelta(hours=2)
    await stage([])
    clock.next_day()
    clock.next_day()
    await stage([UNREACHABLE])
    assert crashed == 1
    first, second = desk.of(ticket_key(T, "unreachable"))
    assert first.closed and not second.closed and f"T{first.id}" in second.body
    # A note (or the resolving note) the PSA took just before the crash may be repeated: it cannot be asked whether
    # it holds it. Never missing, and never a second ticket.
    assert sum("Resolved" in n for n in first.notes) == (2 if (call, when) == ("desk.close", "after") else 1)
    daily = [n for n in first.notes if "Still holds" in n]
    assert len(daily) == (2 if (call, when) == ("desk.add_note", "after") else 1)
    [row] = await rows(tables)
    assert (row["State"], row["Number"], row["Previous"]) == ("open", f"T{second.id}", f"T{first.id}")


async def test_closed_rows_are_forgotten_after_a_month(tables: Tables) -> None:
    clock, desk = Clock(), FakeDesk()
    await run_pass(process(tables, clock, desk)[0], [UNREACHABLE])
    await run_pass(process(tables, clock, desk)[0], [])
    assert len(await rows(tables)) == 1
    clock.at += timedelta(days=31)
    await run_pass(process(tables, clock, desk)[0], [])
    assert await rows(tables) == []


async def test_a_condition_of_a_target_no_longer_checked_is_closed_as_such(tables: Tables) -> None:
    """Offboarded or disabled, a target is no longer advanced: its open condition is never told again nor resolved.
    Two UTC days later its ticket is closed, saying why; a staged warning (told once, not daily) is kept."""
    clock, desk = Clock(), FakeDesk()
    alerts, book = process(tables, clock, desk)
    expiring = Alert("expiring-30d", T, A, "client secret of 'Payroll' expires in 30 days", "Woodgrove",
                     {"destination": "app:k1", "display_name": "Payroll"})
    await alerts.raise_alert(expiring)
    await run_pass(alerts, [UNREACHABLE])
    for _ in range(2):
        clock.next_day()
        await alerts.redeliver()  # passes that no longer advance the target: nothing tells or settles it
    assert [t.closed for t in desk.tickets.values()] == [False, False]
    clock.next_day()
    await alerts.redeliver()
    [unreachable] = desk.of(ticket_key(T, "unreachable"))
    assert unreachable.closed and "no longer checks unreachable" in unreachable.notes[-1]
    assert [t.get("Condition") for t in await book.open_tickets()] == ["expiring:app:k1"]


async def test_a_pass_steps_at_most_its_share_and_the_next_pass_goes_on(
    tables: Tables, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first pass over many conditions (or a PSA back after a long outage) is spread over passes; tickets already
    open and noted never take a pass's share."""
    from shared.tickets import book as ticket_book

    monkeypatch.setattr(ticket_book, "MAX_STEPS_PER_PASS", 2)
    clock, desk = Clock(), FakeDesk()
    tenants = [f"{n:08x}-0000-4000-8000-000000000001" for n in range(5)]
    holding = [Alert("unreachable", t, A, "gone", f"Customer {n}", {}) for n, t in enumerate(tenants)]
    alerts, _ = process(tables, clock, desk)
    for _ in range(2):
        for alert in holding:
            await alerts.raise_alert(alert)
        await alerts.redeliver()
    assert len(desk.tickets) == 4
    await alerts.redeliver()
    assert sorted(t.key for t in desk.tickets.values()) == sorted(ticket_key(t, "unreachable") for t in tenants)


async def test_a_daily_note_carries_the_days_fresh_approval_links(tables: Tables) -> None:
    """An approval request's signed links expire after 7 days (shared/approval_links.py): the alert told each day
    carries fresh ones, and so does the ticket's note of that day, or the ticket would hold only dead links."""
    clock, desk = Clock(), FakeDesk()

    def asked(day: int) -> Alert:
        links = {f"{a}Link": f"https://rotator.example/api/approval-links?link=a1.day{day}{a}"
                 for a in ("approve", "postpone", "reject")}
        return Alert("approval-requested", T, A, "a rotation waits for approval", "Woodgrove",
                     {"requestId": "f" * 32, **links})

    await run_pass(process(tables, clock, desk)[0], [asked(0)])
    [ticket] = desk.of(ticket_key(T, "approval-requested"))
    assert "link=a1.day0approve" in ticket.body
    for day in (1, 8):
        clock.at += timedelta(days=1 if day == 1 else 7)
        await run_pass(process(tables, clock, desk)[0], [asked(day)])
        assert all(f"link=a1.day{day}{a}" in ticket.notes[-1] for a in ("approve", "postpone", "reject")), \
            ticket.notes[-1]
