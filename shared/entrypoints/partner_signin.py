"""The partner admin's web sign-in for bulk onboarding: GET /api/onboarding/signin and GET /api/onboarding/callback.

An operator of the dashboard (Rotator.Operate, a person: App Service Authentication's session) opens the sign-in; it
sends the browser to Entra's authorize endpoint of the partner (MSP) tenant, where the partner admin signs in (the
same person or another account of the partner tenant). Entra returns the browser to the callback, which trusts the
answer only with a state this rotator signed for this operator (shared.onboarding_signin: expiry, operator, once),
redeems the code with the PKCE verifier, and hands the partner session to bulk onboarding.

Both routes answer a browser navigation: failures are a short page (JSON when the client asks for it) with the code,
served with no script, `no-store` and `no-referrer` (the callback's URL carries the code and the state). A success is
a 303 to the dashboard's onboarding view, so the callback's URL does not stay in the browser's history.
"""

from __future__ import annotations

import html
import logging
from functools import partial
from urllib.parse import urlsplit

import azure.functions as func

from shared import onboarding_signin as signin
from shared.adapters.delegated import SIGN_IN_SCOPES
from shared.bootstrap import Services, invocation_services
from shared.bulk_onboarding import RUN_ID, signed_in
from shared.entrypoints.access import Caller, Role, authorize
from shared.entrypoints.consent import _wants_json, page
from shared.entrypoints.web import ALL_METHODS, HttpError, allow, handled, json_response
from shared.errors import Conflict, NotFound, RotationError
from shared.settings import IdentityMode, Settings

log = logging.getLogger(__name__)
bp = func.Blueprint()  # type: ignore[no-untyped-call]

CALLBACK_PATH = "/api/onboarding/callback"
DASHBOARD_VIEW = "/api/dashboard#/onboarding"


async def handoff(svc: Services, operator: str, redemption: signin.Redemption) -> str:
    """Redeem the code as the rotator's confidential client (shared.adapters.delegated, with the managed identity's
    client assertion), open the partner admin's GDAP session, and hand it to bulk onboarding: a new run signed in
    with no customer picked yet, or the run to resume, its session kept in Key Vault under the run's name
    (shared.bulk_onboarding.signed_in). Where the dashboard goes next: that run's page."""
    if svc.partner_sessions is None or svc.onboarding_runs is None:
        raise RotationError("this deployment keeps no partner session between requests (IDENTITY_MODE is not "
                            "federated)", code="PartnerSessionUnavailable")
    delegated = svc.delegated_sign_in(confidential=True)
    await delegated.redeem_code(redemption.code, redemption.redirect_uri, redemption.code_verifier)
    session = svc.partner_session(delegated)
    try:
        run = await signed_in(svc.onboarding_runs, svc.partner_sessions, session, svc.engine.clock, redemption.run_id)
    except (Conflict, NotFound) as refused:
        raise signin.SignInRefused(refused.code, refused.message, 409 if isinstance(refused, Conflict)
                                   else 404) from None
    finally:
        await session.close()  # the run's copy is in Key Vault; this one's tokens are forgotten
    # Who on the dashboard let which partner admin in, for which run (the run itself names the partner admin).
    log.info("partner session handed to bulk onboarding", extra={
        "event": "onboarding-signin", "actor": operator, "admin": session.admin.user_principal_name,
        "run_id": run.run_id, "outcome": "resumed" if redemption.run_id else "signed-in"})
    return f"{DASHBOARD_VIEW}/run/{run.run_id}"


def _operator(req: func.HttpRequest) -> Caller:
    caller = authorize(req, Role.OPERATE)
    if caller.kind != "user":
        # A partner admin signs in interactively in a browser; an app has no browser to send to Entra.
        raise HttpError(403, "PersonRequired", "the partner sign-in is for a person signed in to the dashboard; "
                        "automation runs onboarding from the command line (python -m shared onboard)")
    return caller


def _check_deployment(settings: Settings) -> None:
    if settings.identity_mode is not IdentityMode.FEDERATED:
        raise HttpError(409, "OnboardingNotApplicable", "IDENTITY_MODE is managed-identity: the rotator works in its "
                        "own tenant only, and there is no MSP app for customer tenants (infra/README.md)")


