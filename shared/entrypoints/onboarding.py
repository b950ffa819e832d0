"""Bulk onboarding over HTTP: the runs and their progress, and, for a run the partner admin signed in for on the
dashboard (GET /api/onboarding/signin, shared/entrypoints/partner_signin.py), its customers, its start and its
resumes.

Rotator.Read watches (the run list, one run's progress); Rotator.Operate acts. The partner session a run needs
between invocations is kept in Key Vault under the run's name (shared.bulk_onboarding, PartnerSessions); each
invocation opens it, works for at most BUDGET_SECONDS (an HTTP request is cut at 230 s), and closes it. A run still
running answers 202 with Retry-After: the page calls resume again. The session is forgotten when the run finishes,
unless the admin asked to keep it (keepSession), then until DELETE .../session.
"""

from __future__ import annotations

import logging
import time
from typing import Any
from urllib.parse import urlencode

import azure.functions as func

from shared.bootstrap import Services, invocation_services
from shared.bulk_onboarding import (
    RUN_CURSOR,
    RUN_ID,
    BulkOnboarding,
    RunState,
    customers_document,
    disabled_tenants,
    parse_picks,
    release_session,
    session_expiry,
    session_secret_name,
)
from shared.entrypoints.access import Role, authorize
from shared.entrypoints.api import _body, _bool_field, _fields
from shared.entrypoints.web import ALL_METHODS, HttpError, allow, handled, json_response, read_json
from shared.errors import NotFound
from shared.ports import InstallMethod, PartnerSession
from shared.settings import IdentityMode

log = logging.getLogger(__name__)
bp = func.Blueprint()  # type: ignore[no-untyped-call]
AUTH = func.AuthLevel.ANONYMOUS  # App Service Authentication signs in; `authorize` checks the role
BUDGET_SECONDS = 150.0  # no tenant is started after this in one request, counted from the request's start
# (the platform cuts requests at 230 s)
RETRY_AFTER = "2"


def _run_id(req: func.HttpRequest) -> str:
    value = (req.route_params or {}).get("runId")
    if not isinstance(value, str) or not RUN_ID.fullmatch(value):
        raise HttpError(400, "InvalidRunId", "runId must be the 32 hex digits of an onboarding run")
    return value


def _is_method(value: object) -> bool:
    """An install method's name: a string (never a set lookup of an unhashable value), one of InstallMethod."""
    return isinstance(value, str) and value in {m.value for m in InstallMethod}


def _federated(svc: Services) -> None:
    if svc.settings.identity_mode is not IdentityMode.FEDERATED:
        raise HttpError(409, "OnboardingNotApplicable", "IDENTITY_MODE is managed-identity: the rotator works in its "
                        "own tenant only, and there is no MSP app for customer tenants (infra/README.md)")


async def _session(svc: Services, run_id: str) -> PartnerSession:
    """The run's kept partner session (404 PartnerSessionNotFound: sign in again for this run)."""
    if svc.partner_sessions is None:
        raise HttpError(503, "PartnerSessionUnavailable", "this build cannot keep a partner session between requests "
                        "(no delegated adapter); run the onboarding from the command line: python -m shared onboard")
    try:
        return await svc.partner_sessions.open(session_secret_name(run_id))
    except NotFound:
        raise HttpError(404, "PartnerSessionNotFound", f"no partner session is kept for run {run_id}: sign in again "
                        f"(GET /api/onboarding/signin?run={run_id})") from None


def _progress(doc: dict[str, Any]) -> func.HttpResponse:
    if doc["state"] == RunState.RUNNING.value:
        return json_response(doc, 202, {"Retry-After": RETRY_AFTER,
                                        "Location": f"/api/onboarding/runs/{doc['runId']}"})
    return json_response(doc)


