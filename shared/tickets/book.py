"""The ticket book: the alert book's open conditions converged into PSA tickets, one per customer and condition.

The alert book decides (shared/alerts/book.py): when a condition opens, is told again on a new UTC day, and clears.
The ticket book follows its rows and never decides anything itself. After each pass (`AlertBook.redeliver`) it
reads the alert book's open rows and its own rows (the `tickets` table: partition the customer's tenant, row the
condition) and converges each pair:

| alert book says | ticket row | step |
| --- | --- | --- |
| holds | none, or closed | claim `opening`, then the desk's find_open (a ticket made before a crash), else open |
| holds | opening (claim run out) | find_open, else open: a crash after the PSA's create makes no second ticket |
| holds, told on a new day | open | a note with that day's messages (once per UTC day, as the alert book tells) |
| cleared | open or closing | claim `closing`, a resolving note and the ticket closed (the route's closed status) |
| cleared | opening | find_open; a ticket found is closed, else the row is closed with no ticket |

Every write is ETag-guarded and every side effect is preceded by a claim (`Attempt`), so of two runners one acts,
and a claim cut by a crash is taken up again after RETRY_AFTER. The desk never retries: a retryable refusal (the PSA
down, throttling) leaves the row as it was for the next pass and stops this pass's calls to the desk, so a PSA that
is down costs each pass one call and never blocks a rotation; a refusal that needs a person (bad credentials, an
unknown board) is kept on the row (`ErrorCode`, GET /api/tickets shows it) and logged. A condition that clears and
comes back later gets a new ticket naming the previous one: a closed ticket stays closed (see docs/tickets.md).
The staged expiry warnings get one ticket per credential (condition `expiring:<credential>`), noted at each tighter
threshold and closed when the credential is renewed or removed. A note (or a close's resolving note) may be repeated
after a crash between the PSA's answer and our record (the PSA cannot be asked whether it holds it); a ticket never
is.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, NoReturn

from azure.core import MatchConditions
from azure.core.exceptions import AzureError, ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables.aio import TableClient

from shared.alerts.book import create_table, merge_row
from shared.conditions import TICKET_REFUSED, staged
from shared.domain import GUID
from shared.ports import Alert, Clock, Event
from shared.tickets.port import TicketDesk, TicketDraft, TicketError, TicketRef, TicketRoute
from shared.tickets.routing import EXPIRING, Routing

log = logging.getLogger(__name__)
# A claim older than this was cut (a crash, a lost worker): the next pass takes it up (a PSA call is far shorter).
RETRY_AFTER = timedelta(seconds=120)
_CONFLICT = (ResourceExistsError, ResourceModifiedError, ResourceNotFoundError)
ACTOR = "tickets"  # who the audit trail names for the ticket book's steps
# PSA calls one pass makes at most: a first pass over a large fleet (or a PSA back after a long outage) is spread
# over the next passes instead of holding this one for minutes; what is left is done by the next pass.
MAX_STEPS_PER_PASS = 200
# A condition not told again for this many UTC days is of a target no longer checked: its ticket is closed.
UNWATCHED_DAYS = 2
# A closed row is kept this long (for the previous ticket's number should the condition come back), then forgotten.
KEEP_CLOSED = timedelta(days=30)


class State:
    """A ticket row's state (str values as stored)."""

    OPENING = "opening"  # claimed: a ticket is being opened (or was, and the record was cut)
    OPEN = "open"
    CLOSING = "closing"  # claimed: the ticket is being closed
    CLOSED = "closed"


def ticket_key(tenant_id: str, condition: str) -> str:
    """The dedupe key of one customer's condition: stable across passes, restarts and tickets (a desk writes it, or
    a short hash of it, into the ticket and finds the open one by it)."""
    return f"ssr:{tenant_id.lower()}/{condition}"


