"""Customer consent: GET /api/consent-url/{tenantId} (an operator makes a link) and GET /api/consent (where Entra's
admin-consent endpoint returns the customer's admin, the answer to the portal's CONFIGURE button).

/api/consent also takes the answer to the consent page's second click (a one-visit state, shared.onevisit): the
same admin signed in at their tenant, the rotator adds itself as owner, registers the app, dry-runs it, and says so.

/api/consent is anonymous at the host and excluded from App Service Authentication (a browser redirect from Entra
carries neither a function key nor a sign-in); it trusts only a state the rotator signed (shared.consent). It
answers with a page (or JSON when the client asks for it with `Accept: application/json`), served with no script,
a strict Content-Security-Policy, `no-store` and `no-referrer` (the URL holds the single-use state).
"""

from __future__ import annotations

import base64
import hashlib
import html
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import azure.functions as func

from shared import onboarding, onevisit
from shared.bootstrap import Services, invocation_services, visit_ports
from shared.consent import ConsentRefused
from shared.entrypoints.access import Role, authorize
from shared.entrypoints.web import ALL_METHODS, HttpError, allow, handled, json_response, path_guid
from shared.onboarding import ConsentResult, ConsentUnavailable

log = logging.getLogger(__name__)
bp = func.Blueprint()  # type: ignore[no-untyped-call]

STYLE = (
    "body{font:15px/1.5 system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;background:#f5f6f8;color:#1c2330}"
    "main{max-width:960px;margin:40px auto;background:#fff;border:1px solid #dde1e7;border-radius:8px;padding:28px}"
    "h1{font-size:22px;margin:0 0 6px}h2{font-size:17px;margin:24px 0 8px}p{margin:6px 0}"
    ".ok{color:#136c2e}.bad{color:#a4262c}.muted{color:#5b6472}code{font-size:13px;background:#f0f2f5;"
    "padding:1px 4px;border-radius:3px}table{border-collapse:collapse;width:100%;margin-top:8px}"
    "th,td{text-align:left;vertical-align:top;padding:8px;border-bottom:1px solid #e6e9ee;font-size:14px}"
    "th{background:#f7f8fa;font-weight:600}.soon{color:#8a5300;font-weight:600}.expired{color:#a4262c;"
    "font-weight:600}"
    "a.button{display:inline-block;margin-top:6px;padding:6px 12px;border-radius:4px;background:#0f5bbf;color:#fff;"
    "text-decoration:none;font-weight:600}ol.steps li{margin:6px 0}.fix{color:#5b6472}"
)
_STYLE_HASH = base64.b64encode(hashlib.sha256(STYLE.encode("utf-8")).digest()).decode("ascii")
PAGE_HEADERS = {
    "Content-Security-Policy": f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}
# How each refusal is answered: a replayed link conflicts with what it already did; the rest are bad answers.
STATUS = {"StateReplayed": 409}


def _wants_json(req: func.HttpRequest) -> bool:
    accept = (req.headers.get("accept") or "").lower()
    return "application/json" in accept and "text/html" not in accept


def page(title: str, body: str, status: int = 200, headers: Mapping[str, str] = PAGE_HEADERS) -> func.HttpResponse:
    """A page of the rotator's own: `body` inside its frame and style, with the given security headers."""
    document = (
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{html.escape(title)} · sync-secret rotator</title><style>{STYLE}</style></head>"
        f"<body><main>{body}</main></body></html>"
    )
    return func.HttpResponse(document, status_code=status, mimetype="text/html", charset="utf-8",
                             headers=dict(headers))


def _sentence(text: str) -> str:
    text = text[:1].upper() + text[1:]
    return text if text.endswith((".", ")")) else text + "."


def _refused(req: func.HttpRequest, refusal: ConsentRefused) -> func.HttpResponse:
    status = STATUS.get(refusal.code, 400)
    if _wants_json(req):
        return json_response({"error": {"code": refusal.code, "message": refusal.message}}, status,
                             {"Referrer-Policy": "no-referrer"})
    body = (
        "<h1 class=\"bad\">Consent not completed</h1>"
        f"<p>{html.escape(_sentence(refusal.message))}</p>"
        f"<p class=\"muted\">Code: <code>{html.escape(refusal.code)}</code>. Nothing was changed.</p>"
    )
    return page("Consent not completed", body, status)


def _result_document(result: ConsentResult, links: dict[str, str]) -> dict[str, Any]:
    return {
        "tenantId": result.consent.tenant_id,
        "consentedAt": result.consent.consented_at.isoformat(),
        "owner": result.owner,
        "discoveryError": result.discovery_error,
        "applications": [
            {**c.app, "ownedByRotator": c.owned, "nextStep": c.next_step, "command": c.command or None,
             "secondClick": links.get(c.app["appId"])}
            for c in result.candidates
        ],
    }


