"""The ticket port: one PSA (ConnectWise Manage, Autotask, HaloPSA) or a generic JSON webhook, behind four calls.

The lifecycle (one open ticket per customer and condition, a note on a repeat, a resolving note and the ticket closed
when the condition clears) is decided once, by the alert book and the ticket book (shared/tickets/book.py); a desk
only carries it out in its PSA's own API. A desk never decides, never retries by itself and never logs a credential:
it answers a `TicketRef` or raises `TicketError` with a code from TICKET_ERRORS, and `retryable` says whether the
same call may succeed later unchanged (a PSA down or throttling) or needs a person to fix the configuration (bad
credentials, an unknown board or queue).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from shared.errors import RotationError

# code -> retryable: the codes every desk raises (each desk's module says which of its answers maps to which).
TICKET_ERRORS: Mapping[str, bool] = {
    "TicketAuthRefused": False,  # 401/403: the API member, key or client is wrong, disabled or lacks a permission
    "TicketRouteUnknown": False,  # the board / queue / priority / status / company named by the routing is unknown
    "TicketRequestRefused": False,  # any other 4xx: the PSA refused the request as made (its message kept, no secret)
    "TicketNotFound": False,  # the ticket recorded for a condition was deleted in the PSA
    "TicketThrottled": True,  # 429 (or the PSA's own rate-limit answer): retry after `retry_after` seconds
    "TicketSystemUnreachable": True,  # a network error, a timeout or a 5xx
    "TicketConfigInvalid": False,  # the desk's configuration (Key Vault secret) is missing a field or malformed
}


class TicketError(RotationError):
    """A PSA call that did not do what was asked. `code` is a key of TICKET_ERRORS; never carries a credential."""

    def __init__(self, message: str, *, code: str, retry_after: float | None = None, status: int | None = None
                 ) -> None:
        if code not in TICKET_ERRORS:
            raise ValueError(f"unknown ticket error code {code!r}")
        super().__init__(message, code=code, retry_after=retry_after)
        self.status = status

    @property
    def retryable(self) -> bool:
        return TICKET_ERRORS[self.code]


@dataclass(frozen=True)
class TicketRoute:
    """Where and how a condition's ticket is filed, in the PSA's own words (names or ids as the PSA accepts them;
    "" means the desk's configured default). Routing is per condition (shared/tickets/routing.py)."""

    board: str = ""  # ConnectWise service board; Autotask queue id; HaloPSA team
    priority: str = ""  # the PSA's priority (name or id)
    ticket_type: str = ""  # ConnectWise type / Autotask ticket type / HaloPSA ticket type id ("" = default)
    status: str = ""  # the status a new ticket gets ("" = the PSA's default new status)
    closed_status: str = ""  # the status a resolved ticket is moved to ("" = the PSA's closed/complete status)
    company: str = ""  # the PSA's company / account / client for this customer ("" = the desk's default company)


@dataclass(frozen=True)
class TicketDraft:
    """A ticket to open: never a secret (conditions, customer names, ids, the engine's messages)."""

    key: str  # the dedupe key, stable for one customer and condition (shared/tickets/book.py ticket_key)
    customer: str
    tenant_id: str
    condition: str
    title: str  # the ticket's summary; a desk shortens it to its PSA's limit
    body: str  # the first note / description (plain text)
    route: TicketRoute = field(default_factory=TicketRoute)


@dataclass(frozen=True)
class TicketRef:
    """An open ticket as the PSA knows it."""

    id: str  # what the PSA's API addresses the ticket by
    number: str  # what people see and search for (ConnectWise's id, Autotask's ticketNumber, HaloPSA's id)
    url: str = ""  # a link for people where the PSA has one ("" otherwise)


class TicketDesk(Protocol):
    """One PSA (or the JSON webhook). Each call is one unit of the lifecycle; TicketError when it did not happen.

    `find_open(key)` finds a ticket this rotator opened for `key` that is not closed (the key is written into the
    ticket where the PSA can search it back): after a crash between the PSA's create and the book's record, the book
    asks before opening again, so a condition never gets two tickets."""

    @property
    def kind(self) -> str: ...

    async def find_open(self, draft: TicketDraft) -> TicketRef | None: ...

    async def open(self, draft: TicketDraft) -> TicketRef: ...

    async def add_note(self, ticket: TicketRef, text: str) -> None: ...

    async def close(self, ticket: TicketRef, text: str, route: TicketRoute) -> None: ...

    async def check(self, route: TicketRoute) -> None:
        """Cheap proof the configuration works (credentials, board/queue): TicketError otherwise; opens nothing."""
        ...
