"""Entra ID's sign-in log on Microsoft Graph: `GET /beta/auditLogs/signIns` (and v1.0's user-only view of it).

Sources (sandbox/README.md, "Sign-in logs"): microsoftgraph/microsoft-graph-docs-contrib `api-reference/beta/api/
signin-list.md` (`$top`, `$skiptoken`, `$filter`; "The maximum and default page size is 1,000 objects and by default,
the most recent sign-ins are returned first"; permissions "AuditLog.Read.All and Directory.Read.All" with the known
issue that both are needed) and `api-reference/beta/resources/signin.md` (servicePrincipalCredentialKeyId,
signInEventTypes; v1.0's signIn has neither); MicrosoftDocs/SupportArticles-docs `b2c-or-tenant-premium-license-
sign-in-activities.md` (403 `Authentication_RequestFromNonPremiumTenantOrB2CTenant` "Neither tenant is B2C or tenant
doesn't have premium license" without Entra ID P1/P2); MicrosoftDocs/entra-docs `concept-service-principal-sign-
ins.md`; Microsoft Entra Health's page on app-only agent sign-ins (learn.microsoft.com/entra/identity/monitoring-
health), which filters `signInEventTypes/any(t: t eq 'servicePrincipal')`: "Without an event-type filter, the List
signIns API returns only interactive user sign-ins by default".
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from sandbox.world import Claims, SignInRecord, Tenant, World, parse_iso

MAX_TOP = 1000
AUDIT_LOG = "AuditLog.Read.All"
DIRECTORY_READ = "Directory.Read.All"
NO_PREMIUM = "Authentication_RequestFromNonPremiumTenantOrB2CTenant"

Row = dict[str, Any]
Predicate = Callable[[Row], bool]

# The properties and operators the beta signIn resource documents as filterable ("Supports `$filter` (...)",
# signin.md); servicePrincipalCredentialKeyId documents none, createdDateTime only eq, le, ge, status only errorCode eq.
_EQ_FIELDS = ("appId", "appDisplayName", "id", "ipAddress", "resourceDisplayName", "resourceId", "servicePrincipalId",
              "correlationId")
_STARTSWITH_FIELDS = ("appDisplayName", "ipAddress", "servicePrincipalId")
_STRING_EQ = re.compile(r"^(?P<field>\w+)\s+eq\s+'(?P<value>(?:[^']|'')*)'$", re.IGNORECASE)
_STARTSWITH = re.compile(r"^startswith\(\s*(?P<field>\w+)\s*,\s*'(?P<value>(?:[^']|'')*)'\s*\)$", re.IGNORECASE)
_EVENT_TYPE = re.compile(r"^signInEventTypes/any\(\s*(?P<var>\w+)\s*:\s*(?P=var)\s+eq\s+'(?P<value>\w+)'\s*\)$",
                         re.IGNORECASE)
_CREATED = re.compile(r"^createdDateTime\s+(?P<op>ge|le|eq)\s+(?P<value>\d{4}-\d\d-\d\dT[\d:.]+Z?)$",
                      re.IGNORECASE)
_ERROR_CODE = re.compile(r"^status/errorCode\s+eq\s+(?P<value>-?\d+)$", re.IGNORECASE)
_V1_ONLY_BETA = ("signineventtypes", "serviceprincipalcredentialkeyid")
_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "eq": lambda a, b: a == b, "ge": lambda a, b: a >= b, "le": lambda a, b: a <= b,
}
EventTypes = set[str]


class SignInQueryError(Exception):
    """A refused sign-in log request: status, Graph's error code and message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


def _bad(detail: str) -> SignInQueryError:
    return SignInQueryError(400, "BadRequest", f"Invalid filter clause: {detail}")


def _clause(text: str, event_types: EventTypes) -> Predicate | None:
    """One `and`-joined clause; an event-type clause is collected into `event_types` (None returned)."""
    text = text.strip()
    while text.startswith("(") and text.endswith(")"):
        text = text[1:-1].strip()
    if match := _EVENT_TYPE.match(text):
        event_types.add(match["value"])
        return None
    if (match := _STRING_EQ.match(text)) and (name := _named(match["field"], _EQ_FIELDS)):
        value = match["value"].replace("''", "'").lower()
        return lambda row: str(row.get(name) or "").lower() == value
    if (match := _STARTSWITH.match(text)) and (prefixed := _named(match["field"], _STARTSWITH_FIELDS)):
        prefix = match["value"].replace("''", "'").lower()
        return lambda row: str(row.get(prefixed) or "").lower().startswith(prefix)
    if match := _CREATED.match(text):
        try:
            moment = parse_iso(match["value"])
        except ValueError as exc:
            raise _bad(f"'{text}' is not a valid DateTimeOffset") from exc
        compare = _COMPARE[match["op"].lower()]
        return lambda row: compare(parse_iso(row["createdDateTime"]), moment)
    if match := _ERROR_CODE.match(text):
        code = int(match["value"])
        return lambda row: row["status"]["errorCode"] == code
    raise _bad(f"'{text}' is not supported")


def _named(name: str, fields: tuple[str, ...]) -> str | None:
    return next((f for f in fields if f.lower() == name.lower()), None)


