"""The operator's HTTP API: the registry, status, manual rotations, acknowledgements, discovery, its OpenAPI document.

Each route is one function registered for every method, so a wrong method gets our 405 with `Allow` (the host
would answer an unregistered method with a bare 404). Triggers stay thin: validate, call one service function, map
the result; every client mistake is refused before anything is read or written.
"""

from __future__ import annotations

import asyncio
import functools
import json
from contextlib import AsyncExitStack
from dataclasses import asdict, replace
from datetime import timedelta
from importlib import resources
from typing import Any

import azure.functions as func

from shared import service
from shared.bootstrap import Services, invocation_services
from shared.bulk_onboarding import RUN_ID
from shared.domain import DESTINATION_NAME, GUID, ROTATION_ID, Actor, actor_of
from shared.entrypoints.access import Role, authorize, caller
from shared.entrypoints.web import (
    ALL_METHODS,
    ZERO_GUID,
    HttpError,
    allow,
    handled,
    json_response,
    path_guid,
    read_json,
)
from shared.errors import PartnerRefused
from shared.inventory_pass import forget_unregistered
from shared.offboarding import OffboardOptions, OffboardPorts, offboard, offboarded_document
from shared.ports import PartnerSession
from shared.registry import InvalidTarget, check_policy, parse_target, refuse_secret_values, target_document

bp = func.Blueprint()  # type: ignore[no-untyped-call]
# Anonymous at the Functions host; App Service Authentication signs the caller in and `authorize` checks the
# role (shared/entrypoints/access.py).
AUTH = func.AuthLevel.ANONYMOUS


def _body(req: func.HttpRequest, *, refuse_secrets: bool = True) -> Any:
    """The JSON body (415/413/400 from read_json), also refusing what json parses but cannot be stored, and (unless
    the registry checks it field by field) any string that looks like a secret value: it would be echoed or stored."""
    body = read_json(req)
    try:
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise HttpError(400, "MalformedJson", "the body holds text that is not valid Unicode") from None
    if refuse_secrets:
        try:
            refuse_secret_values(body)
        except InvalidTarget as error:
            raise HttpError(422, "InvalidRequest", error.message) from None
    return body


def _fields(body: Any, required: set[str], optional: set[str]) -> dict[str, Any]:
    """A JSON object with exactly the required fields and only known optional ones."""
    if not isinstance(body, dict):
        raise HttpError(422, "InvalidRequest", f"send a JSON object with {', '.join(sorted(required))}")
    unknown = sorted(set(body) - required - optional)
    if unknown:
        # Named back to the caller, unless a name has the shape of a secret: a route that leaves its body's secret
        # check to its fields (a run or request id is 32 hex digits) must not echo one put where a name goes.
        from shared.destinations.options import looks_like_secret

        named = [n if not looks_like_secret(n) else "(a name that looks like a secret value)" for n in unknown]
        raise HttpError(422, "InvalidRequest", f"unknown field(s) {', '.join(named)}; allowed: "
                        f"{', '.join(sorted(required | optional))}")
    missing = sorted(required - set(body))
    if missing:
        raise HttpError(422, "InvalidRequest", f"missing field(s) {', '.join(missing)}")
    return body


