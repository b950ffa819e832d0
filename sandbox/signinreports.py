"""Entra's usage reports on Microsoft Graph beta: `GET /beta/reports/appCredentialSignInActivities` (the last sign-in
of each app credential) and `GET /beta/reports/servicePrincipalSignInActivities` (the last sign-in of each service
principal), fed from the same client-credentials sign-ins as the sign-in log (sandbox/signinlog.py).

Sources (sandbox/README.md, "Entra's usage reports"): microsoftgraph/microsoft-graph-docs-contrib `api-reference/beta/
resources/appcredentialsigninactivity.md` and `serviceprincipalsigninactivity.md` (the properties),
`api-reference/beta/api/reportroot-list-appcredentialsigninactivities.md` and `reportroot-list-
serviceprincipalsigninactivities.md` (`$top`, `$filter` on `keyId` / `appId`, `$orderby`; permission `AuditLog.Read.All`
least privileged, `Directory.Read.All` higher), MicrosoftDocs/entra-docs `docs/identity/monitoring-health/concept-
usage-insights-report.md` ("A Microsoft Entra ID P1 or P2 license to view the sign-in data"; "provides the last
credential activity date for every application credential"). Their freshness is not documented: every example's
`lastSignInDateTime` is a midnight, so the strictest plausible is modelled, a daily roll-up (README).
"""

from __future__ import annotations

import base64
import datetime as dt
import re
from collections.abc import Callable, Iterable
from typing import Any

from aiohttp import web

from sandbox.signinlog import AUDIT_LOG, DIRECTORY_READ, NO_PREMIUM, SignInQueryError, _untoken, next_link, page_size
from sandbox.world import Claims, SignInRecord, Tenant, World, iso

REPORTS = re.compile(r"^/beta/reports/(?P<report>appCredentialSignInActivities|servicePrincipalSignInActivities)/?$",
                     re.IGNORECASE)
# Not documented: a page of 100 by default (a reader must follow @odata.nextLink), 1,000 at most as the sign-in log.
DEFAULT_TOP = 100
MAX_TOP = 1000
_EQ = re.compile(r"^\(?\s*(?P<field>\w+)\s+eq\s+'(?P<value>[^']*)'\s*\)?$", re.IGNORECASE)
_ORDER = re.compile(r"^(?P<field>[\w/]+)(?:\s+(?P<dir>asc|desc))?$", re.IGNORECASE)

Row = dict[str, Any]