def _safe(part: str) -> str:
    """A Tables key part: no character Tables refuses in keys."""
    return "".join("-" if c in "/\\#?" or ord(c) < 32 else c for c in part)


@dataclass(frozen=True)
class Holding:
    """One condition of one customer as the alert book holds it open: its rows merged (several apps, destinations
    or, for one credential, several thresholds)."""

    tenant_id: str
    condition: str  # the ticket's condition: the alert condition, or `expiring:<credential>` for staged warnings
    customer: str
    rows: tuple[Mapping[str, Any], ...]

    @property
    def alert_condition(self) -> str:
        """The condition routing knows (the tightest threshold for a credential's warnings)."""
        return str(self.latest["Condition"])

    @property
    def day(self) -> str:
        """The last UTC day the alert book told this condition."""
        return max(str(r.get("Day", "")) for r in self.rows)

    @property
    def latest(self) -> Mapping[str, Any]:
        return max(self.rows, key=lambda r: (str(r.get("Day", "")), str(r.get("OpenedAt", ""))))

    @property
    def app_ids(self) -> list[str]:
        return sorted({str(r.get("AppId", "")) for r in self.rows if r.get("AppId")})

    def lines(self, day: str = "") -> list[str]:
        """One line per row (told on `day` when given): its condition, destination and message."""
        out = []
        for r in sorted(self.rows, key=lambda r: (str(r.get("Condition")), str(r.get("Destination", "")))):
            if day and r.get("Day") != day:
                continue
            where = f" ({r['Destination']})" if r.get("Destination") and not staged(str(r["Condition"])) else ""
            out.append(f"- {r['Condition']}{where}: {r.get('Message', '')}")
        return out


def holdings(rows: Iterable[Mapping[str, Any]], today: str = "") -> dict[tuple[str, str], Holding]:
    """The alert book's open rows grouped by customer and ticket condition (rows of no customer tenant left out).

    With `today` (a UTC date), a condition last told more than UNWATCHED_DAYS before it is left out: one that holds
    is told again every day while its target is checked, so such a row is of a target no longer checked (disabled,
    offboarded, removed), which nothing will ever resolve; the e-mail rule lets it go after two days too. A staged
    warning is told once, not daily: it is kept until the warnings pass settles it."""
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    oldest = (date.fromisoformat(today) - timedelta(days=UNWATCHED_DAYS)).isoformat() if today else ""
    for row in rows:
        tenant, condition = str(row.get("TenantId", "")).lower(), str(row.get("Condition", ""))
        if not GUID.fullmatch(tenant) or not condition or row.get("ResolvedAt"):
            continue  # a condition of no customer tenant (the rotator's own) is no customer's ticket
        if oldest and not staged(condition) and str(row.get("Day", "")) < oldest:
            continue
        if staged(condition):
            condition = f"{EXPIRING}:{row.get('Destination', '')}"
        groups.setdefault((tenant, condition), []).append(row)
    return {k: Holding(k[0], k[1], next((str(r.get("Customer")) for r in v if r.get("Customer")), ""), tuple(v))
            for k, v in groups.items()}


# Reads the alert book's open rows (None when it cannot be read: nothing is closed then).
OpenRows = Callable[[], Awaitable[Sequence[Mapping[str, Any]] | None]]
# Builds the configured desk (its configuration read from Key Vault); TicketError(TicketConfigInvalid) otherwise.
DeskFactory = Callable[[], Awaitable[TicketDesk]]
# Appends one audit event (StateStore.record).
Audit = Callable[[Event], Awaitable[None]]
# Tells people (the alert book's raise_alert): a refusal a person must fix is `ticket-refused`.
Tell = Callable[[Alert], Awaitable[None]]