def _guid_field(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not GUID.fullmatch(value):
        raise HttpError(422, "InvalidRequest", f"{name} must be a GUID like {ZERO_GUID}")
    return value.lower()


def _bool_field(body: dict[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise HttpError(422, "InvalidRequest", f"{name} must be true or false")
    return value


@functools.cache
def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3 document shipped in the package (read on first use, not at import)."""
    text = resources.files("shared").joinpath("openapi.json").read_text(encoding="utf-8")
    doc: dict[str, Any] = json.loads(text)
    return doc


@bp.route(route="openapi.json", methods=ALL_METHODS, auth_level=AUTH)
@handled
async def openapi(req: func.HttpRequest) -> func.HttpResponse:
    """GET /api/openapi.json: this API's OpenAPI 3 document."""
    allow(req, "GET")
    authorize(req, Role.READ)
    return json_response(openapi_document())


@bp.route(route="me", methods=ALL_METHODS, auth_level=AUTH)
@handled
async def me(req: func.HttpRequest) -> func.HttpResponse:
    """GET /api/me: who the caller is and which of this API's roles it holds (any signed-in caller)."""
    allow(req, "GET")
    who = caller(req)
    roles = sorted(r.value for r in Role if who.has(r))
    return json_response({"name": who.name, "roles": roles, "kind": who.kind})


@bp.route(route="targets", methods=ALL_METHODS, auth_level=AUTH)
@handled
async def targets(req: func.HttpRequest) -> func.HttpResponse:
    """GET /api/targets: every registered target (the registry view)."""
    allow(req, "GET")
    authorize(req, Role.READ)
    async with invocation_services() as svc:
        found = await svc.state.list_targets()
    docs = sorted((target_document(t) for t, _ in found), key=lambda d: (d["customer"].lower(), d["tenantId"]))
    return json_response({"targets": docs})


@bp.route(route="targets/{tenantId}/{appId}", methods=ALL_METHODS, auth_level=AUTH)
@handled
async def target(req: func.HttpRequest) -> func.HttpResponse:
    """GET, PUT (create or update) and DELETE /api/targets/{tenantId}/{appId}."""
    allow(req, "GET", "PUT", "DELETE")
    method = req.method.upper()
    who = authorize(req, Role.READ if method == "GET" else Role.OPERATE)
    tenant_id, app_id = path_guid(req, "tenantId"), path_guid(req, "appId")
    if method == "PUT":
        body = _body(req, refuse_secrets=False)  # parse_target names the field
        async with invocation_services() as svc:
            settings = svc.settings
            parsed = parse_target(body, tenant_id=tenant_id, app_id=app_id,
                                  allowed_hosts=settings.destination_allowed_hosts)
            check_policy(parsed.policy, settings.renew_before_days, settings.secret_lifetime_days)
            created = await service.put_target(svc.state, parsed, actor=who.name, at=svc.engine.clock.now())
            stored, _ = await svc.state.get_target(tenant_id, app_id)
        return json_response(target_document(stored), 201 if created else 200)
    async with invocation_services() as svc:
        if method == "DELETE":
            await service.delete_target(svc.state, tenant_id, app_id, actor=who.name, at=svc.engine.clock.now())
            await forget_unregistered(svc, tenant_id)  # the tenant's last target: its inventory goes too
            return func.HttpResponse(status_code=204)
        stored, _ = await svc.state.get_target(tenant_id, app_id)
    return json_response(target_document(stored))


@bp.route(route="targets/{tenantId}/{appId}/offboard", methods=ALL_METHODS, auth_level=AUTH)
@handled
async def offboard_target(req: func.HttpRequest) -> func.HttpResponse:
    """POST /api/targets/{tenantId}/{appId}/offboard {"removeOwner"?, "removeApp"?}: remove a customer
    (Rotator.Operate). Stops rotating (a rotation in flight is compensated or kept safe), keeps the Key Vault
    versions for OFFBOARD_RETENTION_DAYS, optionally removes the rotator from the app's owners; removing the MSP
    app's service principal needs an admin of the tenant: a partner admin's dashboard sign-in (`partnerRun`) does
    it through GDAP, else the answer gives the customer's admin their command. Every step audited with the caller."""
    allow(req, "POST")
    who = authorize(req, Role.OPERATE)
    tenant_id, app_id = path_guid(req, "tenantId"), path_guid(req, "appId")
    # Nothing of the body is stored, and a run id (32 hex digits) would look like a secret value to the check.
    body = _fields(_body(req, refuse_secrets=False), set(), {"removeOwner", "removeApp", "partnerRun"})
    options = OffboardOptions(remove_owner=_bool_field(body, "removeOwner"), remove_app=_bool_field(body, "removeApp"))
    partner_run = body.get("partnerRun")
    if partner_run is not None:
        # The partner admin's dashboard sign-in (GET /api/onboarding/signin): its session, kept in Key Vault under
        # the run it made, removes the MSP app through GDAP as the CLI's `offboard --sign-in` does.
        if not isinstance(partner_run, str) or not RUN_ID.fullmatch(partner_run):
            raise HttpError(422, "InvalidRequest", "partnerRun must be the 32 hex digits of the run a partner "
                            "sign-in made (GET /api/onboarding/signin)")
        if not options.remove_app:
            raise HttpError(422, "InvalidRequest", "partnerRun serves only to remove the MSP app: set removeApp")
    async with invocation_services() as svc:
        ports = OffboardPorts(svc.state, svc.directory, svc.secrets, svc.secret_retention, svc.engine.clock.now,
                              svc.settings.msp_app_client_id, approvals=svc.approvals)
        async with AsyncExitStack() as stack:
            if partner_run is not None:
                ports = replace(ports, partner=await _partner_of_run(svc, stack, partner_run))
            try:
                result = await offboard(ports, tenant_id, app_id, options,
                                        retention_days=svc.settings.offboard_retention_days, actor=who.name)
            except PartnerRefused as refused:  # checked before anything changed: the customer stays registered
                raise HttpError(409, refused.code, f"{refused.message.rstrip('. ')}. Fix: {refused.fix}") from None
        await forget_unregistered(svc, tenant_id)  # the tenant's last target: its inventory goes too
    return json_response(offboarded_document(result))


async def _partner_of_run(svc: Services, stack: AsyncExitStack, run_id: str) -> PartnerSession:
    """The partner session a dashboard sign-in keeps under its run (closed with `stack`): 404 RunNotFound, 404
    PartnerSessionNotFound (sign in again), 409 OnboardingNotApplicable without an MSP app."""
    from shared.entrypoints.onboarding import _federated, _session  # its machinery, not a copy (no cycle at load)

    _federated(svc)
    await svc.bulk_onboarding().runs.get_run(run_id)
    session = await _session(svc, run_id)
    stack.push_async_callback(session.close)
    return session


@bp.route(route="status", methods=ALL_METHODS, auth_level=AUTH)
@handled
async def status(req: func.HttpRequest) -> func.HttpResponse:
    """GET /api/status[?status=due,expired]: lifetime, stage, last rotation and acknowledgements of every target."""
    allow(req, "GET")
    authorize(req, Role.READ)
    wanted: tuple[str, ...] = ()
    raw = req.params.get("status")
    if raw is not None:
        wanted = tuple(s.strip().lower() for s in raw.split(","))
        unknown = sorted({s for s in wanted if s not in service.STATUSES})
        if unknown:
            raise HttpError(400, "InvalidQuery", f"unknown status {', '.join(repr(s) for s in unknown)}; one or more "
                            f"of {', '.join(service.STATUSES)}, comma-separated")
    async with invocation_services() as svc:
        docs = await service.list_status(svc.state, wanted, _status_policy(svc), svc.engine.clock.now(),
                                         approvals=svc.approvals)
        from shared.tickets.service import with_tickets

        # Each target's open PSA tickets (number and link), for the dashboard: one read of the ticket book.
        docs = with_tickets(docs, await svc.tickets.open_tickets() if svc.tickets is not None else [])
    return json_response({"targets": docs})


def _status_policy(svc: Services) -> service.StatusPolicy:
    return service.StatusPolicy(
        renew_before_days=svc.settings.renew_before_days,
        stuck_after=timedelta(hours=svc.settings.stuck_after_hours),
    )


@bp.route(route="targets/{tenantId}/{appId}/details", methods=ALL_METHODS, auth_level=AUTH)
@handled
async def details(req: func.HttpRequest) -> func.HttpResponse:
    """GET /api/targets/{tenantId}/{appId}/details: one target's status, its credentials in Entra ID, its Key Vault
    versions and tags (never values), each destination's acknowledgement and its audit trail."""
    allow(req, "GET")
    authorize(req, Role.READ)
    tenant_id, app_id = path_guid(req, "tenantId"), path_guid(req, "appId")
    async with invocation_services() as svc:
        doc = await service.target_details(
            svc.state, svc.directory, svc.secrets, tenant_id, app_id, _status_policy(svc), svc.engine.clock.now(),
            approvals=svc.approvals,
        )
        from shared.tickets.service import with_tickets

        [doc] = with_tickets([doc], await svc.tickets.open_tickets() if svc.tickets is not None else [])
    return json_response(doc)


@bp.route(route="targets/{tenantId}/{appId}/proofpoint-check", methods=ALL_METHODS, auth_level=AUTH)
@handled
async def proofpoint_check(req: func.HttpRequest) -> func.HttpResponse:
    """GET /api/targets/{tenantId}/{appId}/proofpoint-check: each Proofpoint destination's sync settings as Proofpoint
    returns them and the PUT a push would send, secrets hidden; changes nothing. Rotator.Operate: it signs in to
    Proofpoint with the MSP's admin account and shows another system's configuration, as the dry run does."""
    allow(req, "GET")
    authorize(req, Role.OPERATE)
    tenant_id, app_id = path_guid(req, "tenantId"), path_guid(req, "appId")
    async with invocation_services() as svc:
        doc = await service.proofpoint_check(svc.state, svc.engine.ports.destinations, tenant_id, app_id)
    return json_response(doc)


# How long `?wait=true` works on a rotation in this invocation: under the 230 s the platform's front end gives an
# HTTP answer, with room for the reservation before and the answer after.
WAIT_SECONDS = 180


def _wait(req: func.HttpRequest) -> bool:
    raw = req.params.get("wait")
    if raw is None or raw.lower() == "false":
        return False
    if raw.lower() == "true":
        return True
    raise HttpError(400, "InvalidQuery", "wait must be true or false")


def _rotation_location(rotation_id: str) -> dict[str, str]:
    return {"Location": f"/api/rotations/{rotation_id}"}


@bp.route(route="rotations", methods=ALL_METHODS, auth_level=AUTH)
@handled
async def rotations(req: func.HttpRequest) -> func.HttpResponse:
    """POST /api/rotations[?wait=true] {"tenantId", "appId", "force"?, "dryRun"?}: rotate one target now.

    The rotation is reserved and queued for a worker: 202 Accepted at once, `Location: /api/rotations/{rotationId}`
    reporting it as it moves. With wait=true this invocation works on it (up to WAIT_SECONDS) and answers the
    outcome (200); a rotation that takes longer answers 202 and a worker finishes it. A dry run, or a rotation
    the tenant refuses before anything is reserved, answers its outcome at once (200). Never the secret."""
    allow(req, "POST")
    who = authorize(req, Role.OPERATE)
    wait = _wait(req)
    body = _fields(_body(req), {"tenantId", "appId"}, {"force", "dryRun"})
    tenant_id, app_id = _guid_field(body, "tenantId"), _guid_field(body, "appId")
    force, dry_run = _bool_field(body, "force"), _bool_field(body, "dryRun")
    actor = actor_of(Actor.MANUAL, who.name)
    async with invocation_services() as svc:
        if dry_run:
            preview = await svc.engine.rotate_now(tenant_id, app_id, force=force, dry_run=True, actor=actor)
            return json_response(asdict(preview))
        # With wait, the message is held back past this invocation's bound: a worker takes it only if we do not
        # finish (we time out, or the instance dies with the lease held).
        hold = WAIT_SECONDS + int(svc.engine.config.lease.total_seconds()) if wait else 0
        reserved, request = await service.accept_rotation(
            svc.engine, svc.work_queue, tenant_id, app_id, force=force, actor=actor, hold_seconds=hold
        )
        if request is None:
            if reserved.result == "busy":
                # Another run took the target between our check and our lease: as a rotation in flight.
                raise HttpError(409, "RotationInFlight", reserved.message or "another run holds this target")
            return json_response(asdict(reserved))
        where = _rotation_location(request.rotation_id)
        if wait:
            try:
                done = await asyncio.wait_for(svc.engine.advance(tenant_id, app_id, actor), WAIT_SECONDS)
            except TimeoutError:
                done = None
            if done is not None and done.result != "busy":
                return json_response(asdict(replace(done, rotation_id=request.rotation_id)), headers=where)
        report = await service.rotation_report(svc.state, request.rotation_id)
    return json_response(report, 202, headers={**where, "Retry-After": "5"})


@bp.route(route="rotations/{rotationId}", methods=ALL_METHODS, auth_level=AUTH)
@handled
async def rotation(req: func.HttpRequest) -> func.HttpResponse:
    """GET /api/rotations/{rotationId}: where a requested rotation stands (queued, running, needs-human,
    succeeded, failed), its stage and its steps so far."""
    allow(req, "GET")
    authorize(req, Role.READ)
    rotation_id = (req.route_params or {}).get("rotationId", "")
    if not ROTATION_ID.fullmatch(rotation_id):
        raise HttpError(400, "InvalidRotationId", "rotationId must be the 32 hexadecimal digits a rotation returned")
    async with invocation_services() as svc:
        report = await service.rotation_report(svc.state, rotation_id.lower())  # NotFound: 404
    return json_response(report)


@bp.route(route="acknowledgements", methods=ALL_METHODS, auth_level=AUTH)
@handled
async def acknowledgements(req: func.HttpRequest) -> func.HttpResponse:
    """POST /api/acknowledgements {"tenantId", "appId", "destination", "keyId"}: a human pasted the secret into a
    notify-only destination; the rotation finishes once every destination is acknowledged."""
    allow(req, "POST")
    who = authorize(req, Role.OPERATE)
    body = _fields(_body(req), {"tenantId", "appId", "destination", "keyId"}, set())
    tenant_id, app_id = _guid_field(body, "tenantId"), _guid_field(body, "appId")
    key_id = _guid_field(body, "keyId")
    destination = body["destination"]
    if not isinstance(destination, str) or not DESTINATION_NAME.fullmatch(destination):
        raise HttpError(422, "InvalidRequest", "destination must be the destination's name")
    async with invocation_services() as svc:
        outcome = await svc.engine.acknowledge(
            tenant_id, app_id, destination, key_id, actor_of(Actor.MANUAL, who.name)
        )
    return json_response({"acknowledged": True, "outcome": asdict(outcome)})


@bp.route(route="discover/{tenantId}", methods=ALL_METHODS, auth_level=AUTH)
@handled
async def discover(req: func.HttpRequest) -> func.HttpResponse:
    """GET /api/discover/{tenantId}: app registrations named like Proofpoint's, with their secrets' expiry."""
    allow(req, "GET")
    authorize(req, Role.READ)
    tenant_id = path_guid(req, "tenantId")
    async with invocation_services() as svc:
        patterns = svc.settings.discovery_name_patterns
        apps = await service.discover(svc.directory, svc.state, tenant_id, patterns, svc.engine.clock.now())
    return json_response({"tenantId": tenant_id, "patterns": list(patterns), "applications": apps})