async def _work(svc: Services, engine: BulkOnboarding, session: PartnerSession, run_id: str,
                began: float) -> dict[str, Any]:
    # The budget counts from the request's start: a start first reads every GDAP customer and writes a row per
    # tenant (minutes for thousands), which the platform's 230 s cut counts too.
    doc = await engine.work(session, run_id, budget_seconds=BUDGET_SECONDS - (time.monotonic() - began))
    if svc.partner_sessions is not None:
        await release_session(engine.runs, svc.partner_sessions, run_id)
    return doc


RUNS_PAGE, RUNS_MAX_PAGE = 20, 100


@bp.route(route="onboarding/runs", methods=ALL_METHODS, auth_level=AUTH)
@handled
async def onboarding_runs(req: func.HttpRequest) -> func.HttpResponse:
    """GET /api/onboarding/runs[?limit=&cursor=]: a page of onboarding runs, newest first, with their counts, and
    the cursor of the next page (Rotator.Read). A page costs the same whatever the history."""
    allow(req, "GET")
    authorize(req, Role.READ)
    params = dict(req.params)
    unknown = sorted(set(params) - {"limit", "cursor"})
    if unknown:
        raise HttpError(400, "InvalidQuery", f"unknown parameter(s) {', '.join(unknown)}; allowed: cursor, limit")
    limit_text = params.get("limit", str(RUNS_PAGE))
    # ASCII digits only: int() also takes " 7", "1_0", "+7" and other scripts' digits
    if not (limit_text.isascii() and limit_text.isdigit()) or not 1 <= (limit := int(limit_text)) <= RUNS_MAX_PAGE:
        raise HttpError(400, "InvalidQuery", f"limit must be a whole number from 1 to {RUNS_MAX_PAGE}")
    cursor = params.get("cursor") or None
    if cursor is not None and not RUN_CURSOR.fullmatch(cursor):
        raise HttpError(400, "InvalidQuery", "cursor is not of the form this API gives (the `next` of a previous page)")
    async with invocation_services() as svc:
        engine = svc.bulk_onboarding()
        runs, next_cursor = await engine.runs.list_runs(limit, cursor)
        docs = [await engine.summary(r) for r in runs]
    headers = {}
    if next_cursor:
        # RFC 8288, as GET /api/inventory: a client follows rel="next" until there is none.
        headers["Link"] = f'</api/onboarding/runs?{urlencode({"limit": limit, "cursor": next_cursor})}>; rel="next"'
    return json_response({"runs": docs, "next": next_cursor}, headers=headers)


@bp.route(route="onboarding/runs/{runId}", methods=ALL_METHODS, auth_level=AUTH)
@handled
async def onboarding_run(req: func.HttpRequest) -> func.HttpResponse:
    """GET /api/onboarding/runs/{runId}: the run's progress, tenant by tenant, step by step (Rotator.Read)."""
    allow(req, "GET")
    authorize(req, Role.READ)
    run_id = _run_id(req)
    async with invocation_services() as svc:
        return json_response(await svc.bulk_onboarding().progress(run_id))


@bp.route(route="onboarding/runs/{runId}/customers", methods=ALL_METHODS, auth_level=AUTH)
@handled
async def onboarding_customers(req: func.HttpRequest) -> func.HttpResponse:
    """GET /api/onboarding/runs/{runId}/customers: the partner's GDAP customers as the run's admin sees them, the
    roles held in each, what is missing, and whether each is registered (Rotator.Operate: it uses the admin's
    delegated session)."""
    allow(req, "GET")
    authorize(req, Role.OPERATE)
    run_id = _run_id(req)
    method = req.params.get("method") or InstallMethod.PARTNER_CENTER.value
    if not _is_method(method):
        raise HttpError(400, "InvalidQuery", "method must be graph or partner-center")
    async with invocation_services() as svc:
        _federated(svc)
        engine = svc.bulk_onboarding()
        run, _ = await engine.runs.get_run(run_id)
        session = await _session(svc, run_id)
        try:
            customers = await session.customers()
        finally:
            await session.close()
        targets = [t for t, _ in await svc.state.list_targets()]
    registered = {t.tenant_id.lower() for t in targets}
    return json_response({"runId": run_id, "admin": run.admin_upn, "method": method,
                          "customers": customers_document(customers, registered, InstallMethod(method),
                                                          disabled_tenants(targets))})