def _expiry_cell(app: dict[str, Any]) -> str:
    credentials = app["credentials"]
    if not credentials:
        return "<span class=\"expired\">no secret</span>"
    lines = []
    for c in credentials:
        days = c["daysLeft"]
        css = "expired" if c["expired"] else "soon" if days <= 30 else ""
        when = "expired" if c["expired"] else f"{days} days left"
        lines.append(f"<span class=\"{css}\">{html.escape(c['end'][:10])} ({when})</span>")
    return "<br>".join(lines)


def _success_page(result: ConsentResult, patterns: tuple[str, ...], links: dict[str, str]) -> func.HttpResponse:
    tenant = html.escape(result.consent.tenant_id)
    parts = [
        "<h1 class=\"ok\">Consent recorded</h1>",
        f"<p>Tenant <code>{tenant}</code> consented to the MSP's rotator app on "
        f"{html.escape(result.consent.consented_at.strftime('%Y-%m-%d %H:%M UTC'))}. You may close this page: "
        "your MSP continues from here.</p>",
        "<h2>Proofpoint app registrations in this tenant</h2>",
    ]
    if result.discovery_error is not None:
        parts.append(
            "<p class=\"bad\">The rotator could not list the tenant's app registrations yet: "
            f"{html.escape(result.discovery_error['message'])} "
            f"(<code>{html.escape(result.discovery_error['code'])}</code>).</p>"
            "<p>Consent can take a few minutes to reach Microsoft Graph. Your MSP can look again with "
            f"<code>GET /api/discover/{tenant}</code>.</p>"
        )
    elif not result.candidates:
        names = ", ".join(f"{html.escape(p)}…" for p in patterns)
        parts.append(
            f"<p>No app registration named like Proofpoint's ({names}). Set up Azure AD sync in Proofpoint "
            "Essentials first (it creates the app registration), or tell your MSP its name.</p>"
        )
    else:
        rows = []
        for c in result.candidates:
            owned = {True: "yes", False: "no", None: "unknown"}[c.owned]
            rows.append(
                f"<tr><td>{html.escape(c.app['displayName'])}<br><code>{html.escape(c.app['appId'])}</code></td>"
                f"<td>{_expiry_cell(c.app)}</td><td>{owned}</td><td>{_next_step(c, links.get(c.app['appId']))}"
                "</td></tr>"
            )
        parts.append(
            "<table><thead><tr><th>App registration</th><th>Secrets expire</th><th>Rotator is owner</th>"
            f"<th>Next step</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
        )
    if any(c.owned is not True for c in result.candidates):
        parts.append(f"<p class=\"muted\">The owner to add is {html.escape(result.owner)}: the rotator may change "
                     "only the secrets of apps it owns (Application.ReadWrite.OwnedBy).</p>")
    return page("Consent recorded", "".join(parts), 200)


def _next_step(c: onboarding.Candidate, link: str | None) -> str:
    if link:
        # A plain link (no script, no form): Entra's sign-in at the tenant, which returns here with a code.
        return (f"<a class=\"button\" href=\"{html.escape(link)}\">Add the rotator as owner and register</a>"
                "<br><span class=\"muted\">Sign in again as an admin of this tenant (Application Administrator, "
                "Cloud Application Administrator or Global Administrator); the rotator adds itself as owner of this "
                "app and registers it. Or by hand:</span>"
                + (f"<br><code>{html.escape(c.command)}</code>" if c.command else ""))
    return html.escape(c.next_step) + (f"<br><code>{html.escape(c.command)}</code>" if c.command else "")


async def _second_click_links(svc: Services, result: ConsentResult, now: datetime) -> dict[str, str]:
    """The second click's link for each app the rotator does not watch yet (by app id)."""
    apps = [c.app["appId"] for c in result.candidates if not c.app["registered"]]
    return await _links(svc, result.consent.tenant_id, apps, now) if apps else {}


async def _links(svc: Services, tenant_id: str, apps: list[str], now: datetime | None = None) -> dict[str, str]:
    s = svc.settings
    return await onevisit.owner_links(svc.consent_keys, s.authority_host, s.msp_app_client_id, s.consent_redirect_uri,
                                      tenant_id, apps, now or svc.engine.clock.now())


_OUTCOME = {"done": "Done", "already": "Already so", "failed": "Failed", "skipped": "Not done"}


def _visit_document(result: onevisit.VisitResult, retry: str | None) -> dict[str, Any]:
    return {
        "tenantId": result.tenant_id, "appId": result.app_id, "appName": result.app_name, "admin": result.admin,
        "ok": result.ok, "retry": retry,
        "steps": [{"name": s.name, "outcome": s.outcome, "detail": s.detail, "fix": s.fix or None,
                   "code": s.code or None} for s in result.steps],
    }


