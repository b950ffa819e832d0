"""POST /api/push: deliver a target's verified secret; also the Key Vault Event Grid webhook."""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import Any

import azure.functions as func

from shared.bootstrap import services
from shared.domain import Actor, target_of_secret
from shared.entrypoints.web import HttpError, allow, handled, json_response, read_json
from shared.registry import guid

log = logging.getLogger(__name__)
bp = func.Blueprint()  # type: ignore[no-untyped-call]

VALIDATION_EVENT = "Microsoft.EventGrid.SubscriptionValidationEvent"
NEW_VERSION_EVENT = "Microsoft.KeyVault.SecretNewVersionCreated"


def _events(body: Any) -> list[dict[str, Any]] | None:
    """The Event Grid events in a body, or None when it is a direct {"tenantId", "appId"} request."""
    if isinstance(body, list):
        if not body or not all(isinstance(e, dict) and isinstance(e.get("eventType"), str) for e in body):
            raise HttpError(400, "InvalidEvents", "an Event Grid delivery is a non-empty list of events")
        return body
    return None


async def _from_events(events: list[dict[str, Any]]) -> func.HttpResponse:
    for event in events:
        if event["eventType"] == VALIDATION_EVENT:
            code = (event.get("data") or {}).get("validationCode")
            if not isinstance(code, str):
                raise HttpError(400, "InvalidEvents", "the validation event carries no validationCode")
            return json_response({"validationResponse": code})
    results = []
    async with services() as svc:
        for event in events:
            if event["eventType"] != NEW_VERSION_EVENT:
                continue
            name = str((event.get("data") or {}).get("ObjectName") or "")
            target = target_of_secret(name)
            if target is None:
                results.append({"secret": name, "result": "ignored"})
                continue
            outcome = await svc.engine.push_now(*target, Actor.EVENT)
            results.append({"secret": name, "result": outcome.result})
    # Always 200 for events: Event Grid would redeliver otherwise, and the timer retries what failed.
    return json_response({"events": results})


@bp.route(route="push", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@handled
async def push(req: func.HttpRequest) -> func.HttpResponse:
    """Push one target's verified secret to its destinations, or handle Key Vault's Event Grid events."""
    allow(req, "POST")
    body = read_json(req)
    events = _events(body)
    if events is not None:
        return await _from_events(events)
    if not isinstance(body, dict) or set(body) - {"tenantId", "appId"}:
        raise HttpError(422, "InvalidRequest", 'send {"tenantId": GUID, "appId": GUID}')
    tenant_id, app_id = guid(body.get("tenantId"), "tenantId"), guid(body.get("appId"), "appId")
    async with services() as svc:
        outcome = await svc.engine.push_now(tenant_id, app_id, Actor.MANUAL)
    return json_response(asdict(outcome))
