"""The signed approval links of an alert or ticket (shared/approval_links.py): GET shows a confirmation page, only a
POST from that page decides.

GET /api/approval-links?link=<a1 state>: a browser without a session goes to sign in first (then back here); a
signed-in Rotator.Operate user sees the customer, the request, the expiry and force day, and one button for the
link's action (a date for postpone, a reason for reject). GET never changes anything: Safe Links and chat link
previews fetch it before a person does.
POST /api/approval-links (form: link, until?, reason?): the signed-in Rotator.Operate user decides as the link says,
once: the link's nonce is spent (an insert) after every check that can be made before deciding, so a typo in the
date does not burn the link; a replayed, tampered, expired or wrong-action link, or one for a request that is no
longer pending, decides nothing. Audited with the user and "signed link". A page, or JSON with Accept:
application/json.
"""

from __future__ import annotations

import html
import logging
from dataclasses import asdict
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

import azure.functions as func

from shared import approval_links
from shared.approval_links import LinkClaims, LinkRefused
from shared.approvals import InvalidDecision, approval_document, clean_reason, parse_until
from shared.bootstrap import Services, invocation_services
from shared.change_control import ApprovalRequest, ApprovalStatus
from shared.domain import Actor, actor_of
from shared.entrypoints.access import Role, principal
from shared.entrypoints.approvals import decide_and_reserve
from shared.entrypoints.consent import _STYLE_HASH, _wants_json, page
from shared.entrypoints.dashboard import LOGIN_PATH
from shared.entrypoints.web import ALL_METHODS, MAX_BODY_BYTES, HttpError, allow, handled, json_response
from shared.errors import Conflict, NotFound

log = logging.getLogger(__name__)
bp = func.Blueprint()  # type: ignore[no-untyped-call]
AUTH = func.AuthLevel.ANONYMOUS  # App Service Authentication signs the user in; the code checks the role
FORM = "application/x-www-form-urlencoded"
PAGE_HEADERS = {
    # The page's one form posts back here; nothing else loads or runs.
    "Content-Security-Policy": f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; base-uri 'none'; "
                               "form-action 'self'; frame-ancestors 'none'",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",  # the link must not leave in a Referer header
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}
VERBS = {"approve": "Approve", "postpone": "Postpone", "reject": "Reject"}
STATUS = {"LinkUsed": 409, "StaleRequest": 409, "NotPending": 409, "Forbidden": 403, "CrossSite": 403,
          "Unauthenticated": 401, "ApprovalNotFound": 404}


def _page(title: str, body: str, status: int = 200) -> func.HttpResponse:
    return page(title, body, status, PAGE_HEADERS)


def _refused(req: func.HttpRequest, code: str, message: str, status: int | None = None) -> func.HttpResponse:
    status = status or STATUS.get(code, 400)
    if _wants_json(req):
        return json_response({"error": {"code": code, "message": message}}, status, {"Referrer-Policy": "no-referrer"})
    return _page("Nothing decided", f"<h1 class=\"bad\">Nothing decided</h1><p>{html.escape(message)}</p>"
                 f"<p class=\"muted\">Code: <code>{html.escape(code)}</code>. Nothing was changed.</p>", status)


def _operator(req: func.HttpRequest) -> str:
    """The signed-in Rotator.Operate user's audit actor (HttpError 401/403 otherwise)."""
    who = principal(req)
    if who is None:
        raise HttpError(401, "Unauthenticated", "sign in first: approval links act as the signed-in operator")
    if not who.has(Role.OPERATE):
        raise HttpError(403, "Forbidden", f"deciding needs the app role {Role.OPERATE.value}")
    return actor_of(Actor.MANUAL, who.name)