@bp.route(route="onboarding/runs/{runId}/start", methods=ALL_METHODS, auth_level=AUTH)
@handled
async def onboarding_start(req: func.HttpRequest) -> func.HttpResponse:
    """POST /api/onboarding/runs/{runId}/start {tenants, method?, planOnly?, keepSession?}: start the signed-in run
    with the customers picked (or "all") and work on it for up to BUDGET_SECONDS (Rotator.Operate)."""
    began = time.monotonic()
    allow(req, "POST")
    operator = authorize(req, Role.OPERATE)
    run_id = _run_id(req)
    body = _fields(_body(req), {"tenants"}, {"method", "planOnly", "keepSession"})
    try:
        picks = parse_picks(body["tenants"])
    except ValueError as error:
        raise HttpError(422, "InvalidRequest", str(error)) from None
    method = body.get("method", InstallMethod.PARTNER_CENTER.value)
    if not _is_method(method):  # any JSON type may come: a list or an object is not hashable
        raise HttpError(422, "InvalidRequest", "method must be graph or partner-center")
    plan_only, keep = _bool_field(body, "planOnly"), _bool_field(body, "keepSession")
    async with invocation_services() as svc:
        _federated(svc)
        engine = svc.bulk_onboarding()
        session = await _session(svc, run_id)
        try:
            run = await engine.start(session, picks, InstallMethod(method), plan_only=plan_only, keep_session=keep,
                                     run_id=run_id)
            if keep and svc.partner_sessions is not None:  # kept for the token's lifetime, not the run's hours
                await svc.partner_sessions.keep(session_secret_name(run_id), session,
                                                session_expiry(run, engine.clock.now()))
            log.info("onboarding run started on the dashboard", extra={
                "event": "onboarding-run", "run_id": run_id, "actor": operator.name})
            doc = await _work(svc, engine, session, run_id, began)
        finally:
            await session.close()
    return _progress(doc)


@bp.route(route="onboarding/runs/{runId}/resume", methods=ALL_METHODS, auth_level=AUTH)
@handled
async def onboarding_resume(req: func.HttpRequest) -> func.HttpResponse:
    """POST /api/onboarding/runs/{runId}/resume: work on the tenants not onboarded yet (pending, interrupted, failed)
    for up to BUDGET_SECONDS (Rotator.Operate)."""
    began = time.monotonic()
    allow(req, "POST")
    authorize(req, Role.OPERATE)
    run_id = _run_id(req)
    if req.get_body() and read_json(req) != {}:
        raise HttpError(422, "InvalidRequest", "resume takes no body, or an empty JSON object")
    async with invocation_services() as svc:
        _federated(svc)
        engine = svc.bulk_onboarding()
        await engine.runs.get_run(run_id)  # 404 RunNotFound before a session is looked for
        session = await _session(svc, run_id)
        try:
            doc = await _work(svc, engine, session, run_id, began)
        finally:
            await session.close()
    return _progress(doc)


@bp.route(route="onboarding/runs/{runId}/session", methods=ALL_METHODS, auth_level=AUTH)
@handled
async def onboarding_session(req: func.HttpRequest) -> func.HttpResponse:
    """DELETE /api/onboarding/runs/{runId}/session: forget the run's kept partner session now (its refresh token's
    Key Vault secret is deleted); 204 also when none was kept (Rotator.Operate)."""
    allow(req, "DELETE")
    operator = authorize(req, Role.OPERATE)
    run_id = _run_id(req)
    async with invocation_services() as svc:
        engine = svc.bulk_onboarding()
        await engine.runs.get_run(run_id)
        if svc.partner_sessions is not None:
            await release_session(engine.runs, svc.partner_sessions, run_id, force=True)
    log.info("onboarding session forgotten", extra={"event": "onboarding-session", "run_id": run_id,
                                                     "actor": operator.name})
    return func.HttpResponse(status_code=204, headers={"Cache-Control": "no-store"})
