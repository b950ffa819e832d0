"""The alert channel's HTTP route: an operator sends a test alert to see that alerts reach people."""

from __future__ import annotations

import azure.functions as func

from shared.bootstrap import invocation_services
from shared.entrypoints.access import Role, authorize
from shared.entrypoints.web import ALL_METHODS, HttpError, allow, handled, json_response, read_json

bp = func.Blueprint()  # type: ignore[no-untyped-call]


@bp.route(route="alerts/test", methods=ALL_METHODS, auth_level=func.AuthLevel.ANONYMOUS)
@handled
async def alert_test(req: func.HttpRequest) -> func.HttpResponse:
    """POST /api/alerts/test: post a test alert to the configured channel (audited with the caller); answers what
    was sent, the channel kind and the channel's HTTP status, never the webhook URL. 409 NoAlertChannel without one."""
    allow(req, "POST")
    who = authorize(req, Role.OPERATE)
    if req.get_body() and read_json(req) != {}:
        raise HttpError(422, "InvalidRequest", "send no body, or an empty JSON object: the test alert's text is the "
                        "rotator's own")
    from shared.alerts import send_test_alert

    async with invocation_services() as svc:
        channel = svc.alerts.channel if svc.alerts is not None else None
        answer = await send_test_alert(channel, svc.state, who.name, svc.engine.clock.now())
    return json_response(answer)