def check_access(claims: Claims, tenant: Tenant) -> None:
    """AuditLog.Read.All (least privileged) or Directory.Read.All, then the licence *(the order is assumed)*."""
    if not set(claims.roles) & {AUDIT_LOG, DIRECTORY_READ}:
        raise SignInQueryError(403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation.")
    if tenant.entra_license not in ("P1", "P2"):
        # Not documented for the reports: the sign-in log's answer for the same missing licence (assumed).
        raise SignInQueryError(403, NO_PREMIUM, "Neither tenant is B2C or tenant doesn't have premium license")


def rolled_up(world: World, records: Iterable[SignInRecord]) -> list[SignInRecord]:
    """The successful sign-ins the reports reflect now: a day's sign-ins only once that UTC day is over and the log's
    delay has passed (a daily roll-up; kept as long as the credential, not the log's 30 days)."""
    now = world.now()
    zone = _zone(world.report_zone)
    return [r for r in records if r.error_code == 0
            and _day(r.created, zone) + dt.timedelta(days=1) + world.sign_in_delay <= now]


def _zone(text: str) -> dt.tzinfo:
    """The zone the report's days are in: UTC ("Z"), or an offset as the docs' examples write it ("-8:00")."""
    if text == "Z":
        return dt.UTC
    hours, minutes = text[1:].split(":")
    span = dt.timedelta(hours=int(hours), minutes=int(minutes))
    return dt.timezone(-span if text[0] == "-" else span)


def _day(moment: dt.datetime, zone: dt.tzinfo = dt.UTC) -> dt.datetime:
    return moment.astimezone(zone).replace(hour=0, minute=0, second=0, microsecond=0)


def _activity(world: World, record: SignInRecord | None) -> Row | None:
    """A signInActivity: the day of the last sign-in (a midnight, as every documented example) and its request. In
    UTC ("Z"), or in the world's report_zone spelled as the examples spell it ("2021-03-18T00:00:00-8:00", the
    hour unpadded: a reader must take that form too)."""
    if record is None:
        return None
    if world.report_zone == "Z":
        when = iso(_day(record.created))
    else:
        when = _day(record.created, _zone(world.report_zone)).strftime("%Y-%m-%dT00:00:00") + world.report_zone
    return {"lastSignInDateTime": when, "lastSignInRequestId": record.id}


def _latest(records: Iterable[SignInRecord]) -> SignInRecord | None:
    return max(records, key=lambda r: r.created, default=None)


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def credential_rows(world: World, tenant: Tenant) -> list[Row]:
    """Every password credential of every application of the tenant ("every application credential"), with the
    last sign-in the roll-up holds for it (null: none)."""
    seen = rolled_up(world, tenant.sign_ins)
    rows: list[Row] = []
    for app in tenant.applications.values():
        sp = tenant.service_principals.get(app.app_id)
        for c in app.passwords:
            last = _latest(r for r in seen if r.app_id == app.app_id and (r.key_id or "").lower() == c.key_id.lower())
            rows.append({
                "id": _b64(f"{c.key_id}|application"),
                "appId": app.app_id,
                "appObjectId": app.id,
                "servicePrincipalObjectId": sp.id if sp else None,
                "keyId": c.key_id,
                "keyType": "clientSecret",
                "keyUsage": "sign",  # as the documented client-secret example
                "credentialOrigin": "application",
                "createdDateTime": iso(c.created_at),
                "expirationDateTime": iso(c.end),
                "resourceId": last.source.resource_id if last else None,
                "signInActivity": _activity(world, last),
            })
    return rows


def service_principal_rows(world: World, tenant: Tenant) -> list[Row]:
    """Every service principal of the tenant with its last sign-in as a client in app-only flows (the only sign-ins
    the sandbox records; the resource and delegated activities are null)."""
    seen = rolled_up(world, tenant.sign_ins)
    rows: list[Row] = []
    for sp in tenant.service_principals.values():
        activity = _activity(world, _latest(r for r in seen if r.app_id == sp.app_id))
        rows.append({
            "id": _b64(sp.app_id),
            "appId": sp.app_id,
            "applicationAuthenticationClientSignInActivity": activity,
            "applicationAuthenticationResourceSignInActivity": None,
            "delegatedClientSignInActivity": None,
            "delegatedResourceSignInActivity": None,
            "lastSignInActivity": activity,
        })
    return rows


_FILTERABLE = {"appcredentialsigninactivities": ("keyId", "appId"), "serviceprincipalsigninactivities": ("appId",)}


def _filter(text: str, fields: tuple[str, ...]) -> Callable[[Row], bool]:
    """`eq` on the documented fields, clauses joined by `and`; anything else 400, never ignored."""
    checks: list[tuple[str, str]] = []
    for part in re.split(r"\s+and\s+", text.strip(), flags=re.IGNORECASE):
        match = _EQ.match(part.strip())
        name = next((f for f in fields if match and f.lower() == match["field"].lower()), None)
        if match is None or name is None:
            raise SignInQueryError(400, "BadRequest", f"Invalid filter clause: '{part.strip()}' is not supported")
        checks.append((name, match["value"].lower()))
    return lambda row: all(str(row.get(f) or "").lower() == v for f, v in checks)


def _sort(rows: list[Row], text: str | None, report: str) -> list[Row]:
    if not text:
        return rows
    match = _ORDER.match(text.strip())
    field = "signInActivity" if report == "appcredentialsigninactivities" else "lastSignInActivity"
    if match is None or match["field"].lower() != f"{field}/lastsignindatetime".lower():
        raise SignInQueryError(400, "BadRequest", f"Ordering by '{text}' is not supported.")

    def when(row: Row) -> str:
        return str((row.get(field) or {}).get("lastSignInDateTime") or "")

    return sorted(rows, key=when, reverse=(match["dir"] or "asc").lower() == "desc")


def list_report(world: World, request: web.Request, claims: Claims, tenant: Tenant, report: str) -> web.Response:
    """One page of a usage report, in the tenant's object order (or `$orderby` on the last sign-in)."""
    check_access(claims, tenant)
    world.catch_up()
    q = request.query
    report = report.lower()
    top = page_size(q, ("$top", "$skiptoken", "$filter", "$orderby"), DEFAULT_TOP, MAX_TOP)
    rows = credential_rows(world, tenant) if report == "appcredentialsigninactivities" \
        else service_principal_rows(world, tenant)
    if "$filter" in q:
        keep = _filter(q["$filter"], _FILTERABLE[report])
        rows = [r for r in rows if keep(r)]
    rows = _sort(rows, q.get("$orderby"), report)
    offset, as_of = _untoken(q["$skiptoken"]) if "$skiptoken" in q else (0, world.now())
    name = "appCredentialSignInActivities" if report == "appcredentialsigninactivities" \
        else "servicePrincipalSignInActivities"
    base = f"{world.urls['graph']}/beta/reports/{name}"
    body: dict[str, Any] = {"@odata.context": f"{world.urls['graph']}/beta/$metadata#reports/{name}"}
    if link := next_link(base, q, offset + top, len(rows), as_of):
        body["@odata.nextLink"] = link
    body["value"] = rows[offset:offset + top]
    return web.json_response(body)