async def _current(svc: Services, claims: LinkClaims) -> ApprovalRequest:
    """The request the link names, if it is still the customer's pending one (Conflict / NotFound otherwise)."""
    assert svc.approvals is not None
    held = await svc.approvals.get(claims.tenant_id, claims.app_id)
    if held is None:
        raise NotFound("the customer has no approval request any more (it was withdrawn)", code="ApprovalNotFound")
    request = held[0]
    if request.request_id != claims.request_id:
        raise Conflict("this link is for an older request; a newer one replaced it (see the latest alert or the "
                       "dashboard)", code="StaleRequest")
    if request.status is not ApprovalStatus.PENDING:
        by = f" by {request.decided_by}" if request.decided_by else ""
        raise Conflict(f"this request was {request.status.value}{by} already", code="NotPending")
    return request


def _when(moment: datetime | None) -> str:
    return html.escape(moment.isoformat()) if moment is not None else "unknown"


def _confirmation(link: str, claims: LinkClaims, request: ApprovalRequest) -> func.HttpResponse:
    verb = VERBS[claims.action]
    extra = ""
    if claims.action == "postpone":
        extra = ("<p><label>Postpone until <input type=\"date\" name=\"until\" required></label> "
                 "<span class=\"muted\">(its start in UTC; a new request follows then)</span></p>")
    elif claims.action == "reject":
        extra = "<p><label>Reason <input type=\"text\" name=\"reason\" maxlength=\"500\" size=\"60\"></label></p>"
    forced = f"<p>It goes ahead anyway from {_when(request.force_on)}.</p>" if request.force_on else \
        "<p class=\"bad\">This customer is set to never force: at expiry the Proofpoint sync stops.</p>"
    body = (
        f"<h1>{verb} the rotation of {html.escape(request.customer or request.tenant_id)}'s sync secret?</h1>"
        f"<p>Tenant <code>{html.escape(request.tenant_id)}</code>, app <code>{html.escape(request.app_id)}</code>, "
        f"request <code>{html.escape(request.request_id)}</code>, asked at {_when(request.requested_at)}.</p>"
        f"<p>The secret expires at {_when(request.expires)}.</p>{forced}"
        f"<form method=\"post\" action=\"{approval_links.PATH}\">"
        f"<input type=\"hidden\" name=\"link\" value=\"{html.escape(link)}\">{extra}"
        f"<p><button type=\"submit\">{verb}</button></p></form>"
        "<p class=\"muted\">Nothing happens until you press the button; the link works once.</p>"
    )
    return _page(f"{verb} a rotation", body)


@bp.route(route="approval-links", methods=ALL_METHODS, auth_level=AUTH)
@handled
async def approval_link(req: func.HttpRequest) -> func.HttpResponse:
    """GET /api/approval-links?link=...: the confirmation page; POST: decide as the link says (see the module)."""
    allow(req, "GET", "POST")
    if req.method.upper() == "GET":
        return await _show(req)
    return await _act(req)


async def _show(req: func.HttpRequest) -> func.HttpResponse:
    link = req.params.get("link") or ""
    if principal(req) is None:
        back = f"{approval_links.PATH}?{urlencode({'link': link})}"
        return func.HttpResponse(status_code=302, headers={
            **PAGE_HEADERS, "Location": f"{LOGIN_PATH}?{urlencode({'post_login_redirect_uri': back})}"})
    try:
        _operator(req)
        async with invocation_services() as svc:
            claims = await approval_links.verified(svc.consent_keys, link, svc.engine.clock.now())
            request = await _current(svc, claims)
    except LinkRefused as refusal:
        return _refused(req, refusal.code, refusal.message)
    except (HttpError, Conflict, NotFound) as error:
        return _refused(req, error.code, error.message)
    if _wants_json(req):
        return json_response({"action": claims.action, "approval": approval_document(request)},
                             headers={"Referrer-Policy": "no-referrer"})
    return _confirmation(link, claims, request)


