"""The fleet's credentials as the API, the export and the command line show them: one document per inventory row
with its days left, the warning threshold it has crossed and the exclusion covering it (shown, never hidden), filters
and pages that resume from an opaque cursor, so thousands of rows are never held at once. No secret: metadata only."""

from __future__ import annotations

import base64
import binascii
import csv
import io
from collections.abc import AsyncIterator, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.credential_state import CredentialState, Line, lines_of
from shared.expiry_warnings import DEFAULT_THRESHOLDS, Exclusion
from shared.inventory import CredentialKind, InventoryCredential
from shared.ports import InventoryStore

MAX_PAGE = 5000
DEFAULT_PAGE = 1000
COLUMNS = ("tenantId", "customer", "objectKind", "objectId", "appId", "displayName", "owners", "credentialKind",
           "usage", "keyId", "hint", "credentialName", "start", "end", "daysLeft", "warningThreshold", "managed",
           "firstParty", "saml", "state", "stateText", "excluded", "exclusionKind", "exclusionBy", "exclusionWhy",
           "exclusionUntil")


class InvalidFilter(ValueError):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Filters:
    """GET /api/inventory's filters; each left at its default matches everything."""

    tenant_id: str = ""
    customer: str = ""  # case-insensitive part of the customer's name
    days_left: int | None = None  # ends within this many days (expired ones included)
    credential_kind: CredentialKind | None = None
    managed: bool | None = None
    excluded: bool | None = None
    states: frozenset[CredentialState] = frozenset()  # any of these states (the report's); empty: any state

    def matches(self, c: InventoryCredential, exclusion: Exclusion | None, now: datetime) -> bool:
        if self.tenant_id and c.tenant_id != self.tenant_id:
            return False
        if self.customer and self.customer.lower() not in c.customer.lower():
            return False
        if self.days_left is not None:
            left = c.days_left(now)
            if left is None or left > self.days_left:
                return False
        if self.credential_kind is not None and c.credential_kind is not self.credential_kind:
            return False
        if self.managed is not None and c.managed != self.managed:
            return False
        return self.excluded is None or (exclusion is not None) == self.excluded


def parse_filters(params: Mapping[str, str], guid: Any) -> Filters:
    """Filters from query parameters; InvalidFilter names the one that is wrong."""
    def flag(name: str) -> bool | None:
        value = params.get(name)
        if value is None:
            return None
        if value not in ("true", "false"):
            raise InvalidFilter(f"{name} must be true or false")
        return value == "true"

    tenant = params.get("tenantId", "")
    if tenant and not guid.fullmatch(tenant):
        raise InvalidFilter("tenantId must be a GUID")
    days: int | None = None
    if "daysLeft" in params:
        text = params["daysLeft"]
        # ASCII digits only: int() also takes " 7", "1_0", "+7" and other scripts' digits ("\u0663")
        if not (text.isascii() and text.isdigit()):
            raise InvalidFilter("daysLeft must be a whole number of days from 0 to 3650")
        days = int(text)
        if not 0 <= days <= 3650:
            raise InvalidFilter("daysLeft must be a whole number of days from 0 to 3650")
    kind = params.get("kind")
    if kind is not None and kind not in ("password", "certificate"):
        raise InvalidFilter("kind must be password or certificate")
    customer = params.get("customer", "")
    if len(customer) > 200:
        raise InvalidFilter("customer may be at most 200 characters")
    states: set[CredentialState] = set()
    for name in params["state"].split(",") if "state" in params else ():
        try:
            states.add(CredentialState(name))
        except ValueError:
            raise InvalidFilter(f"state must be one or more (comma-separated) of "
                                f"{', '.join(s.value for s in CredentialState)}") from None
    return Filters(tenant.lower(), customer, days, CredentialKind(kind) if kind else None, flag("managed"),
                   flag("excluded"), frozenset(states))