def _visit_page(result: onevisit.VisitResult, retry: str | None) -> func.HttpResponse:
    title = "Rotator added as owner and registered" if result.ok else "Not completed"
    named = f"{result.app_name} (app id {result.app_id})" if result.app_name else f"app id {result.app_id}"
    items = []
    for step in result.steps:
        css = "ok" if step.outcome in ("done", "already") else "bad"
        items.append(
            f"<li><strong class=\"{css}\">{_OUTCOME.get(step.outcome, step.outcome)}</strong> "
            f"({html.escape(step.name)}): {html.escape(_sentence(step.detail))}"
            + (f"<br><span class=\"fix\">What to do: {html.escape(_sentence(step.fix))}</span>" if step.fix else "")
            + (f" <code>{html.escape(step.code)}</code>" if step.code else "") + "</li>")
    body = (
        f"<h1 class=\"{'ok' if result.ok else 'bad'}\">{title}</h1>"
        f"<p>Tenant <code>{html.escape(result.tenant_id)}</code>, {html.escape(named)}"
        + (f", signed in as {html.escape(result.admin)}" if result.admin else "") + ".</p>"
        f"<ol class=\"steps\">{''.join(items)}</ol>"
        + ("<p>You may close this page: the rotator now looks after this app's secret.</p>" if result.ok else "")
        + (f"<p><a class=\"button\" href=\"{html.escape(retry)}\">Sign in again and retry</a></p>" if retry else "")
        + "<p class=\"muted\">Your sign-in was used for this page only and is not kept.</p>"
    )
    return page(title, body, 200)


async def _second_click(req: func.HttpRequest, params: dict[str, str]) -> func.HttpResponse:
    """The answer to the second click (a one-visit state): sign-in, owner, registration, dry run."""
    async with invocation_services() as svc:
        try:
            result = await onevisit.complete(visit_ports(svc), params, svc.engine.clock.now())
        except ConsentRefused as refusal:
            log.warning("second click refused: %s", refusal.code)
            return _refused(req, refusal)
        # A state is good once, so a failed visit offers a fresh link: the admin may retry at once (another account).
        retry = (await _links(svc, result.tenant_id, [result.app_id]))[result.app_id] if result.retryable else None
    log.info("second click for tenant %s app %s: %s", result.tenant_id, result.app_id,
             ", ".join(f"{s.name} {s.outcome}" for s in result.steps))
    if _wants_json(req):
        return json_response(_visit_document(result, retry))
    return _visit_page(result, retry)


@bp.route(route="consent", methods=ALL_METHODS, auth_level=func.AuthLevel.ANONYMOUS)
@handled
async def consent(req: func.HttpRequest) -> func.HttpResponse:
    """GET /api/consent?admin_consent=True&tenant=…&state=… (or error, error_description, state): Entra's answer to
    an admin-consent link."""
    allow(req, "GET")
    params = {k: v for k, v in req.params.items() if isinstance(v, str)}
    if onevisit.is_visit_state(params.get("state") or ""):
        return await _second_click(req, params)
    async with invocation_services() as svc:
        now = svc.engine.clock.now()
        owner = f"the MSP app's service principal (app id {svc.settings.msp_app_client_id})"
        try:
            result = await onboarding.complete_consent(
                svc.consent_keys, svc.consents, svc.directory, svc.state, params, now,
                svc.settings.discovery_name_patterns, owner,
            )
        except ConsentRefused as refusal:
            log.warning("consent answer refused: %s", refusal.code)
            return _refused(req, refusal)
        log.info("consent recorded for tenant %s; %d candidate app(s)", result.consent.tenant_id,
                 len(result.candidates))
        links = await _second_click_links(svc, result, now)
        if _wants_json(req):
            return json_response(_result_document(result, links))
        return _success_page(result, svc.settings.discovery_name_patterns, links)


@bp.route(route="consent-url/{tenantId}", methods=ALL_METHODS, auth_level=func.AuthLevel.ANONYMOUS)
@handled
async def consent_url(req: func.HttpRequest) -> func.HttpResponse:
    """GET /api/consent-url/{tenantId}: a signed admin-consent link for a customer tenant (Rotator.Operate)."""
    allow(req, "GET")
    authorize(req, Role.OPERATE)
    tenant_id = path_guid(req, "tenantId")
    async with invocation_services() as svc:
        try:
            link = await onboarding.consent_link(svc.consent_keys, svc.settings, tenant_id, svc.engine.clock.now())
        except ConsentUnavailable as error:
            raise HttpError(409, error.code, error.message) from None
        recorded = await svc.consents.consent(tenant_id)
    link["consentedAt"] = recorded.consented_at.isoformat() if recorded else None
    return json_response(link)