def redirect_uri(req: func.HttpRequest) -> str:
    """Where Entra returns the browser: this app's callback on the origin the request came to, as App Service
    Authentication derives its own `/.auth/login/aad/callback`. Entra refuses one not registered on the MSP app
    (AADSTS50011: infra/scripts/create-msp-app.sh registers it), so a forged Host header gets nothing."""
    parts = urlsplit(req.url)
    return f"{parts.scheme}://{parts.netloc}{CALLBACK_PATH}"


def _no_store(location: str, status: int) -> func.HttpResponse:
    return func.HttpResponse(status_code=status, headers={
        "Location": location, "Cache-Control": "no-store", "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff"})


def _refused(req: func.HttpRequest, refusal: signin.SignInRefused) -> func.HttpResponse:
    if _wants_json(req):
        return json_response({"error": {"code": refusal.code, "message": refusal.message}}, refusal.status,
                             {"Referrer-Policy": "no-referrer"})
    message = refusal.message[:1].upper() + refusal.message[1:]
    return page("Partner sign-in not completed",
                "<h1 class=\"bad\">Partner sign-in not completed</h1>"
                f"<p id=\"message\">{html.escape(message)}.</p>"
                f"<p class=\"muted\">Code: <code id=\"code\">{html.escape(refusal.code)}</code>. Nothing was changed "
                f"in any tenant. Back to the <a href=\"{DASHBOARD_VIEW}\">onboarding page</a>.</p>", refusal.status)


@bp.route(route="onboarding/signin", methods=ALL_METHODS, auth_level=func.AuthLevel.ANONYMOUS)
@handled
async def onboarding_signin(req: func.HttpRequest) -> func.HttpResponse:
    """GET /api/onboarding/signin[?run=<runId>]: send the browser to Entra to sign the partner admin in for a bulk
    onboarding run (a new one, or to resume `run`); Rotator.Operate, a person."""
    allow(req, "GET")
    operator = _operator(req)
    run_id = req.params.get("run") or ""
    if run_id and not RUN_ID.fullmatch(run_id):
        raise HttpError(400, "InvalidRunId", "run must be the 32 hex digits of an onboarding run")
    async with invocation_services() as svc:
        _check_deployment(svc.settings)
        version, key = await svc.consent_keys.signing_key()
        state, claims = signin.begin(key, version, operator.name, svc.engine.clock.now(), run_id)
        url = signin.authorize_url(
            svc.settings.authority_host, svc.settings.msp_tenant_id, svc.settings.msp_app_client_id,
            redirect_uri(req), SIGN_IN_SCOPES, state,
            signin.challenge(signin.verifier(key, claims.nonce)),
        )
    log.info("partner sign-in started", extra={"event": "onboarding-signin", "actor": operator.name,
                                               "outcome": "redirected"})
    return _no_store(url, 302)


@bp.route(route="onboarding/callback", methods=ALL_METHODS, auth_level=func.AuthLevel.ANONYMOUS)
@handled
async def onboarding_callback(req: func.HttpRequest) -> func.HttpResponse:
    """GET /api/onboarding/callback?code=…&state=… (or error, error_description, state): Entra's answer to the
    partner sign-in; the operator who started it only, once, within its lifetime."""
    allow(req, "GET")
    try:
        operator = _operator(req)
    except HttpError as error:
        if error.status != 401 or "text/html" not in (req.headers.get("accept") or "").lower():
            raise
        # A browser (it asks for HTML) whose dashboard session ended during the partner sign-in: a page.
        return _refused(req, signin.SignInRefused(error.code, "your dashboard session ended during the partner "
                                                  "sign-in; open the dashboard, sign in and start again", 401))
    params = {k: v for k, v in req.params.items() if isinstance(v, str)}
    async with invocation_services() as svc:
        _check_deployment(svc.settings)
        try:
            claims, location = await signin.complete(
                svc.consent_keys, svc.consents, svc.settings.msp_tenant_id, params, svc.engine.clock.now(),
                operator.name, redirect_uri(req), partial(handoff, svc, operator.name),
            )
        except signin.SignInRefused as refusal:
            log.warning("partner sign-in refused: %s", refusal.code,
                        extra={"event": "onboarding-signin", "actor": operator.name, "outcome": refusal.code})
            return _refused(req, refusal)
    log.info("partner sign-in completed", extra={"event": "onboarding-signin", "actor": operator.name,
                                                 "outcome": "signed-in", "run_id": claims.run_id})
    return _no_store(location, 303)
