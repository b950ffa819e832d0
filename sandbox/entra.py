"""The Entra ID (Azure AD) stand-in: OpenID discovery and signing keys, the v2.0 token endpoint (client credentials
and authorization code with PKCE), the authorize endpoint with its sign-in page, and the v2.0 admin-consent endpoint
a customer's admin opens in a browser."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import html
import re
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import unquote_plus, urlencode

from aiohttp import web

from sandbox.world import (
    AUDIENCES,
    CODE_LIFETIME,
    DEVICE_CODE_LIFETIME,
    EXCHANGE_AUDIENCE,
    GRAPH_APP_ID,
    GRAPH_AUDIENCE,
    PARTNER_CENTER_AUDIENCE,
    REFRESH_LIFETIME,
    RESOURCE_NAMES,
    Application,
    AuthCode,
    AuthError,
    DeviceCode,
    EntraError,
    RefreshGrant,
    ServicePrincipal,
    SignInSource,
    Tenant,
    User,
    World,
)

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
    """An injected fault in Entra's error format; a message starting `AADSTS<n>:` puts n in `error_codes`, as Entra
    lists the code of its description there."""
    description = message or "AADSTS50196: Injected fault."
    found = re.match(r"AADSTS(\d+):", description)
    return error_body(code or "temporarily_unavailable", description, [int(found.group(1))] if found else [])


def _entra_error(exc: EntraError) -> web.Response:
    return web.json_response(error_body(exc.error, exc.aadsts, [exc.code]), status=exc.status)


OIDC_SCOPES = ("openid", "profile", "email", "offline_access")
# Tenant aliases the v2.0 endpoints accept besides a tenant id (v2-protocols.md "Endpoints"); `consumers` (personal
# Microsoft accounts) has no users here.
ALIASES = ("common", "organizations")


@dataclass(frozen=True)
class Resource:
    """The one resource a token request's scopes name: the token's audience and, for an API registered in the
    directory, its application (None for Microsoft's resources, which get the v1-shaped token as before)."""

    audience: str
    app: Application | None
    scopes: tuple[str, ...]  # the resource's scopes asked for, without its prefix (".default" included)


def _resource(world: World, tenant: Tenant | None, scope: str) -> Resource | None:
    """The resource the scope names (None when it names only OpenID scopes); EntraError as Entra refuses."""
    found: dict[str, Resource] = {}
    for item in scope.split():
        if item.lower() in OIDC_SCOPES:
            continue
        prefix, _, name = item.rpartition("/")
        if not prefix:  # a bare scope such as User.Read is Microsoft Graph's
            prefix, name = GRAPH_AUDIENCE, item
        app: Application | None = None
        if prefix.rstrip("/") in AUDIENCES:
            audience = prefix.rstrip("/")
        else:
            app = next((a for t in world.directory.tenants.values() for a in t.applications.values()
                        if prefix in (a.app_id, *a.identifier_uris)), None)
            if app is None or (tenant is not None and app.app_id not in tenant.service_principals):
                where = f" in the tenant named {tenant.name}" if tenant is not None else ""
                raise EntraError(400, "invalid_resource", 500011,
                                 f"The resource principal named {prefix} was not found{where}. This can happen if the "
                                 "application has not been installed by the administrator of the tenant or "
                                 "consented to by any user in the tenant.")
            if name != ".default" and name not in app.scopes:
                raise EntraError(400, "invalid_scope", 70011, "The provided value for the input parameter 'scope' "
                                 f"is not valid. The scope {item} is not valid.")
            audience = app.app_id if app.access_token_version == 2 else prefix
        known = found.get(audience)
        found[audience] = Resource(audience, app, (*(known.scopes if known else ()), name))
    if len(found) > 1:
        raise EntraError(400, "invalid_scope", 700022, "The provided value for the input parameter scope is not "
                         "valid because it contains more than one resource.")
    return next(iter(found.values()), None)


def _pairwise_sub(object_id: str, client_id: str) -> str:
    """`sub`: "a pairwise identifier that's unique to a particular application ID" (access-token-claims-reference)."""
    digest = hashlib.sha256(f"{object_id}:{client_id}".encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _app_token(world: World, tenant_id: str, client_id: str, sp: ServicePrincipal, resource: Resource,
               azpacr: str) -> tuple[str, dt.datetime]:
    """A client-credentials token: v1-shaped for Microsoft's resources, v2.0 for an API that asks for v2.0 tokens
    (roles = the app roles assigned to the caller; AADSTS501051 when the API requires an assignment and there is
    none)."""
    if resource.app is None or resource.app.access_token_version != 2:
        return world.mint_token(tenant_id=tenant_id, app_id=client_id, object_id=sp.id, audience=resource.audience,
                                roles=list(sp.roles))
    if resource.scopes != (".default",):
        raise EntraError(400, "invalid_scope", 1002012, f"The provided value for scope {' '.join(resource.scopes)} "
                         "is not valid. Client credential flows must have a scope value with /.default suffixed to "
                         "the resource identifier (application ID URI).")
    tenant = world.directory.tenants[tenant_id]
    roles = world.roles_of(tenant, resource.app.app_id, sp.id)
    if roles is None:
        raise EntraError(400, "invalid_client", 501051, f"Application '{client_id}'({sp.display_name}) is not "
                         f"assigned to a role for the application '{resource.app.app_id}'"
                         f"({resource.app.display_name}).")
    # No `idtyp`: Entra adds it to an app-only token only as an optional claim the API's registration asks for
    # (access-token-claims-reference.md), and create-msp-app.sh asks for none; the code must tell an app without it.
    claims: dict[str, Any] = {"aud": resource.audience, "tid": tenant_id, "azp": client_id, "azpacr": azpacr,
                              "oid": sp.id, "sub": sp.id}
    if roles:
        claims["roles"] = roles
    return world.mint_v2_token(claims)


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
    _registered(app, client_id, redirect_uri)
    scope = query.get("scope", "")
    if not scope:
        raise EntraError(400, "invalid_request", 900144,
                         "The request body must contain the following parameter: 'scope'.")
    for item in scope.split():
        if item not in ("openid", "profile", "email", "offline_access") and item != f"{GRAPH_AUDIENCE}/.default":
            raise EntraError(400, "invalid_scope", 70011, f"The provided request must include a 'scope' input "
                             f"parameter. The provided value for the input parameter 'scope' is not valid: {item}")
    # `.default` consents to every resource the registration lists: one without a service principal in the tenant
    # (e.g. Partner Center in a customer's tenant) fails the whole consent (AADSTS650052, Entra's error code
    # reference). Microsoft Graph is in every tenant.
    for resource in app.required_resource_access:
        resource_app_id = str(resource.get("resourceAppId", ""))
        if resource_app_id != GRAPH_APP_ID and resource_app_id not in tenant.service_principals:
            raise EntraError(400, "invalid_client", 650052, "The app needs access to a service "
                             f"(\"{resource_app_id}\") that your organization \"{tenant.name}\" has not subscribed "
                             "to or enabled. Contact your IT Admin to review the configuration of your service "
                             "subscriptions.")
    return redirect_uri, scope


def _registered(app: Application, client_id: str, redirect_uri: str) -> None:
    """AADSTS50011 unless the redirect URI is one the app registers (exact match): Entra shows it, never redirects."""
    if redirect_uri not in app.redirect_uris:
        raise EntraError(400, "invalid_request", 50011, f"The redirect URI '{redirect_uri}' specified in the request "
                         f"does not match the redirect URIs configured for the application '{client_id}'. Make sure "
                         "the redirect URI sent in the request matches one added to your application in the Azure "
                         "portal.")


def _tenants_for(world: World, tenant_id: str) -> list[Tenant]:
    """The tenants whose users may sign in at this endpoint: the tenant, or every one for common/organizations."""
    if tenant_id in ALIASES:
        return list(world.directory.tenants.values())
    tenant = world.directory.tenants.get(tenant_id)
    if tenant is None:
        raise EntraError(400, "invalid_tenant", 90002, f"Tenant '{tenant_id}' not found. Check to make sure you "
                         "have the correct tenant ID and are signing into the correct cloud.")
    return [tenant]


def _authorize_request(world: World, tenant_id: str, query: dict[str, str]) -> Application:
    """What Entra checks before it trusts the redirect URI: tenant, client_id, redirect_uri (EntraError, shown on
    the sign-in error page, never redirected)."""
    tenants = _tenants_for(world, tenant_id)
    client_id = query.get("client_id", "")
    if not client_id:
        raise EntraError(400, "invalid_request", 900144,
                         "The request body must contain the following parameter: 'client_id'.")
    app = world.directory.find_application(client_id)
    if app is None or (tenant_id not in ALIASES and client_id not in tenants[0].service_principals):
        name = tenants[0].name if tenant_id not in ALIASES else tenant_id
        raise EntraError(400, "unauthorized_client", 700016, f"Application with identifier '{client_id}' was not "
                         f"found in the directory '{name}'. This can happen if the application has not been installed "
                         "by the administrator of the tenant or consented to by any user in the tenant. You may have "
                         "sent your authentication request to the wrong tenant.")
    redirect_uri = query.get("redirect_uri", "")
    if not redirect_uri:
        raise EntraError(400, "invalid_request", 900144,
                         "The request body must contain the following parameter: 'redirect_uri'.")
    _registered(app, client_id, redirect_uri)
    return app


def _check_protocol(world: World, app: Application, query: dict[str, str]) -> str:
    """The checks whose failures Entra sends back to the (now trusted) redirect URI; the response mode."""
    response_type = set(query.get("response_type", "").split())
    if "code" not in response_type or not response_type <= {"code", "id_token"}:
        raise EntraError(400, "unsupported_response_type", 70005, "The application requested an unsupported "
                         f"response type '{query.get('response_type', '')}'. This flow supports 'code' and "
                         "'code id_token'.")
    mode = query.get("response_mode") or ("fragment" if "id_token" in response_type else "query")
    if mode not in ("query", "fragment", "form_post") or (mode == "query" and "id_token" in response_type):
        raise EntraError(400, "invalid_request", 70007, f"The application requested an unsupported response mode "
                         f"'{mode}' for this response type.")
    scope = query.get("scope", "")
    if not scope.strip():
        raise EntraError(400, "invalid_request", 900144,
                         "The request body must contain the following parameter: 'scope'.")
    if "id_token" in response_type:
        if not app.id_token_issuance:
            raise EntraError(400, "unsupported_response_type", 700054, "Response_type 'id_token' is not enabled "
                             "for the application.")
        if "openid" not in scope.split():
            raise EntraError(400, "invalid_request", 70005, "response_type 'id_token' requires the 'openid' scope.")
        if not query.get("nonce"):
            raise EntraError(400, "invalid_request", 900144,
                             "The request body must contain the following parameter: 'nonce'.")
    _resource(world, None, scope)  # every scope must name something that exists
    challenge, method = query.get("code_challenge"), query.get("code_challenge_method")
    if method is not None and not challenge:
        raise EntraError(400, "invalid_request", 900144,
                         "The request body must contain the following parameter: 'code_challenge'.")
    if method not in (None, "S256", "plain"):
        raise EntraError(400, "invalid_request", 9002313, f"Invalid request. The code_challenge_method '{method}' "
                         "is not supported: use S256 or plain.")
    if challenge is not None and not 43 <= len(challenge) <= 128:
        raise EntraError(400, "invalid_request", 501491, "Invalid size of Code_Challenge parameter.")
    return mode


def _send(redirect_uri: str, mode: str, params: dict[str, str]) -> web.Response:
    """Deliver an authorize answer to the app: a redirect with a query or fragment, or an auto-posting form."""
    if mode == "form_post":
        fields = "".join(f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
                         for k, v in params.items())
        body = (
            "<!doctype html><html><head><title>Working...</title></head>"
            '<body onload="document.forms[0].submit()">'
            f'<form method="POST" name="hiddenform" action="{html.escape(redirect_uri)}">{fields}'
            "<noscript><p>Script is disabled. Click Submit to continue.</p><input type=\"submit\" value=\"Submit\">"
            "</noscript></form></body></html>"
        )
        return web.Response(text=body, content_type="text/html")
    joiner = "#" if mode == "fragment" else ("&" if "?" in redirect_uri else "?")
    raise web.HTTPFound(f"{redirect_uri}{joiner}{urlencode(params)}")


def _send_error(redirect_uri: str, mode: str, exc: EntraError, state: str | None) -> web.Response:
    params = {"error": exc.error, "error_description": exc.aadsts, **({"state": state} if state is not None else {})}
    return _send(redirect_uri, mode, params)


def _pick_account_page(world: World, tenant_id: str, ctx: str, app: Application, tenants: list[Tenant],
                       login_hint: str | None) -> web.Response:
    """Entra's account picker: the tenant's users as buttons of one form (no passwords in the sandbox)."""
    buttons = "".join(
        f'<li><button type="submit" name="login_hint" value="{html.escape(u.user_principal_name)}"'
        f'{" autofocus" if login_hint and login_hint.lower() == u.user_principal_name.lower() else ""}>'
        f"{html.escape(u.display_name)} &lt;{html.escape(u.user_principal_name)}&gt;</button></li>"
        for t in tenants for u in sorted(t.users.values(), key=lambda u: u.user_principal_name)
    )
    body = (
        "<!doctype html><html><head><title>Sign in to your account</title></head><body>"
        f"<h1>Pick an account</h1><p>to continue to {html.escape(app.display_name)}</p>"
        f'<form id="pick-account" method="POST" action="/{html.escape(tenant_id)}/login">'
        f'<input type="hidden" name="ctx" value="{html.escape(ctx)}"><ul>{buttons}</ul></form></body></html>'
    )
    return web.Response(text=body, content_type="text/html")


def _signed_in_user(world: World, tenant_id: str, login_hint: str) -> tuple[Tenant, User]:
    for tenant in _tenants_for(world, tenant_id):
        user = tenant.user_by_name(login_hint)
        if user is not None:
            return tenant, user
    raise EntraError(400, "invalid_request", 50034, f"The user account {login_hint} does not exist in the "
                     f"'{tenant_id}' directory. To sign into this application, the account must be added to the "
                     "directory.")


def _check_assignment(world: World, tenant: Tenant, app: Application, user: User) -> list[str]:
    """The user's app roles on the app signed into; AADSTS50105 when the app requires an assignment and the user has
    none, AADSTS65001 when the app has no service principal in the user's tenant (nobody consented)."""
    if app.app_id not in tenant.service_principals:
        raise EntraError(400, "invalid_grant", 65001, f"The user or administrator has not consented to use the "
                         f"application with ID '{app.app_id}' named '{app.display_name}'. Send an interactive "
                         "authorization request for this user and resource.")
    roles = world.roles_of(tenant, app.app_id, user.id)
    if roles is None:
        raise EntraError(400, "invalid_request", 50105, f"Your administrator has configured the application "
                         f"{app.display_name} ('{app.app_id}') to block users unless they are specifically granted "
                         f"('assigned') access to the application. The signed in user '{user.user_principal_name}' "
                         "is blocked because they are not a direct member of a group with access, nor had access "
                         "directly assigned by an administrator. Please contact your administrator to assign access "
                         "to this application.")
    return roles


def _id_token(world: World, tenant: Tenant, user: User, client_id: str, roles: list[str], scopes: list[str],
              nonce: str | None, code: str | None = None) -> str:
    """An ID token (id-token-claims-reference.md): aud = the client, the user's oid, a pairwise sub, the app roles
    assigned to the user; name and preferred_username with the profile scope; c_hash beside a code."""
    claims: dict[str, Any] = {"aud": client_id, "tid": tenant.id, "oid": user.id,
                              "sub": _pairwise_sub(user.id, client_id)}
    if "profile" in scopes:
        claims.update(name=user.display_name, preferred_username=user.user_principal_name)
    if nonce is not None:
        claims["nonce"] = nonce
    if roles:
        claims["roles"] = roles
    if code is not None:
        digest = hashlib.sha256(code.encode()).digest()
        claims["c_hash"] = base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode()
    token, _ = world.mint_v2_token(claims)
    return token


def _user_access_token(world: World, tenant: Tenant, user: User, client_id: str, azpacr: str,
                       resource: Resource | None, scopes: list[str], home: Tenant | None = None,
                       granted_scopes: set[str] | None = None) -> tuple[str, dt.datetime, str]:
    """A delegated access token and the scope it carries: for an API asking for v2.0 tokens, aud = its client id,
    scp, the user's roles on it; otherwise (Microsoft Graph, the default) v1-shaped as the sandbox's Graph reads."""
    if resource is not None and resource.app is not None and resource.app.access_token_version == 2:
        api = resource.app
        granted = sorted(api.scopes) if ".default" in resource.scopes else list(resource.scopes)
        roles = world.roles_of(tenant, api.app_id, user.id)
        if roles is None:
            raise EntraError(400, "invalid_grant", 50105, f"The signed in user '{user.user_principal_name}' is not "
                             f"assigned to a role for the application '{api.app_id}'({api.display_name}).")
        claims: dict[str, Any] = {
            "aud": api.app_id, "tid": tenant.id, "azp": client_id, "azpacr": azpacr, "oid": user.id,
            "sub": _pairwise_sub(user.id, client_id), "scp": " ".join(granted), "idtyp": "user",
            "name": user.display_name, "preferred_username": user.user_principal_name,
        }
        if roles:
            claims["roles"] = roles
        token, expires = world.mint_v2_token(claims)
        return token, expires, " ".join(f"{api.identifier_uris[0] if api.identifier_uris else api.app_id}/{s}"
                                        for s in granted)
    audience = resource.audience if resource is not None else GRAPH_AUDIENCE
    asked = [s for s in resource.scopes if s != ".default"] if resource is not None else []
    if granted_scopes is not None:  # a tenant where the user is a foreign principal: only what was consented there
        granted = sorted(granted_scopes) if not asked else [s for s in asked if s in granted_scopes]
    else:
        granted = asked or ["User.Read"]
    now = world.now()
    expires = now + dt.timedelta(hours=1)
    v1 = {
        "iss": world.issuer(tenant.id), "aud": audience, "tid": tenant.id, "appid": client_id, "appidacr": azpacr,
        "oid": user.id, "sub": _pairwise_sub(user.id, client_id), "scp": " ".join(granted),
        "name": user.display_name, "upn": user.user_principal_name, "unique_name": user.user_principal_name,
        "idtyp": "user", "iat": int(now.timestamp()), "nbf": int(now.timestamp()), "exp": int(expires.timestamp()),
        "ver": "1.0", "uti": uuid.uuid4().hex,
    }
    # wids: "the tenant-wide roles assigned to this user" (access-token-claims-reference.md); for a GDAP foreign
    # principal, the roles its active relationships give it there, and idp names the user's home tenant.
    wids = world.gdap.roles_in(tenant.id, user.id) if home is not None else tenant.directory_roles.get(user.id, set())
    if wids:
        v1["wids"] = sorted(wids)
    if home is not None:
        v1["idp"] = f"https://sts.windows.net/{home.id}/"
    return world.sign(v1), expires, " ".join([*(f"{audience}/{s}" for s in granted), *(
        s for s in scopes if s in OIDC_SCOPES and s != "offline_access")])


def _authenticate_client(world: World, tenant_id: str, client_id: str, fields: dict[str, str],
                         source: SignInSource | None = None) -> str:
    """Check a confidential client's credential; its `azpacr` ("1" secret, "2" assertion). With a `source` (the
    client-credentials grant: a service-principal sign-in) the attempt lands in the tenant's sign-in log."""
    if "client_assertion" in fields:
        if fields.get("client_assertion_type") != ASSERTION_TYPE:
            raise EntraError(400, "invalid_request", 50027, "Invalid client_assertion_type.")
        _assertion_subject(world, tenant_id, client_id, fields["client_assertion"])
        world.app_in_tenant(tenant_id, client_id)
        if source is not None:
            world.record_assertion_sign_in(tenant_id, client_id, replace(
                source, credential_type="federatedIdentityCredential"))
        return "2"
    if "client_secret" in fields:
        world.authenticate_secret(tenant_id, client_id, fields["client_secret"], source=source)
        return "1"
    raise EntraError(401, "invalid_client", 7000218, "The request body must contain the following parameter: "
                     "'client_assertion' or 'client_secret'.")


def _sign_in_source(world: World, request: web.Request, audience: str) -> SignInSource:
    """Where a client-credentials request comes from (the `token_endpoint` address knob, else the peer address) and
    the resource its token is for, as the sign-in log records them."""
    address = world.sign_in_addresses.get("token_endpoint") or request.remote or "127.0.0.1"
    resource_id, name = RESOURCE_NAMES.get(audience, (audience, audience))
    app = world.directory.find_application(audience)
    if app is not None:
        resource_id, name = app.app_id, app.display_name
    return SignInSource(address, resource_id, name, correlation_id=client_request_id(request))


def client_request_id(request: web.Request) -> str | None:
    """The request's `client-request-id` header (MSAL's name for it: msal/telemetry.py CLIENT_REQUEST_ID), which the
    sign-in log keeps as the sign-in's correlationId; None when absent or not a GUID (then Entra makes one up: a
    value it cannot use as a correlation id is not kept, the strictest reading)."""
    raw = (request.headers.get("client-request-id") or "").strip()
    try:
        return str(uuid.UUID(raw)) if raw else None
    except ValueError:
        return None


def _basic_credentials(header: str | None, fields: dict[str, str]) -> None:
    """client_secret_basic: "The Basic auth pattern of instead providing credentials in the Authorization header, per
    RFC 6749 (section 2.3.1) is also supported" (v2-oauth2-auth-code-flow.md): form-urlencoded id and secret."""
    scheme, _, encoded = (header or "").partition(" ")
    if scheme.lower() != "basic" or not encoded.strip():
        return
    try:
        client_id, sep, secret = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
    except (ValueError, UnicodeDecodeError) as exc:
        raise EntraError(401, "invalid_client", 7000215, "The Authorization header's client credentials could "
                         "not be read.") from exc
    if not sep or ("client_secret" in fields or "client_assertion" in fields):
        raise EntraError(401, "invalid_client", 7000215, "Use one client authentication method, in the header or "
                         "in the body.")
    client_id, secret = unquote_plus(client_id), unquote_plus(secret)
    if fields.setdefault("client_id", client_id) != client_id:
        raise EntraError(401, "invalid_client", 7000215, "The client_id does not match the Authorization header.")
    fields["client_secret"] = secret


def _verifier_matches(code: AuthCode, verifier: str | None) -> bool:
    """RFC 7636 section 4.6: BASE64URL(SHA256(verifier)) for S256, the verifier itself for plain."""
    if code.code_challenge is None:
        return True
    if not verifier:
        return False
    if code.code_challenge_method == "S256":
        computed = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    else:
        computed = verifier
    return secrets.compare_digest(computed, code.code_challenge)


def _redeem_code(world: World, tenant_id: str, fields: dict[str, str]) -> dict[str, Any]:
    """`grant_type=authorization_code` (v2-oauth2-auth-code-flow.md "Redeem a code for an access token")."""
    for name in ("client_id", "code", "redirect_uri"):
        if not fields.get(name):
            raise EntraError(400, "invalid_request", 900144,
                             f"The request body must contain the following parameter: '{name}'.")
    client_id = fields["client_id"]
    code = world.auth_codes.get(fields["code"])
    if code is None or code.client_id != client_id:
        raise EntraError(400, "invalid_grant", 70000, "The provided value for the 'code' parameter is not valid.")
    if tenant_id not in (code.tenant_id, *ALIASES):
        raise EntraError(400, "invalid_grant", 700005, "Provided Authorization Code is intended to use against "
                         "other tenant, thus rejected.")
    azpacr = _authenticate_client(world, code.tenant_id, client_id, fields)
    if code.redeemed:
        raise EntraError(400, "invalid_grant", 54005, "OAuth2 Authorization code was already redeemed, please retry "
                         "with a new valid code or use an existing refresh token.")
    code.redeemed = True  # presented by its client: spent, whatever the outcome (the strictest reading)
    if world.now() >= code.issued_at + CODE_LIFETIME:
        raise EntraError(400, "invalid_grant", 70008, "The provided authorization code or refresh token has expired "
                         "due to inactivity. Send a new interactive authorization request for this user and "
                         "resource.")
    if fields["redirect_uri"] != code.redirect_uri:
        raise EntraError(400, "invalid_grant", 500112, f"The reply address '{fields['redirect_uri']}' does not "
                         f"match the reply address '{code.redirect_uri}' provided when requesting Authorization code.")
    if not _verifier_matches(code, fields.get("code_verifier")):
        raise EntraError(400, "invalid_grant", 501481, "The Code_Verifier does not match the code_challenge "
                         "supplied in the authorization request.")
    tenant = world.directory.tenants[code.tenant_id]
    user = tenant.users[code.user_id]
    scopes = fields.get("scope", "").split() or code.scopes
    resource = _resource(world, tenant, " ".join(scopes))
    access_token, expires, granted = _user_access_token(world, tenant, user, client_id, azpacr, resource, scopes)
    lifetime = int((expires - world.now()).total_seconds()) - 1
    answer: dict[str, Any] = {"token_type": "Bearer", "scope": granted, "expires_in": lifetime,
                              "ext_expires_in": lifetime, "access_token": access_token}
    if "openid" in code.scopes:
        app = world.directory.find_application(client_id)
        assert app is not None  # the code was issued to it
        roles = world.roles_of(tenant, app.app_id, user.id) or []
        answer["id_token"] = _id_token(world, tenant, user, client_id, roles, code.scopes, code.nonce)
    if "offline_access" in code.scopes:
        answer["refresh_token"] = _new_refresh_token(world, client_id, tenant, user, public=False,
                                                     scopes=code.scopes)
    return answer


def _new_refresh_token(world: World, client_id: str, tenant: Tenant, user: User, *, public: bool,
                       scopes: Sequence[str]) -> str:
    """An opaque refresh token ("opaque to the client", refresh-tokens.md), remembered by the sandbox only."""
    token = "1.A" + secrets.token_urlsafe(96)
    world.refresh_tokens[token] = RefreshGrant(client_id, user.id, tenant.id, public, world.now(), tuple(scopes))
    return token


def _consented_graph_scopes(grant: RefreshGrant, tenant: Tenant) -> set[str]:
    """The Graph scopes the user consented to at sign-in and the tenant's admin consented for the client: what
    `.default` stands for in a delegated request ("the scopes the user has consented to", v2-permissions-and-consent.md
    "The /.default scope")."""
    mine = _graph_scope_names(grant.scopes) - ADMIN_CONSENT_SCOPES  # those only the tenant's admin consent gives
    return mine | tenant.delegated_grants.get(grant.client_id, set())


# Microsoft Graph delegated permissions whose "Admin consent required" is Yes (Graph permissions reference,
# microsoft-graph-docs-contrib concepts/permissions-reference.md) that the sandbox enforces at sign-in: the GDAP reads
# of the partner admin's sign-in. Only the tenant's admin consent for the client (an oauth2PermissionGrant for all
# principals: "Grant admin consent", what infra/scripts/create-msp-app.sh makes in the partner tenant; seed
# `delegatedGrants`) lets a user sign in with one. Entra blocks a user who is not an admin from consenting and offers
# an admin the tenant-wide consent prompt (application-consent-experience.md, "App requires a permission that the
# user has no right to grant"); the sandbox has no consent prompt, so, strictest, it refuses everybody:
# AADSTS65001 DelegationDoesNotExist (reference-error-codes.md), `consent_required` back to the app from the sign-in
# page (OpenID Connect Core 3.1.2.6), `invalid_grant` from the token endpoint. Other admin-consent scopes are not
# enforced (*not modelled*: the sandbox lets a user consent to them at sign-in).
ADMIN_CONSENT_SCOPES = frozenset({"DelegatedAdminRelationship.Read.All", "DelegatedAdminRelationship.ReadWrite.All"})


def _graph_scope_names(scopes: Sequence[str]) -> set[str]:
    return {s.rpartition("/")[2] if "/" in s else s for s in scopes
            if s.lower() not in OIDC_SCOPES and (s.startswith(GRAPH_AUDIENCE) or "/" not in s)}


def _check_admin_consent(tenant: Tenant, app: Application, scopes: Sequence[str], error: str) -> None:
    """EntraError AADSTS65001 (`error`) when a Graph scope asked needs admin consent the tenant has not given the
    client (ADMIN_CONSENT_SCOPES)."""
    granted = tenant.delegated_grants.get(app.app_id, set())
    missing = sorted(s for s in _graph_scope_names(scopes) if s in ADMIN_CONSENT_SCOPES and s not in granted)
    if missing:
        raise EntraError(400, error, 65001, f"The user or administrator has not consented to use the application "
                         f"with ID '{app.app_id}' named '{app.display_name}'. Send an interactive authorization "
                         f"request for this user and resource. (Admin consent required in tenant '{tenant.name}' "
                         f"for: {', '.join(missing)}.)")


def _check_partner_center_consent(grant: RefreshGrant, tenant: Tenant, app: Application) -> None:
    """A delegated token for Partner Center needs consent to its user_impersonation in the user's tenant: the
    tenant's admin consent (Partner Center's "Partner API authentication": "Grant admin consent" for the app's
    user_impersonation) or the user's own at sign-in. Else AADSTS65001, as for any resource not consented to
    (troubleshoot-consent-issues); strictest plausible: Partner Center's own consent rules are not published."""
    asked = {s for s in grant.scopes if s.rstrip("/").lower().startswith(PARTNER_CENTER_AUDIENCE)}
    if asked or "user_impersonation" in tenant.partner_center_grants.get(grant.client_id, set()):
        return
    raise EntraError(400, "invalid_grant", 65001, "The user or administrator has not consented to use the application "
                     f"with ID '{grant.client_id}' named '{app.display_name}'. Send an interactive authorization "
                     "request for this user and resource.")


def _redeem_refresh_token(world: World, tenant_id: str, fields: dict[str, str]) -> dict[str, Any]:
    """`grant_type=refresh_token` (v2-oauth2-auth-code-flow.md "Refresh the access token"), in the user's tenant or
    in another one where the user is a GDAP foreign principal (the partner admin in a customer tenant).

    Assumed, strictest plausible: in a customer tenant the user must hold a role there through an active GDAP
    relationship (else AADSTS50020, as for any user foreign to the tenant); the client must have a service principal
    there with delegated permissions consented for all principals (else AADSTS65001); the token's `scp` is what was
    consented there, narrowed to the scopes asked."""
    for name in ("client_id", "refresh_token"):
        if not fields.get(name):
            raise EntraError(400, "invalid_request", 900144,
                             f"The request body must contain the following parameter: '{name}'.")
    client_id = fields["client_id"]
    grant = world.refresh_tokens.get(fields["refresh_token"])
    if grant is None or grant.client_id != client_id:
        raise EntraError(400, "invalid_grant", 9002313, "Invalid request. Request is malformed or invalid.")
    if world.now() >= grant.issued_at + REFRESH_LIFETIME:
        raise EntraError(400, "invalid_grant", 700082, "The refresh token has expired due to inactivity. The token "
                         "was issued on " + grant.issued_at.isoformat() + " and was inactive for 90.00:00:00.")
    home = world.directory.tenants[grant.home_tenant_id]
    target = home if tenant_id in ALIASES else world.directory.tenants.get(tenant_id)
    if target is None:
        raise EntraError(400, "invalid_tenant", 90002, f"Tenant '{tenant_id}' not found. Check to make sure you "
                         "have the correct tenant ID and are signing into the correct cloud.")
    if grant.public and not ("client_assertion" in fields or "client_secret" in fields):
        azpacr = "0"
    else:
        azpacr = _authenticate_client(world, home.id, client_id, fields)
    user = home.users.get(grant.user_id)
    if user is None:
        raise EntraError(400, "invalid_grant", 50173, "The provided grant has expired due to it being revoked.")
    app = world.directory.find_application(client_id)
    assert app is not None  # a grant is only issued to a registered app
    granted: set[str] | None = None
    foreign: Tenant | None = None
    if target.id != home.id:
        foreign = home
        if not world.gdap.roles_in(target.id, user.id):
            raise EntraError(400, "invalid_grant", 50020, f"User account '{user.user_principal_name}' from identity "
                             f"provider 'https://sts.windows.net/{home.id}/' does not exist in tenant '{target.name}' "
                             f"and cannot access the application '{client_id}'({app.display_name}) in that tenant. "
                             "The account needs to be added as an external user in the tenant first.")
        granted = target.delegated_grants.get(client_id, set())
        if client_id not in target.service_principals or not granted:
            raise EntraError(400, "invalid_grant", 65001, f"The user or administrator has not consented to use the "
                             f"application with ID '{client_id}' named '{app.display_name}'. Send an interactive "
                             "authorization request for this user and resource.")
    resource = _resource(world, target, fields.get("scope", ""))
    if foreign is None and resource is not None and resource.audience == GRAPH_AUDIENCE:
        _check_admin_consent(target, app, [s for s in resource.scopes if s != ".default"], "invalid_grant")
    if foreign is None and resource is not None and resource.audience == PARTNER_CENTER_AUDIENCE:
        _check_partner_center_consent(grant, target, app)
    if foreign is None and resource is not None and resource.audience == GRAPH_AUDIENCE \
            and resource.scopes == (".default",):
        granted = _consented_graph_scopes(grant, target) or None
    scopes = fields.get("scope", "").split()
    access_token, expires, scope = _user_access_token(world, target, user, client_id, azpacr, resource, scopes,
                                                      home=foreign, granted_scopes=granted)
    lifetime = int((expires - world.now()).total_seconds()) - 1
    return {"token_type": "Bearer", "scope": scope, "expires_in": lifetime, "ext_expires_in": lifetime,
            "access_token": access_token,
            "refresh_token": _new_refresh_token(world, client_id, home, user, public=grant.public,
                                                scopes=grant.scopes)}


DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


def _start_device_code(world: World, tenant_id: str, fields: dict[str, str]) -> dict[str, Any]:
    """`POST /{tenant}/oauth2/v2.0/devicecode` (v2-oauth2-device-code.md "Device authorization request")."""
    _tenants_for(world, tenant_id)
    client_id = fields.get("client_id", "")
    if not client_id:
        raise EntraError(400, "invalid_request", 900144,
                         "The request body must contain the following parameter: 'client_id'.")
    if world.directory.find_application(client_id) is None:
        raise EntraError(400, "unauthorized_client", 700016, f"Application with identifier '{client_id}' was not "
                         "found in the directory.")
    scope = fields.get("scope", "")
    if not scope.strip():
        raise EntraError(400, "invalid_request", 900144,
                         "The request body must contain the following parameter: 'scope'.")
    _resource(world, None, scope)
    device_code = secrets.token_urlsafe(48)
    user_code = "".join(secrets.choice("ABCDEFGHJKLMNPQRSTUVWXYZ23456789") for _ in range(9))
    world.device_codes[device_code] = DeviceCode(user_code, client_id, tenant_id, scope.split(), world.now(),
                                                 world.device_code_interval)
    uri = f"{world.urls['entra']}/devicelogin"
    return {"user_code": user_code, "device_code": device_code, "verification_uri": uri,
            "expires_in": int(DEVICE_CODE_LIFETIME.total_seconds()), "interval": world.device_code_interval,
            "message": f"To sign in, use a web browser to open the page {uri} and enter the code {user_code} to "
                       "authenticate."}


def _redeem_device_code(world: World, tenant_id: str, fields: dict[str, str]) -> dict[str, Any]:
    """The token request of the device code flow: the errors of v2-oauth2-device-code.md "Expected errors"
    (authorization_pending, authorization_declined, bad_verification_code, expired_token) and RFC 8628's slow_down
    when polled more often than `interval` (assumed: Microsoft's page does not list it)."""
    client_id, code = fields.get("client_id", ""), fields.get("device_code", "")
    device = world.device_codes.get(code)
    if device is None or device.client_id != client_id or device.decision == "redeemed":
        raise EntraError(400, "bad_verification_code", 70018, "The provided value for the input parameter "
                         "'device_code' is not valid.")
    now = world.now()
    if now >= device.issued_at + DEVICE_CODE_LIFETIME:
        raise EntraError(400, "expired_token", 70019, "Verification code expired.")
    app = world.directory.find_application(client_id)
    assert app is not None  # checked when the code was issued
    public = not ("client_assertion" in fields or "client_secret" in fields)
    if public and not app.is_fallback_public_client:
        raise EntraError(401, "invalid_client", 7000218, "The request body must contain the following parameter: "
                         "'client_assertion' or 'client_secret'.")
    if device.decision == "declined":
        raise EntraError(400, "authorization_declined", 70000, "The end user denied the authorization request.")
    if device.decision == "pending":
        too_soon = device.last_poll is not None and (now - device.last_poll).total_seconds() < device.interval
        device.last_poll = now
        if too_soon:
            raise EntraError(400, "slow_down", 70016, "OAuth 2.0 device flow error. Poll less often.")
        raise EntraError(400, "authorization_pending", 70016, "OAuth 2.0 device flow error. Authorization is "
                         "pending. Continue polling.")
    azpacr = "0" if public else _authenticate_client(world, str(device.user_tenant_id), client_id, fields)
    device.decision = "redeemed"
    tenant = world.directory.tenants[str(device.user_tenant_id)]
    _check_admin_consent(tenant, app, device.scopes, "invalid_grant")
    user = tenant.users[str(device.user_id)]
    resource = _resource(world, tenant, " ".join(device.scopes))
    access_token, expires, scope = _user_access_token(world, tenant, user, client_id, azpacr, resource,
                                                      device.scopes)
    lifetime = int((expires - now).total_seconds()) - 1
    answer: dict[str, Any] = {"token_type": "Bearer", "scope": scope, "expires_in": lifetime,
                              "ext_expires_in": lifetime, "access_token": access_token}
    if "openid" in device.scopes:
        answer["id_token"] = _id_token(world, tenant, user, client_id, [], device.scopes, None)
    if "offline_access" in device.scopes:
        answer["refresh_token"] = _new_refresh_token(world, client_id, tenant, user, public=public,
                                                     scopes=device.scopes)
    return answer


def _device_page(title: str, body: str) -> web.Response:
    return web.Response(text=f"<!doctype html><html><head><title>{html.escape(title)}</title></head><body>{body}"
                        "</body></html>", content_type="text/html")


def build_app(world: World) -> web.Application:
    """Routes azure-identity and MSAL call: discovery and the token endpoint."""
    routes = web.RouteTableDef()

    @routes.get("/{tenant}/v2.0/.well-known/openid-configuration")
    async def openid_configuration(request: web.Request) -> web.Response:
        """v2.0 discovery (v2-protocols-oidc.md): for common/organizations the issuer is the template
        `.../{tenantid}/v2.0`, as Entra publishes it."""
        tenant_id = request.match_info["tenant"]
        base = f"{world.urls['entra']}/{tenant_id}"
        issuer = world.issuer("{tenantid}" if tenant_id in ALIASES else tenant_id)
        return web.json_response(
            {
                "issuer": issuer,
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
                "jwks_uri": f"{base}/discovery/v2.0/keys",
                "response_modes_supported": ["query", "fragment", "form_post"],
                "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
                "subject_types_supported": ["pairwise"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "token_endpoint_auth_methods_supported": [
                    "client_secret_post", "private_key_jwt", "client_secret_basic"
                ],
                "scopes_supported": ["openid", "profile", "email", "offline_access"],
                "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "acr", "nonce",
                                     "preferred_username", "name", "tid", "ver", "at_hash", "c_hash", "email"],
                "tenant_region_scope": None,
            }
        )

    @routes.get("/{tenant}/discovery/v2.0/keys")
    async def keys(request: web.Request) -> web.Response:
        """The signing keys (JWKS) of every token this sandbox issues; /common/ serves the same keys."""
        tenant_id = request.match_info["tenant"]
        try:
            _tenants_for(world, tenant_id)
        except EntraError as exc:
            return _entra_error(exc)
        return web.json_response(world.jwks("{tenantid}" if tenant_id in ALIASES else tenant_id))

    @routes.get("/{tenant}/oauth2/v2.0/authorize")
    async def authorize(request: web.Request) -> web.Response:
        """Check the request, then show the account picker; errors before the redirect URI is trusted are shown on
        Entra's error page, later ones go back to the app."""
        tenant_id = request.match_info["tenant"]
        query = dict(request.query)
        try:
            app = _authorize_request(world, tenant_id, query)
        except EntraError as exc:
            return _sign_in_error_page(exc)
        mode = query.get("response_mode") or "query"
        try:
            mode = _check_protocol(world, app, query)
        except EntraError as exc:
            return _send_error(query["redirect_uri"], "fragment" if mode == "query" and "id_token" in query.get(
                "response_type", "") else mode, exc, query.get("state"))
        ctx = secrets.token_urlsafe(24)
        world.sign_ins[ctx] = {**query, "response_mode": mode, "tenant": tenant_id}
        return _pick_account_page(world, tenant_id, ctx, app, _tenants_for(world, tenant_id),
                                  query.get("login_hint"))

    @routes.post("/{tenant}/login")
    async def login(request: web.Request) -> web.Response:
        """The account picked on the sign-in page: an authorization code (and an ID token in the hybrid flow) for
        the app, or AADSTS50105 on Entra's error page when the app requires an assignment the user lacks."""
        form = {k: str(v) for k, v in (await request.post()).items()}
        pending = world.sign_ins.pop(form.get("ctx", ""), None)
        if pending is None:
            return _sign_in_error_page(EntraError(400, "invalid_request", 90007, "Bad request. The passed session "
                                                  "ID can't be parsed."))
        app = world.directory.find_application(pending["client_id"])
        assert app is not None  # checked when the page was shown
        try:
            tenant, user = _signed_in_user(world, pending["tenant"], form.get("login_hint", ""))
            roles = _check_assignment(world, tenant, app, user)
        except EntraError as exc:
            return _sign_in_error_page(exc)
        scopes = pending["scope"].split()
        try:
            _check_admin_consent(tenant, app, scopes, "consent_required")
        except EntraError as exc:  # the redirect URI is trusted: the answer goes back to the app
            return _send_error(pending["redirect_uri"], pending["response_mode"], exc, pending.get("state"))
        code = secrets.token_urlsafe(48)
        world.auth_codes[code] = AuthCode(
            client_id=app.app_id, redirect_uri=pending["redirect_uri"], tenant_id=tenant.id, user_id=user.id,
            scopes=scopes, nonce=pending.get("nonce"), code_challenge=pending.get("code_challenge"),
            code_challenge_method=pending.get("code_challenge_method", "plain"), issued_at=world.now(),
        )
        params = {"code": code}
        if "id_token" in pending["response_type"].split():
            params["id_token"] = _id_token(world, tenant, user, app.app_id, roles, scopes, pending.get("nonce"), code)
        if "state" in pending:
            params["state"] = pending["state"]
        params["session_state"] = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{tenant.id}:{user.id}"))
        return _send(pending["redirect_uri"], pending["response_mode"], params)

    @routes.get("/{tenant}/oauth2/v2.0/logout")
    async def logout(request: web.Request) -> web.Response:
        """Sign-out (v2-protocols-oidc.md "Send a sign-out request"): the sandbox keeps no session, so this only
        returns the browser to `post_logout_redirect_uri` when an app registers it as a redirect URI (the strictest
        reading), else shows Entra's generic signed-out page."""
        target = request.query.get("post_logout_redirect_uri", "")
        registered = any(target in app.redirect_uris for t in world.directory.tenants.values()
                         for app in t.applications.values())
        if target and registered:
            raise web.HTTPFound(target)
        return web.Response(text="<!doctype html><html><head><title>Sign out</title></head><body><h1>You signed "
                            "out of your account</h1><p>It's a good idea to close all browser windows.</p></body>"
                            "</html>", content_type="text/html")

    @routes.post("/{tenant}/oauth2/v2.0/token")
    async def token(request: web.Request) -> web.Response:
        form = await request.post()
        fields = {k: str(v) for k, v in form.items()}
        tenant_id = request.match_info["tenant"]
        try:
            _basic_credentials(request.headers.get("Authorization"), fields)
            grant = fields.get("grant_type")
            if grant == "authorization_code":
                return web.json_response(_redeem_code(world, tenant_id, fields))
            if grant == "refresh_token":
                return web.json_response(_redeem_refresh_token(world, tenant_id, fields))
            if grant == DEVICE_CODE_GRANT:
                return web.json_response(_redeem_device_code(world, tenant_id, fields))
            if grant != "client_credentials":
                raise EntraError(400, "unsupported_grant_type", 70003, "The app requested an unsupported grant "
                                 "type. Supported: client_credentials, authorization_code, refresh_token and "
                                 f"{DEVICE_CODE_GRANT}.")
            app_id = fields.get("client_id", "")
            if not app_id:
                raise EntraError(400, "invalid_request", 900144,
                                 "The request body must contain the following parameter: 'client_id'.")
            tenant = world.directory.tenants.get(tenant_id)
            resource = _resource(world, tenant, fields.get("scope", "").split(" ")[0])
            if resource is None:
                raise EntraError(400, "invalid_scope", 1002012, f"The provided value for scope "
                                 f"{fields.get('scope', '')} is not valid. Client credential flows must have a scope "
                                 "value with /.default suffixed to the resource identifier (application ID URI).")
            azpacr = _authenticate_client(world, tenant_id, app_id, fields,
                                          _sign_in_source(world, request, resource.audience))
            _, _, sp = world.app_in_tenant(tenant_id, app_id)
            access_token, expires = _app_token(world, tenant_id, app_id, sp, resource, azpacr)
        except EntraError as exc:
            return _entra_error(exc)
        lifetime = int((expires - world.now()).total_seconds()) - 1
        return web.json_response(
            {"token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime, "access_token": access_token}
        )

    @routes.post("/{tenant}/oauth2/v2.0/devicecode")
    async def device_code(request: web.Request) -> web.Response:
        fields = {k: str(v) for k, v in (await request.post()).items()}
        try:
            return web.json_response(_start_device_code(world, request.match_info["tenant"], fields))
        except EntraError as exc:
            return _entra_error(exc)

    @routes.get("/devicelogin")
    async def device_login(request: web.Request) -> web.Response:
        """The verification page (microsoft.com/devicelogin): the user types the code shown by the device."""
        return _device_page("Enter code", '<h1>Enter code</h1><form id="enter-code" method="POST" '
                            'action="/devicelogin"><input name="otc" value=""><button type="submit">Next</button>'
                            "</form>")

    @routes.post("/devicelogin")
    async def device_login_code(request: web.Request) -> web.Response:
        """The code entered: the account picker of the code's tenant (every tenant for common/organizations), with
        a Continue (approve) or Cancel (decline) choice per account."""
        form = {k: str(v) for k, v in (await request.post()).items()}
        otc = form.get("otc", "").strip().upper()
        device = next((d for d in world.device_codes.values() if d.user_code == otc and d.decision == "pending"
                       and world.now() < d.issued_at + DEVICE_CODE_LIFETIME), None)
        if device is None:
            return _sign_in_error_page(EntraError(400, "invalid_request", 70018, "The code you entered has expired "
                                                  "or is not valid."))
        if "login_hint" in form:
            try:
                tenant, user = _signed_in_user(world, device.tenant_id, form["login_hint"])
            except EntraError as exc:
                return _sign_in_error_page(exc)
            if form.get("decision") == "decline":
                device.decision = "declined"
                return _device_page("Sign in", "<h1>You have declined to sign in</h1>")
            device.decision, device.user_tenant_id, device.user_id = "approved", tenant.id, user.id
            return _device_page("Sign in", "<h1>You have signed in</h1><p>You may now close this window.</p>")
        app = world.directory.find_application(device.client_id)
        buttons = "".join(
            f'<li><button type="submit" name="login_hint" value="{html.escape(u.user_principal_name)}">'
            f"{html.escape(u.display_name)} &lt;{html.escape(u.user_principal_name)}&gt;</button></li>"
            for t in _tenants_for(world, device.tenant_id)
            for u in sorted(t.users.values(), key=lambda u: u.user_principal_name))
        return _device_page("Sign in", f"<h1>Pick an account</h1><p>to continue to "
                            f"{html.escape(app.display_name if app else device.client_id)}</p>"
                            '<form id="pick-account" method="POST" action="/devicelogin">'
                            f'<input type="hidden" name="otc" value="{html.escape(otc)}">'
                            '<select name="decision"><option value="approve">Continue</option>'
                            f'<option value="decline">Cancel</option></select><ul>{buttons}</ul></form>')

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
