"""The fleet's credentials over HTTP (issue 25): GET /api/inventory (filters, pages, JSON or CSV for documentation
tools), the exclusions and snoozes from warnings (who, why, until; audited), and each customer's warning thresholds.
Thin: validate, call the stores, map the answer; a refused request changes nothing."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

import azure.functions as func

from shared.bootstrap import Services, invocation_services
from shared.domain import GUID
from shared.entrypoints.access import Role, authorize
from shared.entrypoints.web import ALL_METHODS, HttpError, allow, handled, json_response, path_guid, read_json
from shared.errors import RotationError
from shared.expiry_warnings import (
    DEFAULT_THRESHOLDS,
    InvalidRule,
    exclusion_document,
    new_exclusion,
    parse_thresholds,
)
from shared.inventory_view import (
    DEFAULT_PAGE,
    MAX_PAGE,
    InvalidFilter,
    csv_text,
    decode_cursor,
    page,
    parse_filters,
)
from shared.ports import InventoryStore, WarningRules
from shared.registry import InvalidTarget, refuse_secret_values
from shared.warning_pass import exclude, lift, registered, set_thresholds

bp = func.Blueprint()  # type: ignore[no-untyped-call]
AUTH = func.AuthLevel.ANONYMOUS  # App Service Authentication signs the caller in; `authorize` checks the role
_QUERY = {"tenantId", "customer", "daysLeft", "kind", "managed", "excluded", "state", "format", "limit", "cursor"}


def _stores(svc: Services) -> tuple[InventoryStore, WarningRules]:
    if svc.inventory is None or svc.warning_rules is None:
        raise RotationError("the inventory is not configured", code="InventoryUnavailable")
    return svc.inventory, svc.warning_rules


def _object(req: func.HttpRequest, allowed: set[str]) -> dict[str, Any]:
    body = read_json(req)
    if not isinstance(body, dict):
        raise HttpError(422, "InvalidRequest", f"send a JSON object with {', '.join(sorted(allowed))}")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise HttpError(422, "InvalidRequest", f"unknown field(s) {', '.join(unknown)}; allowed: "
                        f"{', '.join(sorted(allowed))}")
    try:
        refuse_secret_values(body)  # a reason is stored and shown: never a pasted secret
    except InvalidTarget as error:
        raise HttpError(422, "InvalidRequest", error.message) from None
    return body


def _text(body: dict[str, Any], name: str) -> str:
    value = body.get(name, "")
    if not isinstance(value, str):
        raise HttpError(422, "InvalidRequest", f"{name} must be a string")
    return value


@bp.route(route="inventory", methods=ALL_METHODS, auth_level=AUTH)
@handled
async def inventory(req: func.HttpRequest) -> func.HttpResponse:
    """GET /api/inventory: every credential of every customer, filtered, a page at a time, as JSON or CSV."""
    allow(req, "GET")
    authorize(req, Role.READ)
    params = dict(req.params)
    unknown = sorted(set(params) - _QUERY)
    if unknown:
        raise HttpError(400, "InvalidQuery", f"unknown parameter(s) {', '.join(unknown)}; allowed: "
                        f"{', '.join(sorted(_QUERY))}")
    fmt = params.get("format", "json")
    if fmt not in ("json", "csv"):
        raise HttpError(400, "InvalidQuery", "format must be json or csv")
    try:
        filters = parse_filters(params, GUID)
        if params.get("cursor"):
            decode_cursor(params["cursor"])  # refused before anything is read
    except InvalidFilter as error:
        raise HttpError(400, "InvalidQuery", error.message) from None
    limit_text = params.get("limit", str(DEFAULT_PAGE))
    # ASCII digits only: int() also takes " 7", "1_0", "+7" and other scripts' digits
    if not (limit_text.isascii() and limit_text.isdigit()) or not 1 <= (limit := int(limit_text)) <= MAX_PAGE:
        raise HttpError(400, "InvalidQuery", f"limit must be a whole number from 1 to {MAX_PAGE}")
    async with invocation_services() as svc:
        store, rules = _stores(svc)
        targets = [t for t, _ in await svc.state.list_targets()]
        tenants = sorted({t.tenant_id for t in targets})
        found = await page(store, tenants, filters, await rules.exclusions(), await rules.thresholds(),
                           svc.engine.clock.now(), params.get("cursor") or None, limit,
                           {(t.tenant_id, t.app_id) for t in targets if not t.enabled})
    headers = {}
    if found.next_cursor:
        # RFC 8288: a documentation tool follows rel="next" until there is none.
        query = urlencode({**params, "cursor": found.next_cursor})
        headers["Link"] = f'</api/inventory?{query}>; rel="next"'
    if fmt == "csv":
        return func.HttpResponse(csv_text(found.rows), status_code=200, mimetype="text/csv", charset="utf-8",
                                 headers={**headers, "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff",
                                          "Content-Disposition": 'attachment; filename="credentials.csv"'})
    return json_response({"credentials": found.rows, "next": found.next_cursor}, headers=headers)


@bp.route(route="exclusions", methods=ALL_METHODS, auth_level=AUTH)
@handled
async def exclusions(req: func.HttpRequest) -> func.HttpResponse:
    """GET /api/exclusions (every exclusion and snooze), POST /api/exclusions (exclude or snooze; audited)."""
    allow(req, "GET", "POST")
    if req.method.upper() == "GET":
        authorize(req, Role.READ)
        unknown = sorted(set(req.params) - {"tenantId"})
        if unknown:  # a misspelt filter (?tenant=) would otherwise list every customer's exclusions
            raise HttpError(400, "InvalidQuery", f"unknown parameter(s) {', '.join(unknown)}; allowed: tenantId")
        tenant = req.params.get("tenantId", "")
        if tenant and not GUID.fullmatch(tenant):
            raise HttpError(400, "InvalidQuery", "tenantId must be a GUID")
        async with invocation_services() as svc:
            _, rules = _stores(svc)
            now = svc.engine.clock.now()
            return json_response({"exclusions": [exclusion_document(e, now)
                                                 for e in await rules.exclusions(tenant.lower())]})
    who = authorize(req, Role.OPERATE)
    body = _object(req, {"tenantId", "scope", "appId", "keyId", "kind", "until", "why"})
    kind = body.get("kind", "exclusion")
    if kind not in ("exclusion", "snooze"):
        raise HttpError(422, "InvalidRequest", "kind must be exclusion or snooze")
    until_text = body.get("until")
    until = None
    if until_text is not None:
        if not isinstance(until_text, str):
            raise HttpError(422, "InvalidRequest", "until must be a date-time like 2027-01-31T00:00:00Z")
        try:
            until = datetime.fromisoformat(until_text.replace("Z", "+00:00"))
        except ValueError:
            raise HttpError(422, "InvalidRequest", "until must be a date-time like 2027-01-31T00:00:00Z") from None
    async with invocation_services() as svc:
        _, rules = _stores(svc)
        now = svc.engine.clock.now()
        try:
            made = new_exclusion(str(uuid.uuid4()), _text(body, "tenantId"), _text(body, "scope"),
                                 app_id=_text(body, "appId"), key_id=_text(body, "keyId"), snooze=kind == "snooze",
                                 until=until, by=who.name, why=_text(body, "why"), now=now)
        except InvalidRule as error:
            raise HttpError(422, error.code, error.message) from None
        await exclude(rules, svc.state, made)
        return json_response(exclusion_document(made, now), status=201)


@bp.route(route="exclusions/{exclusionId}", methods=ALL_METHODS, auth_level=AUTH)
@handled
async def exclusion(req: func.HttpRequest) -> func.HttpResponse:
    """DELETE /api/exclusions/{exclusionId}: lift an exclusion or snooze early (audited)."""
    allow(req, "DELETE")
    who = authorize(req, Role.OPERATE)
    exclusion_id = path_guid(req, "exclusionId")
    async with invocation_services() as svc:
        _, rules = _stores(svc)
        lifted = await lift(rules, svc.state, exclusion_id, who.name, svc.engine.clock.now())
        return json_response(exclusion_document(lifted, svc.engine.clock.now()))


@bp.route(route="warning-thresholds/{tenantId}", methods=ALL_METHODS, auth_level=AUTH)
@handled
async def warning_thresholds(req: func.HttpRequest) -> func.HttpResponse:
    """GET and PUT /api/warning-thresholds/{tenantId}: a customer's warning thresholds in days (audited)."""
    allow(req, "GET", "PUT")
    method = req.method.upper()
    who = authorize(req, Role.READ if method == "GET" else Role.OPERATE)
    tenant_id = path_guid(req, "tenantId")
    if method == "GET":
        async with invocation_services() as svc:
            _, rules = _stores(svc)
            # As PUT: a tenant the rotator does not watch has no thresholds (the defaults would read as its own).
            await registered(svc.state, tenant_id)
            chosen = (await rules.thresholds()).get(tenant_id)
        return json_response({"tenantId": tenant_id, "days": list(chosen or DEFAULT_THRESHOLDS),
                              "default": chosen is None})
    body = _object(req, {"days"})
    if "days" not in body:
        raise HttpError(422, "InvalidRequest", "missing field(s) days")
    try:
        days = parse_thresholds(body["days"])
    except InvalidRule as error:
        raise HttpError(422, error.code, error.message) from None
    async with invocation_services() as svc:
        _, rules = _stores(svc)
        await set_thresholds(rules, svc.state, tenant_id, days, who.name, svc.engine.clock.now())
    return json_response({"tenantId": tenant_id, "days": list(days), "default": False})