@dataclass(frozen=True)
class Ticket:
    """One ticket row, as read."""

    entity: Mapping[str, Any]
    etag: str

    def get(self, name: str, default: Any = "") -> Any:
        return self.entity.get(name, default)

    @property
    def state(self) -> str:
        return str(self.entity.get("State", State.CLOSED))

    @property
    def ref(self) -> TicketRef:
        return TicketRef(str(self.get("TicketId")), str(self.get("Number")), str(self.get("Url")))

    def document(self) -> dict[str, Any]:
        """The row as GET /api/tickets answers it."""
        e = self.entity
        return {"tenantId": e.get("TenantId", ""), "customer": e.get("Customer", ""),
                "condition": e.get("Condition", ""), "appIds": [a for a in str(e.get("AppIds", "")).split(",") if a],
                "state": self.state, "number": e.get("Number", "") or None, "url": e.get("Url", "") or None,
                "opened": e.get("OpenedAt", "") or None, "lastNote": e.get("LastNoteAt", "") or None,
                "errorCode": e.get("ErrorCode", "") or None, "error": e.get("Error", "") or None,
                "previous": e.get("Previous", "") or None}


class _Stop(Exception):
    """The desk is unavailable for the rest of this pass (down, throttling, or refusing every call)."""


class TicketBook:
    """The ticket rows in Tables and the convergence of the alert book's open conditions into them."""

    def __init__(self, table: TableClient, clock: Clock, routing: Routing, desk: DeskFactory, *, kind: str,
                 open_rows: OpenRows, audit: Audit | None = None, tell: Tell | None = None,
                 concurrency: int = 4) -> None:
        self._table = table
        self._clock = clock
        self.routing = routing
        self.desk_factory = desk
        self.kind = kind
        self._open_rows = open_rows
        self._audit = audit
        self._tell = tell
        self._concurrency = concurrency
        self._table_ready = False

    # ------------------------------------------------------------------ converge

    async def reconcile(self) -> dict[str, int]:
        """Converge every ticket to the alert book's open conditions; never raises. Answers how many tickets were
        opened, noted, closed and failed in this pass (and `skipped` when the books could not be read)."""
        counts = {"opened": 0, "noted": 0, "closed": 0, "failed": 0}
        try:
            rows = await self._open_rows()
            tickets = await self._tickets() if rows is not None else None
        except AzureError as error:
            rows = tickets = None
            log.warning("ticket book unreadable (%s)", type(error).__name__,
                        extra={"event": "ticket-book", "outcome": "unavailable"})
        if rows is None or tickets is None:
            return {**counts, "skipped": 1}  # an unreadable book is never read as "everything cleared"
        today = self._clock.now().astimezone(UTC).date().isoformat()
        held = holdings(rows, today)
        unwatched = set(holdings(rows)) - set(held)
        work: list[tuple[tuple[str, str], Holding | None, Ticket | None]] = []
        forget = self._clock.now().astimezone(UTC) - KEEP_CLOSED
        for key in sorted(set(held) | set(tickets)):
            ticket, holding = tickets.get(key), held.get(key)
            if holding is None and (ticket is None or ticket.state == State.CLOSED):
                if ticket is not None and str(ticket.get("ClosedAt")) < forget.isoformat():
                    await self._forget(ticket)
                continue
            if holding is not None and (ticket is None or ticket.state == State.CLOSED) and \
                    self.routing.route(holding.alert_condition, holding.tenant_id) is None:
                continue  # routed to no ticket: an open ticket of an excluded condition still runs its course
            if holding is not None and ticket is not None and ticket.state == State.OPEN and \
                    holding.day <= str(ticket.get("NoteDay")):
                continue  # open and noted for the latest day told: nothing to do (most rows, most passes)
            work.append((key, holding, ticket))
        if not work:
            return counts
        work = work[:MAX_STEPS_PER_PASS]
        try:
            desk = await self.desk_factory()
        except TicketError as error:
            self._failed("build", None, error)
            await self._tell_refused(None, "build", error)
            return {**counts, "failed": len(work)}
        stop = asyncio.Event()
        bound = asyncio.Semaphore(self._concurrency)

        async def one(holding: Holding | None, ticket: Ticket | None) -> None:
            async with bound:
                if stop.is_set():
                    return
                try:
                    done = await self._converge(desk, holding, ticket, unwatched)
                    if done:
                        counts[done] += 1
                except _Stop:
                    stop.set()
                    counts["failed"] += 1
                except TicketError:
                    counts["failed"] += 1
                except _CONFLICT:
                    pass  # another runner moved this row first: it converges it
                except (AzureError, KeyError, ValueError) as error:
                    counts["failed"] += 1
                    log.warning("ticket row not converged (%s)", type(error).__name__,
                                extra={"event": "ticket-book", "outcome": "failed"})

        await asyncio.gather(*(one(h, t) for _, h, t in work))
        log.info("tickets converged", extra={"event": "ticket-book", "outcome": "converged", "kind": self.kind,
                                             **counts})
        return counts

    async def _converge(self, desk: TicketDesk, holding: Holding | None, ticket: Ticket | None,
                        unwatched: Collection[tuple[str, str]] = ()) -> str:
        now = self._clock.now().astimezone(UTC)
        if ticket is not None and ticket.state in (State.OPENING, State.CLOSING) and not self._may_retry(ticket, now):
            return ""  # another runner is at it
        if holding is not None:
            if ticket is None or ticket.state == State.CLOSED:
                route = self.routing.route(holding.alert_condition, holding.tenant_id)
                assert route is not None  # filtered by reconcile
                claimed = await self._claim_opening(holding, ticket, now)
                return await self._open(desk, holding, claimed, route, now)
            if ticket.state == State.OPENING:
                route = self._route_of(holding)
                claimed = await self._update(ticket, {"Attempt": now.isoformat()})
                return await self._open(desk, holding, claimed, route, now)
            if ticket.state == State.OPEN:
                if holding.day > str(ticket.get("NoteDay")):
                    return await self._note(desk, holding, ticket, now)
                return ""
            # closing, and it holds again: finish the close; the next pass opens a new ticket
        assert ticket is not None
        key = (str(ticket.get("TenantId")).lower(), str(ticket.get("Condition")))
        return await self._close(desk, holding, ticket, now, unwatched=key in unwatched)

    def _route_of(self, holding: Holding) -> TicketRoute:
        return self.routing.route(holding.alert_condition, holding.tenant_id) or self.routing.default

    def _draft(self, tenant_id: str, condition: str, customer: str, holding: Holding | None, previous: str = "",
               route: TicketRoute | None = None) -> TicketDraft:
        who = customer or tenant_id
        if holding is None:
            title = f"Sync-secret rotator: {condition} ({who})"
            return TicketDraft(ticket_key(tenant_id, condition), customer, tenant_id, condition.split(":")[0], title,
                               "", route or self.routing.default)
        latest = holding.latest
        if condition.startswith(f"{EXPIRING}:"):
            details = _details(latest)
            name = details.get("display_name") or details.get("object_id") or "a credential"
            title = f"Sync-secret rotator: credential expiring: {name} ({who})"
        else:
            title = f"Sync-secret rotator: {condition} ({who})"
        body = [f"{condition} for {who} (tenant {tenant_id}).", "", *holding.lines()]
        details = _details(latest)
        if details:
            body += ["", *(f"{k}: {v}" for k, v in sorted(details.items()))]
        if holding.app_ids:
            body.append(f"Application: {', '.join(holding.app_ids)}")
        if previous:
            body += ["", f"This condition came back: the previous ticket was {previous} (closed)."]
        body += ["", "Opened by the sync-secret rotator: it adds a note each day the condition still holds and closes "
                 "this ticket when it clears.", f"Reference: {ticket_key(tenant_id, condition)}"]
        return TicketDraft(ticket_key(tenant_id, condition), customer, tenant_id, holding.alert_condition, title,
                           "\n".join(body), route or self._route_of(holding))

    async def _claim_opening(self, holding: Holding, ticket: Ticket | None, now: datetime) -> Ticket:
        fields = {"TenantId": holding.tenant_id, "Condition": holding.condition, "Customer": holding.customer,
                  "Key": ticket_key(holding.tenant_id, holding.condition), "AppIds": ",".join(holding.app_ids),
                  "Routed": holding.alert_condition,
                  "State": State.OPENING, "Attempt": now.isoformat(), "TicketId": "", "Number": "", "Url": "",
                  "OpenedAt": "", "LastNoteAt": "", "NoteDay": "", "ClosedAt": "", "ErrorCode": "", "Error": "",
                  "Previous": str(ticket.get("Number")) if ticket is not None and ticket.get("Number") else ""}
        if ticket is None:
            pk, rk = _safe(holding.tenant_id), _safe(holding.condition)
            answer = await self._table.create_entity({"PartitionKey": pk, "RowKey": rk, **fields})
            return Ticket({"PartitionKey": pk, "RowKey": rk, **fields}, str(answer["etag"]))
        return await self._update(ticket, fields)

    async def _open(self, desk: TicketDesk, holding: Holding, ticket: Ticket, route: TicketRoute, now: datetime
                    ) -> str:
        draft = self._draft(holding.tenant_id, holding.condition, holding.customer, holding,
                            str(ticket.get("Previous")), route)
        try:
            ref = await desk.find_open(draft)
            if ref is None:
                ref = await desk.open(draft)
        except TicketError as error:
            await self._refused(ticket, "open", error)
        await self._update(ticket, {"State": State.OPEN, "TicketId": ref.id, "Number": ref.number, "Url": ref.url,
                                    "OpenedAt": now.isoformat(), "NoteDay": holding.day, "Attempt": "",
                                    "AppIds": ",".join(holding.app_ids), "ErrorCode": "", "Error": ""})
        await self._record(ticket, holding.app_ids, "opened", f"{self.kind} ticket {ref.number or ref.id} opened "
                           f"for {holding.condition}", now)
        return "opened"

    async def _note(self, desk: TicketDesk, holding: Holding, ticket: Ticket, now: datetime) -> str:
        if not self._may_retry(ticket, now):
            return ""
        claimed = await self._update(ticket, {"Attempt": now.isoformat()})
        day = holding.day
        # The day's links (an approval request's signed links, which expire: shared/approval_links.py) go with its
        # note, so the ticket never holds only dead ones.
        told = [r for r in holding.rows if r.get("Day") == day]
        links = [f"{k}{' (' + str(r.get('AppId')) + ')' if len(told) > 1 else ''}: {v}"
                 for r in told for k, v in sorted(_details(r).items()) if k.endswith("Link")]
        text = "\n".join([f"Still holds on {day} (UTC):", *holding.lines(day), *(["", *links] if links else [])])
        try:
            await desk.add_note(claimed.ref, text)
        except TicketError as error:
            if error.code == "TicketNotFound":
                # Deleted in the PSA while the condition holds: the row is closed, the next pass opens a new one.
                await self._update(claimed, {"State": State.CLOSED, "ClosedAt": now.isoformat(), "Attempt": "",
                                             "ErrorCode": error.code, "Error": error.message[:500]})
                self._failed("note", claimed, error)
                return "failed"
            await self._refused(claimed, "note", error)
        await self._update(claimed, {"NoteDay": day, "LastNoteAt": now.isoformat(), "Attempt": "",
                                     "AppIds": ",".join(holding.app_ids), "ErrorCode": "", "Error": ""})
        await self._record(claimed, holding.app_ids, "noted", f"{self.kind} ticket {claimed.ref.number} noted: "
                           f"{holding.condition} still holds on {day}", now)
        return "noted"

    async def _close(self, desk: TicketDesk, holding: Holding | None, ticket: Ticket, now: datetime, *,
                     unwatched: bool = False) -> str:
        tenant, condition = str(ticket.get("TenantId")), str(ticket.get("Condition"))
        customer = str(ticket.get("Customer"))
        route = self.routing.route(str(ticket.get("Routed")), tenant) or self.routing.default
        claimed = await self._update(ticket, {"State": State.CLOSING if ticket.state != State.OPENING
                                              else State.OPENING, "Attempt": now.isoformat()})
        ref: TicketRef | None = claimed.ref if ticket.state != State.OPENING else None
        try:
            if ref is None:
                # Opening was cut and the condition cleared: a ticket made before the cut is found and closed.
                ref = await desk.find_open(self._draft(tenant, condition, customer, None, route=route))
            at = now.isoformat(timespec="minutes")
            text = (f"Closed: the rotator no longer checks {condition} for {customer or tenant} (not told since "
                    f"{ticket.get('NoteDay') or 'its opening'}: the customer's app was disabled, offboarded or "
                    f"removed). Closed by the sync-secret rotator ({at} UTC)." if unwatched else
                    f"Resolved: {condition} no longer holds for {customer or tenant} ({at} UTC). Closed by the "
                    "sync-secret rotator.")
            if ref is not None:
                await desk.close(ref, text, route)
        except TicketError as error:
            if error.code != "TicketNotFound":  # deleted in the PSA: nothing left to close
                await self._refused(claimed, "close", error)
        await self._update(claimed, {"State": State.CLOSED, "ClosedAt": now.isoformat(), "Attempt": "",
                                     "TicketId": ref.id if ref else "", "Number": ref.number if ref else "",
                                     "Url": ref.url if ref else "", "ErrorCode": "", "Error": ""})
        if ref is not None:
            apps = [a for a in str(ticket.get("AppIds")).split(",") if a]
            await self._record(claimed, apps, "closed", f"{self.kind} ticket {ref.number or ref.id} closed: "
                               f"{condition} cleared", now)
        return "closed"

    # ------------------------------------------------------------------ errors, audit

    async def _refused(self, ticket: Ticket, step: str, error: TicketError) -> NoReturn:
        """Keep the refusal on the row and give the claim back (the next pass retries); stop the pass when the desk
        is down or refuses everything. Always raises."""
        try:
            await self._update(ticket, {"Attempt": "", "ErrorCode": error.code, "Error": error.message[:500],
                                        "ErrorAt": self._clock.now().astimezone(UTC).isoformat()})
        except (*_CONFLICT, AzureError):
            pass
        self._failed(step, ticket, error)
        if not error.retryable:
            await self._tell_refused(ticket, step, error)
        if error.retryable or error.code in ("TicketAuthRefused", "TicketConfigInvalid"):
            raise _Stop from error
        raise error

    async def _tell_refused(self, ticket: Ticket | None, step: str, error: TicketError) -> None:
        """A refusal a person must fix reaches people (e-mail, the channel) as `ticket-refused`, at most once a day
        per customer (the alert book's claim); never raises."""
        if self._tell is None:
            return
        tenant = str(ticket.get("TenantId")) if ticket is not None else ""
        apps = [a for a in str(ticket.get("AppIds")).split(",") if a] if ticket is not None else []
        condition = str(ticket.get("Condition")) if ticket is not None else ""
        what = f"the {condition} ticket" if condition else "its configuration"
        try:
            await self._tell(Alert(TICKET_REFUSED, tenant, apps[0] if apps else "",
                                   f"the {self.kind} ticket system refused {what} ({step}): {error.code}: "
                                   f"{error.message}", str(ticket.get("Customer")) if ticket is not None else "",
                                   {"ticket_system": self.kind, "ticket_condition": condition, "step": step,
                                    "error_code": error.code}))
        except Exception as failure:  # telling must not undo the ticket book's own record
            log.warning("ticket refusal not told (%s)", type(failure).__name__,
                        extra={"event": "ticket", "outcome": "untold"})

    def _failed(self, step: str, ticket: Ticket | None, error: TicketError) -> None:
        extra = {"event": "ticket", "step": step, "outcome": "failed", "kind": self.kind, "error_code": error.code,
                 "retryable": error.retryable}
        if ticket is not None:
            extra |= {"tenant_id": ticket.get("TenantId"), "condition": ticket.get("Condition")}
        (log.warning if error.retryable else log.error)("ticket %s failed: %s", step, error.message, extra=extra)

    async def _record(self, ticket: Ticket, app_ids: Sequence[str], outcome: str, detail: str, now: datetime
                      ) -> None:
        """The audit trail (the target's Event, with the ticket number) and one structured log record."""
        tenant, condition = str(ticket.get("TenantId")), str(ticket.get("Condition"))
        log.info("ticket %s", outcome, extra={"event": "ticket", "outcome": outcome, "kind": self.kind,
                                              "tenant_id": tenant, "condition": condition, "detail": detail})
        if self._audit is None:
            return
        for app_id in app_ids or [""]:
            try:
                await self._audit(Event(tenant, app_id, "ticket", outcome, ACTOR, detail=detail, at=now))
            except Exception as error:  # the audit store failing must not undo the ticket step done
                log.warning("ticket audit not written (%s)", type(error).__name__,
                            extra={"event": "ticket", "outcome": "audit-unwritten"})

    # ------------------------------------------------------------------ the table

    @staticmethod
    def _may_retry(ticket: Ticket, now: datetime) -> bool:
        began = ticket.get("Attempt")
        return not began or now - datetime.fromisoformat(began) > RETRY_AFTER

    async def _tickets(self) -> dict[tuple[str, str], Ticket]:
        """Every row by customer and condition; a closed one is kept for the previous ticket's number."""
        await self._ensure_table()
        return {(str(e.get("TenantId", "")).lower(), str(e.get("Condition", ""))): Ticket(e, str(e.metadata["etag"]))
                async for e in self._table.list_entities()}

    async def open_tickets(self) -> list[Ticket]:
        """Every ticket not closed (opening, open, closing), by customer and condition; [] when unreadable."""
        try:
            await self._ensure_table()
            rows = [Ticket(e, str(e.metadata["etag"])) async for e in self._table.query_entities("State ne 'closed'")]
        except AzureError as error:
            log.warning("ticket book unreadable (%s)", type(error).__name__,
                        extra={"event": "ticket-book", "outcome": "unavailable"})
            return []
        return sorted(rows, key=lambda t: (str(t.get("Customer")).lower(), str(t.get("TenantId")),
                                           str(t.get("Condition"))))

    async def _forget(self, ticket: Ticket) -> None:
        """Delete a row closed longer than KEEP_CLOSED (unless it changed since it was read)."""
        try:
            await self._table.delete_entity(ticket.entity["PartitionKey"], ticket.entity["RowKey"], etag=ticket.etag,
                                            match_condition=MatchConditions.IfNotModified)
        except (*_CONFLICT, AzureError):
            pass  # the next pass tries again

    async def _update(self, ticket: Ticket, fields: Mapping[str, Any]) -> Ticket:
        """Merge fields into the row if nobody wrote it since it was read (ResourceModifiedError otherwise)."""
        etag = await merge_row(self._table, ticket.entity["PartitionKey"], ticket.entity["RowKey"], ticket.etag, fields)
        return Ticket({**ticket.entity, **fields}, etag)

    async def _ensure_table(self) -> None:
        if not self._table_ready:
            await create_table(self._table)
            self._table_ready = True


def _details(row: Mapping[str, Any]) -> dict[str, str]:
    import json

    try:
        raw = json.loads(row.get("Details") or "{}")
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in raw.items()} if isinstance(raw, dict) else {}
