"""The per-customer credential report over HTTP (issue 25): GET /api/reports/{tenantId} as HTML (to read or print)
or PDF (to send the customer). Thin: validate, gather from the stores, render; a refused request reads nothing."""

from __future__ import annotations

import azure.functions as func

from shared.bootstrap import invocation_services
from shared.customer_report import (
    DEFAULT_PERIOD_DAYS,
    MAX_PERIOD_DAYS,
    gather,
    policy_from,
    render_html,
    render_pdf,
)
from shared.entrypoints.access import Role, authorize
from shared.entrypoints.web import ALL_METHODS, HttpError, allow, handled, path_guid
from shared.errors import RotationError

bp = func.Blueprint()  # type: ignore[no-untyped-call]
AUTH = func.AuthLevel.ANONYMOUS  # App Service Authentication signs the caller in; `authorize` checks the role
_QUERY = {"format", "days"}
# The page is self-contained: its own inline styles, no script, no outside resource.
_HTML_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff",
                 "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'"}


@bp.route(route="reports/{tenantId}", methods=ALL_METHODS, auth_level=AUTH)
@handled
async def report(req: func.HttpRequest) -> func.HttpResponse:
    """GET /api/reports/{tenantId}?format=html|pdf&days=N: one customer's credentials, what the rotator did in the
    last N days (default 30) and what needs the customer."""
    allow(req, "GET")
    authorize(req, Role.READ)
    tenant_id = path_guid(req, "tenantId")
    params = dict(req.params)
    unknown = sorted(set(params) - _QUERY)
    if unknown:
        raise HttpError(400, "InvalidQuery", f"unknown parameter(s) {', '.join(unknown)}; allowed: days, format")
    fmt = params.get("format", "html")
    if fmt not in ("html", "pdf"):
        raise HttpError(400, "InvalidQuery", "format must be html or pdf")
    days_text = params.get("days", str(DEFAULT_PERIOD_DAYS))
    if not (days_text.isascii() and days_text.isdigit()) or not 1 <= int(days_text) <= MAX_PERIOD_DAYS:
        # isascii: str.isdigit() also holds for "²", which int() refuses (a 500), and for other scripts' digits
        raise HttpError(400, "InvalidQuery", f"days must be a whole number from 1 to {MAX_PERIOD_DAYS}")
    async with invocation_services() as svc:
        if svc.inventory is None or svc.warning_rules is None:
            raise RotationError("the inventory is not configured", code="InventoryUnavailable")
        now = svc.engine.clock.now()
        found = await gather(svc.state, svc.inventory, svc.warning_rules, tenant_id, policy_from(svc.settings), now,
                             int(days_text))
    if fmt == "pdf":
        name = f"credentials-{tenant_id}-{now:%Y-%m-%d}.pdf"
        return func.HttpResponse(render_pdf(found), status_code=200, mimetype="application/pdf",
                                 headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff",
                                          "Content-Disposition": f'attachment; filename="{name}"'})
    return func.HttpResponse(render_html(found), status_code=200, mimetype="text/html", charset="utf-8",
                             headers=_HTML_HEADERS)