def _form(req: func.HttpRequest) -> dict[str, str]:
    content_type = (req.headers.get("content-type") or "").split(";")[0].strip().lower()
    if content_type != FORM:
        raise HttpError(415, "UnsupportedMediaType", f"send the confirmation page's form ({FORM})")
    raw = req.get_body() or b""
    if len(raw) > MAX_BODY_BYTES:
        raise HttpError(413, "PayloadTooLarge", f"the body is larger than {MAX_BODY_BYTES} bytes")
    try:
        fields = parse_qs(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=False, max_num_fields=10)
    except (UnicodeDecodeError, ValueError):
        raise HttpError(400, "MalformedForm", "the form is not UTF-8 form data") from None
    if any(len(values) != 1 for values in fields.values()):
        raise HttpError(400, "MalformedForm", "the form names a field twice")
    if set(fields) - {"link", "until", "reason"}:
        raise HttpError(422, "InvalidRequest", "the form carries link, until and reason only")
    return {name: values[0] for name, values in fields.items()}


def _same_site(req: func.HttpRequest) -> None:
    """A browser's cross-site POST is refused (the form posts from this app's own page); a client that sends
    neither header (automation) passes: it still needs an operator's sign-in and a link."""
    site = (req.headers.get("sec-fetch-site") or "").lower()
    origin = req.headers.get("origin")
    host = urlparse(req.url).netloc
    # With Referrer-Policy no-referrer a browser's own same-origin form POST carries `Origin: null`, so Sec-Fetch-Site
    # (sent by current Chromium, Firefox and Safari) decides; Origin only where it names another site.
    cross = site in ("cross-site", "same-site")
    if cross or (not site and origin and origin != "null" and urlparse(origin).netloc != host):
        raise HttpError(403, "CrossSite", "decisions are taken from the rotator's own confirmation page only")


async def _act(req: func.HttpRequest) -> func.HttpResponse:
    try:
        actor = _operator(req)
        _same_site(req)
        form = _form(req)
    except HttpError as error:
        return _refused(req, error.code, error.message, error.status)
    link, until, reason = form.get("link", ""), form.get("until") or None, form.get("reason") or None
    async with invocation_services() as svc:
        now = svc.engine.clock.now()
        try:
            claims = await approval_links.verified(svc.consent_keys, link, now)
            # Every check that can come before deciding comes before the link is spent.
            if claims.action == "postpone":
                parse_until(until, now)
            elif until is not None:
                raise InvalidDecision("InvalidUntil", "until goes with postpone only")
            clean_reason(reason)
            await _current(svc, claims)
            assert svc.approvals is not None
            await svc.approvals.use_link(claims.nonce, claims.expires)
            decided, outcome = await decide_and_reserve(svc, claims.tenant_id, claims.app_id, claims.request_id,
                                                        claims.action, actor=actor, until=until, reason=reason,
                                                        via="signed link")
        except LinkRefused as refusal:
            return _refused(req, refusal.code, refusal.message)
        except InvalidDecision as error:
            return _refused(req, error.code, error.message, 400)
        except (HttpError, Conflict, NotFound) as error:
            return _refused(req, error.code, error.message)
    log.info("approval link used: %s %s/%s", claims.action, claims.tenant_id, claims.app_id)
    return _done(req, decided, asdict(outcome))


def _done(req: func.HttpRequest, decided: ApprovalRequest, outcome: dict[str, Any]) -> func.HttpResponse:
    if _wants_json(req):
        return json_response({"approval": approval_document(decided), "outcome": outcome},
                             headers={"Referrer-Policy": "no-referrer"})
    what = {ApprovalStatus.APPROVED: "Approved: the rotation is reserved and runs now",
            ApprovalStatus.POSTPONED: f"Postponed until {_when(decided.until)}; a new request follows then",
            ApprovalStatus.REJECTED: "Rejected: the rotator leaves this key alone unless its force day comes"}
    return _page("Decided", f"<h1 class=\"ok\">{html.escape(what.get(decided.status, decided.status.value))}</h1>"
                 f"<p>By {html.escape(decided.decided_by)} at {_when(decided.decided_at)}, audited.</p>")