def encode_cursor(c: InventoryCredential) -> str:
    return base64.urlsafe_b64encode("|".join(c.key).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, str]:
    """(tenant, the tenant's position) a page resumes after; InvalidFilter when it is not one of ours."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidFilter("cursor is not one this API gave") from None
    parts = text.split("|")
    if len(parts) != 4 or not all(parts):
        raise InvalidFilter("cursor is not one this API gave")
    return parts[0], "|".join(parts[1:])


def position(c: InventoryCredential) -> str:
    return "|".join(c.key[1:])


def document(line: Line) -> dict[str, Any]:
    """One credential as the API, the export and the dashboard show it; `state` and `stateText` are the report's
    words for it (shared/credential_state.py)."""
    c, exclusion = line.credential, line.exclusion
    return {
        "tenantId": c.tenant_id, "customer": c.customer, "objectKind": c.object_kind.value, "objectId": c.object_id,
        "appId": c.app_id, "displayName": c.display_name, "owners": list(c.owners),
        "credentialKind": c.credential_kind.value, "usage": c.usage, "keyId": c.key_id, "hint": c.hint,
        "credentialName": c.credential_name, "start": c.start.isoformat() if c.start else None,
        "end": c.end.isoformat() if c.end else None, "daysLeft": line.days_left, "warningThreshold": line.threshold,
        "managed": c.managed, "firstParty": c.first_party, "saml": c.saml,
        "state": line.state.value, "stateText": line.words,
        "excluded": None if exclusion is None else {
            "id": exclusion.exclusion_id, "kind": exclusion.kind, "scope": exclusion.scope.value, "by": exclusion.by,
            "why": exclusion.why, "until": exclusion.until.isoformat() if exclusion.until else None},
    }


@dataclass(frozen=True)
class Page:
    rows: list[dict[str, Any]]
    next_cursor: str | None


async def rows(inventory: InventoryStore, tenants: Sequence[str], filters: Filters, exclusions: Iterable[Exclusion],
               thresholds: Mapping[str, tuple[int, ...]], now: datetime, after: tuple[str, str] | None = None,
               paused: Collection[tuple[str, str]] = ()) -> AsyncIterator[tuple[InventoryCredential, dict[str, Any]]]:
    """Every matching credential, tenant by tenant (one tenant's rows streamed at a time), after the cursor.
    `paused`: (tenant, app id) of disabled targets. One object's rows are judged together (a store streams them
    adjacent, in key order), so a renewed credential says so, as in the report."""
    by_tenant: dict[str, list[Exclusion]] = {}
    for e in exclusions:
        by_tenant.setdefault(e.tenant_id, []).append(e)
    for tenant in sorted(tenants):
        if filters.tenant_id and tenant != filters.tenant_id:
            continue
        if after is not None and tenant < after[0]:
            continue
        own = by_tenant.get(tenant, [])
        chosen = thresholds.get(tenant, DEFAULT_THRESHOLDS)
        stopped = {app for t, app in paused if t == tenant}
        held: list[InventoryCredential] = []
        async for c in inventory.stream(tenant):
            if held and (held[0].object_kind, held[0].object_id) != (c.object_kind, c.object_id):
                for found in _judged(held, own, chosen, now, stopped, filters, after):
                    yield found
                held = []
            held.append(c)
        for found in _judged(held, own, chosen, now, stopped, filters, after):
            yield found


def _judged(held: Sequence[InventoryCredential], exclusions: Sequence[Exclusion], thresholds: Sequence[int],
            now: datetime, paused: Collection[str], filters: Filters, after: tuple[str, str] | None
            ) -> Iterable[tuple[InventoryCredential, dict[str, Any]]]:
    for line in lines_of(held, exclusions, thresholds, now, paused):
        c = line.credential
        if after is not None and c.tenant_id == after[0] and position(c) <= after[1]:
            continue
        if filters.matches(c, line.exclusion, now) and (not filters.states or line.state in filters.states):
            yield c, document(line)


async def page(inventory: InventoryStore, tenants: Sequence[str], filters: Filters, exclusions: Iterable[Exclusion],
               thresholds: Mapping[str, tuple[int, ...]], now: datetime, cursor: str | None, limit: int,
               paused: Collection[tuple[str, str]] = ()) -> Page:
    """One page of at most `limit` rows and the cursor of the next (None on the last)."""
    found: list[dict[str, Any]] = []
    last: InventoryCredential | None = None
    more = False
    async for c, doc in rows(inventory, tenants, filters, exclusions, thresholds, now,
                             decode_cursor(cursor) if cursor else None, paused):
        if len(found) == limit:
            more = True
            break
        found.append(doc)
        last = c
    return Page(found, encode_cursor(last) if more and last is not None else None)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if not isinstance(value, str | list):
        return str(value)  # numbers and times: never a formula
    text = "; ".join(str(v) for v in value) if isinstance(value, list) else value
    # Names come from customer tenants: a cell a spreadsheet would run as a formula is quoted as text (OWASP
    # "CSV Injection").
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def csv_row(doc: Mapping[str, Any]) -> dict[str, str]:
    excluded = doc.get("excluded") or {}
    flat = {**doc, "excluded": bool(excluded), "exclusionKind": excluded.get("kind"),
            "exclusionBy": excluded.get("by"), "exclusionWhy": excluded.get("why"),
            "exclusionUntil": excluded.get("until")}
    return {column: _cell(flat.get(column)) for column in COLUMNS}


def csv_text(docs: Iterable[Mapping[str, Any]], header: bool = True) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\r\n")
    if header:
        writer.writeheader()
    for doc in docs:
        writer.writerow(csv_row(doc))
    return out.getvalue()
