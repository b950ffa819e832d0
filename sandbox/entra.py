"""The Entra ID (Azure AD) stand-in: OpenID discovery, the v2.0 token endpoint for app-only tokens, and the v2.0
admin-consent endpoint a customer's admin opens in a browser."""

from __future__ import annotations

import datetime as dt
import html
import uuid
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from sandbox.world import AUDIENCES, EXCHANGE_AUDIENCE, GRAPH_AUDIENCE, AuthError, EntraError, World

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def error_body(error: str, description: str, codes: list[int]) -> dict[str, Any]:
    """An error body as Entra's token endpoint writes it."""
    return {
        "error": error,
        "error_description": description,
        "error_codes": codes,
        "timestamp": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ"),
        "trace_id": str(uuid.uuid4()),
        "correlation_id": str(uuid.uuid4()),
    }


def fault_body(status: int, code: str | None, message: str | None) -> dict[str, Any]:
    """An injected fault in Entra's error format."""
    return error_body(code or "temporarily_unavailable", message or "AADSTS50196: Injected fault.", [])


def _entra_error(exc: EntraError) -> web.Response:
    return web.json_response(error_body(exc.error, exc.aadsts, [exc.code]), status=exc.status)


def _audience(scope: str) -> str:
    """The resource a `<resource>/.default` scope names."""
    resource = scope.strip().split(" ")[0].removesuffix("/.default").rstrip("/")
    if resource not in AUDIENCES:
        raise EntraError(
            400, "invalid_resource", 500011,
            f"The resource principal named {resource} was not found in the tenant.",
        )
    return resource


def _assertion_subject(world: World, tenant_id: str, app_id: str, assertion: str) -> None:
    """Check a client assertion against the app's federated identity credentials."""
    try:
        claims = world.decode_token(assertion)
    except AuthError as exc:
        raise EntraError(401, "invalid_client", 700024, f"Client assertion is not valid: {exc.message}") from exc
    _, app, _ = world.app_in_tenant(tenant_id, app_id)
    if claims.get("aud") != EXCHANGE_AUDIENCE:
        raise EntraError(400, "invalid_client", 700212, "No matching federated identity record found for presented "
                         f"assertion audience '{claims.get('aud')}'.")
    for fic in app.federated:
        if fic.issuer == claims.get("iss") and fic.subject == claims.get("sub") and EXCHANGE_AUDIENCE in fic.audiences:
            return
    raise EntraError(
        400, "invalid_client", 70021, f"No matching federated identity record found for presented assertion. "
        f"Assertion Issuer: '{claims.get('iss')}'. Assertion Subject: '{claims.get('sub')}'.",
    )


def _sign_in_error_page(exc: EntraError) -> web.Response:
    """Entra's sign-in error page: shown in the browser, never redirected (the redirect URI is not trusted)."""
    text = html.escape(exc.aadsts)
    body = (
        "<!doctype html><html><head><title>Sign in to your account</title></head><body>"
        "<h1>Sign in</h1><p>Sorry, but we're having trouble signing you in.</p>"
        f"<p id=\"error\">{text}</p><p>Trace ID: {uuid.uuid4()}</p></body></html>"
    )
    return web.Response(text=body, status=exc.status, content_type="text/html")


def _consent_request(world: World, tenant_id: str, query: dict[str, str]) -> tuple[str, str]:
    """Check an admin-consent request as Entra does; the redirect URI and the scope, or EntraError."""
    tenant = world.directory.tenants.get(tenant_id)
    if tenant is None:
        raise EntraError(400, "invalid_tenant", 90002, f"Tenant '{tenant_id}' not found. Check to make sure you "
                         "have the correct tenant ID and are signing into the correct cloud.")
    client_id = query.get("client_id", "")
    if not client_id:
        raise EntraError(400, "invalid_request", 900144,
                         "The request body must contain the following parameter: 'client_id'.")
    app = world.directory.find_application(client_id)
    if app is None:
        raise EntraError(400, "unauthorized_client", 700016, f"Application with identifier '{client_id}' was not "
                         f"found in the directory '{tenant.name}'.")
    if app.sign_in_audience == "AzureADMyOrg" and app.home_tenant_id != tenant.id:
        raise EntraError(400, "invalid_request", 50194, f"Application '{client_id}'({app.display_name}) is not "
                         "configured as a multi-tenant application.")
    redirect_uri = query.get("redirect_uri")
    if not redirect_uri:
        if not app.redirect_uris:
            raise EntraError(400, "invalid_request", 500113, "No reply address is registered for the application.")
        # The admin-consent endpoint documents redirect_uri as required: the strictest reading refuses its absence.
        raise EntraError(400, "invalid_request", 900144,
                         "The request body must contain the following parameter: 'redirect_uri'.")
    if redirect_uri not in app.redirect_uris:
        raise EntraError(400, "invalid_request", 50011, f"The redirect URI '{redirect_uri}' specified in the request "
                         f"does not match the redirect URIs configured for the application '{client_id}'. Make sure "
                         "the redirect URI sent in the request matches one added to your application in the Azure "
                         "portal.")
    scope = query.get("scope", "")
    if not scope:
        raise EntraError(400, "invalid_request", 900144,
                         "The request body must contain the following parameter: 'scope'.")
    for item in scope.split():
        if item not in ("openid", "profile", "email", "offline_access") and item != f"{GRAPH_AUDIENCE}/.default":
            raise EntraError(400, "invalid_scope", 70011, f"The provided request must include a 'scope' input "
                             f"parameter. The provided value for the input parameter 'scope' is not valid: {item}")
    return redirect_uri, scope


