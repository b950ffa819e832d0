"""Pushes: `POST /api/push {"tenantId", "appId"}` for operators and automation, and Key Vault's Event Grid events
through the native Event Grid trigger (`push_events`; endpoint type AzureFunction, no webhook, no handshake).

Event Grid delivers at least once and may batch: every event is handled on its own (one bad or unknown event never
stops the others), a replayed event id is skipped (ids are kept in Tables for EVENT_SEEN_HOURS), and a normal
return acknowledges the event. An event is only retried (by raising) when it could not even be recorded as seen;
a push that fails is not retried by Event Grid: the timer pass resumes every rotation in flight.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from datetime import timedelta
from typing import Any

import azure.functions as func

from shared.bootstrap import invocation_services
from shared.domain import Actor, actor_of, target_of_secret
from shared.entrypoints.access import Role, authorize
from shared.entrypoints.web import ALL_METHODS, HttpError, allow, handled, json_response, read_json
from shared.errors import NotFound
from shared.registry import guid

log = logging.getLogger(__name__)
bp = func.Blueprint()  # type: ignore[no-untyped-call]

NEW_VERSION_EVENT = "Microsoft.KeyVault.SecretNewVersionCreated"
# Event Grid retries a delivery for up to 24 hours by default: a replay within that window is skipped.
EVENT_SEEN_HOURS = 25
_MAX_EVENT_ID = 128


@bp.route(route="push", methods=ALL_METHODS, auth_level=func.AuthLevel.ANONYMOUS)
@handled
async def push(req: func.HttpRequest) -> func.HttpResponse:
    """Push one target's verified secret to its destinations now (role Rotator.Operate)."""
    allow(req, "POST")
    who = authorize(req, Role.OPERATE)
    body = read_json(req)
    if not isinstance(body, dict) or set(body) != {"tenantId", "appId"}:
        raise HttpError(422, "InvalidRequest", 'send {"tenantId": GUID, "appId": GUID}')
    tenant_id, app_id = guid(body.get("tenantId"), "tenantId"), guid(body.get("appId"), "appId")
    async with invocation_services() as svc:
        outcome = await svc.engine.push_now(tenant_id, app_id, actor_of(Actor.MANUAL, who.name))
    return json_response(asdict(outcome))


def secret_of(event: func.EventGridEvent) -> str | None:
    """The Key Vault secret name a SecretNewVersionCreated event is about, or None for any other event."""
    if event.event_type != NEW_VERSION_EVENT:
        return None
    data: Any = event.get_json()
    name = data.get("ObjectName") if isinstance(data, dict) else None
    return name if isinstance(name, str) else None


@bp.event_grid_trigger(arg_name="event")
async def push_events(event: func.EventGridEvent) -> None:
    """Key Vault's SecretNewVersionCreated for a rotated secret: push that target's verified secret now."""
    event_id = str(event.id or "")[:_MAX_EVENT_ID]
    name = secret_of(event)
    target = target_of_secret(name) if name else None
    if target is None:
        log.info("event ignored", extra={"event": "push-event", "event_id": event_id, "event_type": event.event_type,
                                         "outcome": "ignored"})
        return
    tenant_id, app_id = target
    async with invocation_services() as svc:
        now = svc.engine.clock.now()
        if event_id and not await svc.state.claim_event(event_id, now, timedelta(hours=EVENT_SEEN_HOURS)):
            log.info("event replayed", extra={"event": "push-event", "event_id": event_id, "outcome": "duplicate",
                                              "tenant_id": tenant_id, "app_id": app_id})
            return
        try:
            outcome = await svc.engine.push_now(tenant_id, app_id, Actor.EVENT)
        except NotFound:
            outcome = None
    log.info(
        "event handled",
        extra={"event": "push-event", "event_id": event_id, "tenant_id": tenant_id, "app_id": app_id,
               "outcome": outcome.result if outcome else "unknown-target"},
    )