def parse_filter(text: str, beta: bool) -> tuple[list[Predicate], EventTypes]:
    """The `$filter` subset served: clauses joined by `and` (no `or`)."""
    lowered = text.lower()
    if not beta and any(name in lowered for name in _V1_ONLY_BETA):
        # v1.0's signIn has no signInEventTypes nor service-principal credential properties.
        name = next(n for n in _V1_ONLY_BETA if n in lowered)
        raise SignInQueryError(400, "BadRequest", f"Could not find a property named '{name}' on type "
                               "'microsoft.graph.signIn'.")
    if re.search(r"\s+or\s+", text, re.IGNORECASE):
        raise _bad("'or' is not supported in this filter")
    event_types: EventTypes = set()
    predicates = [p for part in re.split(r"\s+and\s+", text.strip(), flags=re.IGNORECASE)
                  if (p := _clause(part, event_types)) is not None]
    return predicates, event_types


def _token(offset: int, as_of: dt.datetime) -> str:
    raw = json.dumps({"o": offset, "t": as_of.isoformat()}).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def next_link(base: str, query: Mapping[str, str], end: int, total: int, as_of: dt.datetime) -> str | None:
    """The `@odata.nextLink` when rows remain past end: the same query, its `$skiptoken` naming the next offset and
    the moment of the first page (later rows never shift the pages being read)."""
    if end >= total:
        return None
    params = {k: v for k, v in query.items() if k != "$skiptoken"}
    params["$skiptoken"] = _token(end, as_of)
    return f"{base}?{urlencode(params)}"


def _untoken(text: str) -> tuple[int, dt.datetime]:
    try:
        doc = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        return int(doc["o"]), dt.datetime.fromisoformat(doc["t"])
    except (ValueError, KeyError, TypeError) as exc:
        raise SignInQueryError(400, "BadRequest", "Invalid $skiptoken.") from exc


def page_size(query: Mapping[str, str], options: tuple[str, ...], default: int, most: int) -> int:
    """The page size `$top` asks for (default when absent); 400 for a query option not in options or a size
    outside 1..most. Shared by the sign-in log and the usage reports, which answer these alike."""
    unknown = sorted(k for k in query if k.startswith("$") and k not in options)
    if unknown:
        raise SignInQueryError(400, "BadRequest", f"Query option '{unknown[0]}' is not supported.")
    try:
        top = int(query.get("$top", default))
    except ValueError as exc:
        raise SignInQueryError(400, "BadRequest", "Invalid $top.") from exc
    if not 1 <= top <= most:
        raise SignInQueryError(400, "BadRequest", f"Invalid page size specified: '{top}'. Must be between 1 and "
                               f"{most}.")
    return top


def check_access(claims: Claims, tenant: Tenant) -> None:
    """The permission and licence checks, in that order (sandbox/README.md "Sign-in logs": the order is assumed)."""
    roles = set(claims.roles)
    if AUDIT_LOG not in roles:
        raise SignInQueryError(403, "Authorization_RequestDenied",
                               "Insufficient privileges to complete the operation.")
    if DIRECTORY_READ not in roles:
        # The documented known issue: without Directory.Read.All the read fails with the licence check's error.
        raise SignInQueryError(403, NO_PREMIUM, "Neither tenant is B2C or tenant doesn't have premium license")
    if tenant.entra_license not in ("P1", "P2"):
        raise SignInQueryError(403, NO_PREMIUM, "Neither tenant is B2C or tenant doesn't have premium license")


def list_sign_ins(world: World, request: web.Request, claims: Claims, tenant: Tenant, version: str) -> web.Response:
    """One page of the tenant's sign-in log, newest first (or as `$orderby=createdDateTime [asc|desc]` says)."""
    check_access(claims, tenant)
    world.catch_up()
    q = request.query
    beta = version == "beta"
    top = page_size(q, ("$top", "$skiptoken", "$filter", "$select", "$orderby"), MAX_TOP, MAX_TOP)
    predicates, event_types = parse_filter(q["$filter"], beta) if "$filter" in q else ([], set())
    order = (q.get("$orderby") or "createdDateTime desc").strip().lower()
    if order not in ("createddatetime", "createddatetime asc", "createddatetime desc"):
        raise SignInQueryError(400, "BadRequest", f"Ordering by '{q['$orderby']}' is not supported.")
    offset, as_of = _untoken(q["$skiptoken"]) if "$skiptoken" in q else (0, world.now())
    # Only service-principal sign-ins are recorded here; a reader sees them only when it asks for that event type
    # (the default is interactive user sign-ins), and only on beta.
    records: list[SignInRecord] = world.visible_sign_ins(tenant) if beta and "servicePrincipal" in event_types \
        else []
    # Paging is over the log as it was at the first page: later sign-ins never shift the pages being read.
    records = [r for r in records if r.created + world.sign_in_delay <= as_of]
    ascending = order in ("createddatetime", "createddatetime asc")
    # Stable order: by time, then by the order the sign-ins happened in.
    ordered = sorted(enumerate(records), key=lambda item: (item[1].created, item[0]), reverse=not ascending)
    rows = []
    for _, record in ordered:
        row = record.to_graph()
        if all(p(row) for p in predicates):
            rows.append(row)
    chunk = rows[offset:offset + top]
    base = f"{world.urls['graph']}/{version}/auditLogs/signIns"
    body: dict[str, Any] = {"@odata.context": f"{world.urls['graph']}/{version}/$metadata#auditLogs/signIns"}
    if link := next_link(base, q, offset + top, len(rows), as_of):
        body["@odata.nextLink"] = link
    select = [f.strip().lower() for f in q["$select"].split(",")] if "$select" in q else None
    body["value"] = [{k: v for k, v in row.items() if select is None or k.lower() in select} for row in chunk]
    return web.json_response(body)