def build_app(world: World) -> web.Application:
    """Routes azure-identity and MSAL call: discovery and the token endpoint."""
    routes = web.RouteTableDef()

    @routes.get("/{tenant}/v2.0/.well-known/openid-configuration")
    async def openid_configuration(request: web.Request) -> web.Response:
        base = f"{world.urls['entra']}/{request.match_info['tenant']}"
        return web.json_response(
            {
                "issuer": f"{base}/v2.0",
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                "jwks_uri": f"{base}/discovery/v2.0/keys",
                "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
                "subject_types_supported": ["pairwise"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "token_endpoint_auth_methods_supported": [
                    "client_secret_post", "private_key_jwt", "client_secret_basic"
                ],
                "scopes_supported": ["openid", "profile", "email", "offline_access"],
                "tenant_region_scope": None,
            }
        )

    @routes.post("/{tenant}/oauth2/v2.0/token")
    async def token(request: web.Request) -> web.Response:
        form = await request.post()
        fields = {k: str(v) for k, v in form.items()}
        tenant_id = request.match_info["tenant"]
        try:
            if fields.get("grant_type") != "client_credentials":
                raise EntraError(400, "unsupported_grant_type", 70003,
                                 "The app requested an unsupported grant type. Only client_credentials is supported.")
            app_id = fields.get("client_id", "")
            if not app_id:
                raise EntraError(400, "invalid_request", 900144,
                                 "The request body must contain the following parameter: 'client_id'.")
            audience = _audience(fields.get("scope", ""))
            if "client_assertion" in fields:
                if fields.get("client_assertion_type") != ASSERTION_TYPE:
                    raise EntraError(400, "invalid_request", 50027, "Invalid client_assertion_type.")
                _assertion_subject(world, tenant_id, app_id, fields["client_assertion"])
                _, _, sp = world.app_in_tenant(tenant_id, app_id)
            elif "client_secret" in fields:
                sp = world.authenticate_secret(tenant_id, app_id, fields["client_secret"])
            else:
                raise EntraError(401, "invalid_client", 7000218, "The request body must contain the following "
                                 "parameter: 'client_assertion' or 'client_secret'.")
        except EntraError as exc:
            return _entra_error(exc)
        access_token, expires = world.mint_token(
            tenant_id=tenant_id, app_id=app_id, object_id=sp.id, audience=audience, roles=list(sp.roles)
        )
        lifetime = int((expires - world.now()).total_seconds()) - 1
        return web.json_response(
            {"token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime, "access_token": access_token}
        )

    @routes.get("/{tenant}/v2.0/adminconsent")
    async def admin_consent(request: web.Request) -> web.Response:
        """The admin signs in and answers (the tenant's seeded `consentDecision`); Entra redirects to the app."""
        tenant_id = request.match_info["tenant"]
        query = {k: v for k, v in request.query.items()}
        try:
            redirect_uri, scope = _consent_request(world, tenant_id, query)
        except EntraError as exc:
            return _sign_in_error_page(exc)
        tenant = world.directory.tenants[tenant_id]
        state = {"state": query["state"]} if "state" in query else {}
        if tenant.consent_decision == "decline":
            answer = {"error": "access_denied", "error_description": "AADSTS65004: User declined to consent to "
                      "access the app.", **state}
        else:
            app_reg = world.directory.find_application(query["client_id"])
            assert app_reg is not None  # checked above
            world.directory.grant_admin_consent(tenant, app_reg)
            answer = {"admin_consent": "True", "tenant": tenant.id, "scope": scope, **state}
        raise web.HTTPFound(f"{redirect_uri}?{urlencode(answer)}")

    app = web.Application()
    app.add_routes(routes)
    return app
