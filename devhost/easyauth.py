"""App Service Authentication ("Easy Auth") in front of the local host, from the settings the Bicep deploys.

One source for both: the platform's behaviour comes from `infra/app/easy-auth.json` (the `globalValidation`,
`httpSettings` and `login` sections `infra/app/function-app.bicep` loads), and the Entra ID provider from the values
the Bicep gives it: client id `AUTH_CLIENT_ID` (empty: `MSP_APP_CLIENT_ID`, as main.bicep chooses), issuer
`{login endpoint}{tenant}/v2.0` (here `AZURE_AUTHORITY_HOST` and `MSP_TENANT_ID`: the sandbox's Entra ID locally),
allowed audiences `<client id>` and `api://<client id>`; no client id: no provider, nobody signs in.

What the platform does and this copies, with the public source of each:
- Client-sent `X-MS-CLIENT-PRINCIPAL*` (and `X-MS-TOKEN-*`) headers never reach the code: "External requests aren't
  allowed to set these headers, so they're present only if set by App Service"
  (learn.microsoft.com/azure/app-service/configure-authentication-user-identities).
- A signed-in caller's claims reach the code as `X-MS-CLIENT-PRINCIPAL` (base64 JSON `auth_typ`, `name_typ`,
  `role_typ`, `claims: [{typ, val}]`, one entry per value of a multi-valued claim, after the default claims mapping
  (`oid` -> `.../identity/claims/objectidentifier`, ...), `X-MS-CLIENT-PRINCIPAL-NAME`, `-ID`, `-IDP`
  (same page, "Decode the client principal header"; learn.microsoft.com/azure/app-service/
  overview-authentication-authorization, "Identity information in request headers").
- `globalValidation.requireAuthentication` and `unauthenticatedClientAction` (AllowAnonymous, Return401, Return403,
  RedirectToLoginPage), `excludedPaths`: overview-authentication-authorization, "Authorization behavior"; the
  authsettingsV2 template reference (learn.microsoft.com/azure/templates/microsoft.web/sites/config-authsettingsv2).
- A bearer token (`Authorization: Bearer`) is validated as the provider's tokens are: RS256 signature against the
  keys of the issuer's OpenID configuration (`jwks_uri`), `iss` equal to the configured issuer, `aud` one of the
  allowed audiences, `exp`/`nbf` with Microsoft.IdentityModel's default 5-minute clock skew
  (overview-authentication-authorization, "Authentication flow", client-directed; configure-authentication-provider-
  aad "allowed token audiences"). An invalid token is refused 401 with `WWW-Authenticate: Bearer`, whatever
  `unauthenticatedClientAction` says: what the platform does with an invalid token under AllowAnonymous is not
  documented, so this models the strictest plausible behaviour (never a silent downgrade to anonymous).
- `/.auth/login/aad?post_login_redirect_uri=/path` sends a browser to Entra's authorize endpoint and the callback
  `/.auth/login/aad/callback` redeems the code, sets the `AppServiceAuthSession` cookie and returns the browser to the
  post-login path; only relative paths are accepted, others are refused as the platform refuses URLs outside
  `allowedExternalRedirectUrls` (learn.microsoft.com/azure/app-service/configure-authentication-customize-sign-in-out,
  "Use multiple sign-in providers", "Limit the domain of sign-in accounts"; overview-authentication-authorization,
  "Server-directed flow"). The code is redeemed with a client assertion from the managed identity named by
  `OVERRIDE_USE_MI_FIC_ASSERTION_CLIENTID`, the `clientSecretSettingName` the Bicep sets (configure-authentication-
  provider-aad, "Use a managed identity instead of a secret"). The session lives
  `login.cookieExpiration.timeToExpiration` (FixedTime); `login.nonce` bounds how long a sign-in may take and whether
  the ID token's nonce is checked.
- `/.auth/me` answers only with the token store on ("If the token store is enabled for your app, you can also obtain
  additional details on the authenticated user by calling /.auth/me", configure-authentication-user-identities;
  learn.microsoft.com/azure/app-service/configure-authentication-oauth-tokens): with it off (infra/app/easy-auth.json)
  the endpoint answers 404, as reported for the module without a token store (microsoft/azure-container-apps#479).
- `/.auth/logout` ends the session, signs out at Entra's `end_session_endpoint` and returns to
  `post_logout_redirect_uri` (relative) or `/.auth/logout/complete` (configure-authentication-customize-sign-in-out,
  "Sign out of a session").

Local differences, stated: the host serves plain HTTP on loopback (`httpSettings.requireHttps` is the front end's
job in Azure); the code flow asks for `response_mode=query` where the platform uses `form_post` (a SameSite=Lax
cookie over plain HTTP does not come back on a cross-site POST); the session is kept in this process (the platform's
cookie carries it, encrypted); `preserveUrlFragmentsForLogins` is not modelled (the fragment never reaches a server);
the 401/403 of Return401/Return403 carry no body here.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import jwt
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
SETTINGS_FILE = ROOT / "infra" / "app" / "easy-auth.json"
PROVIDER = "aad"
SESSION_COOKIE = "AppServiceAuthSession"
LOGIN_COOKIE = "Nonce"  # binds a sign-in in progress to the browser that started it
CLOCK_SKEW = timedelta(minutes=5)  # Microsoft.IdentityModel TokenValidationParameters.DefaultClockSkew
PRINCIPAL_HEADERS = ("x-ms-client-principal", "x-ms-token-")  # what a client may never set (prefixes)
ACTIONS = ("AllowAnonymous", "Return401", "Return403", "RedirectToLoginPage")
SIGN_IN_SCOPES = "openid profile email"
# The default claims mapping (System.IdentityModel.Tokens.Jwt DefaultInboundClaimTypeMap, as the documented
# principal shows: `http://schemas.microsoft.com/identity/claims/objectidentifier`, `preferred_username` kept).
CLAIM_MAP = {
    "oid": "http://schemas.microsoft.com/identity/claims/objectidentifier",
    "tid": "http://schemas.microsoft.com/identity/claims/tenantid",
    "scp": "http://schemas.microsoft.com/identity/claims/scope",
    "sub": "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/nameidentifier",
    "upn": "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn",
    "email": "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress",
    "unique_name": "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name",
    "given_name": "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/givenname",
    "family_name": "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/surname",
}
NAME_TYPE = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress"
ROLE_TYPE = "http://schemas.microsoft.com/ws/2008/06/identity/claims/role"


class SettingsError(ValueError):
    """easy-auth.json says something this emulation does not model (refused at start, never guessed)."""


def _timespan(text: str) -> timedelta:
    """A .NET TimeSpan `[d.]hh:mm:ss` as authsettingsV2 writes them."""
    days, _, clock = text.rpartition(".") if text.count(":") == 2 and "." in text.split(":")[0] else ("", "", text)
    hours, minutes, seconds = (int(part) for part in clock.split(":"))
    return timedelta(days=int(days or 0), hours=hours, minutes=minutes, seconds=seconds)


@dataclass(frozen=True)
class Settings:
    """The platform behaviour of infra/app/easy-auth.json."""

    require_authentication: bool = False
    unauthenticated_action: str = "AllowAnonymous"
    excluded_paths: tuple[str, ...] = ()
    api_prefix: str = "/.auth"
    token_store: bool = False
    cookie_lifetime: timedelta = timedelta(hours=8)
    validate_nonce: bool = True
    nonce_lifetime: timedelta = timedelta(minutes=5)

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> Settings:
        validation = doc.get("globalValidation", {})
        login = doc.get("login", {})
        action = validation.get("unauthenticatedClientAction", "RedirectToLoginPage")
        if action not in ACTIONS:
            raise SettingsError(f"unauthenticatedClientAction {action!r} is not one of {ACTIONS}")
        cookie = login.get("cookieExpiration", {})
        if cookie.get("convention", "FixedTime") != "FixedTime":
            raise SettingsError("only cookieExpiration.convention FixedTime is emulated")
        nonce = login.get("nonce", {})
        return cls(
            require_authentication=bool(validation.get("requireAuthentication", False)),
            unauthenticated_action=action,
            excluded_paths=tuple(validation.get("excludedPaths", [])),
            api_prefix=doc.get("httpSettings", {}).get("routes", {}).get("apiPrefix", "/.auth").rstrip("/"),
            token_store=bool(login.get("tokenStore", {}).get("enabled", False)),
            cookie_lifetime=_timespan(cookie.get("timeToExpiration", "08:00:00")),
            validate_nonce=bool(nonce.get("validateNonce", True)),
            nonce_lifetime=_timespan(nonce.get("nonceExpirationInterval", "00:05:00")),
        )

    @classmethod
    def load(cls, path: Path = SETTINGS_FILE) -> Settings:
        return cls.from_document(json.loads(path.read_text()))

    def excluded(self, path: str) -> bool:
        # Exact paths, compared without case as IIS compares them; wildcards are not modelled (none are deployed).
        return any(path.lower().rstrip("/") == p.lower().rstrip("/") for p in self.excluded_paths)


@dataclass(frozen=True)
class Provider:
    """identityProviders.azureActiveDirectory as infra/app/function-app.bicep sets it."""

    client_id: str
    issuer: str
    allowed_audiences: tuple[str, ...]
    # How the code flow proves the app at Entra's token endpoint, as the Bicep configures it: clientSecretSettingName
    # names OVERRIDE_USE_MI_FIC_ASSERTION_CLIENTID, so the platform sends a client assertion from that managed
    # identity, which the app trusts through its federated credential (learn.microsoft.com/azure/app-service/
    # configure-authentication-provider-aad, "Use a managed identity instead of a secret"). Bearer tokens need none.
    identity_endpoint: str = ""
    identity_header: str = ""
    identity_client_id: str = ""
    ca_bundle: str = ""

    @property
    def enabled(self) -> bool:
        return bool(self.client_id)  # `enabled: !empty(authClientId)`

    @classmethod
    def from_environment(cls, env: Mapping[str, str]) -> Provider:
        client_id = env.get("AUTH_CLIENT_ID") or env.get("MSP_APP_CLIENT_ID", "")
        authority = (env.get("AZURE_AUTHORITY_HOST") or "https://login.microsoftonline.com").rstrip("/")
        tenant = env.get("MSP_TENANT_ID", "")
        return cls(
            client_id=client_id,
            issuer=f"{authority}/{tenant}/v2.0",
            allowed_audiences=(client_id, f"api://{client_id}") if client_id else (),
            identity_endpoint=env.get("IDENTITY_ENDPOINT", ""),
            identity_header=env.get("IDENTITY_HEADER", ""),
            # The Bicep gives OVERRIDE_USE_MI_FIC_ASSERTION_CLIENTID the identity's client id, as it gives
            # AZURE_CLIENT_ID; the sandbox's settings name only the latter.
            identity_client_id=env.get("OVERRIDE_USE_MI_FIC_ASSERTION_CLIENTID") or env.get("AZURE_CLIENT_ID", ""),
            ca_bundle=env.get("CA_BUNDLE", ""),
        )


class InvalidToken(Exception):
    """A token that fails validation; the message says why (never the token)."""


def principal_claims(claims: Mapping[str, Any]) -> list[dict[str, str]]:
    """A token's claims as the platform lists them: mapped names, one entry per value."""
    out: list[dict[str, str]] = []
    for name, value in claims.items():
        typ = CLAIM_MAP.get(name, name)
        for item in value if isinstance(value, list) else [value]:
            out.append({"typ": typ, "val": item if isinstance(item, str) else json.dumps(item)})
    return out


def principal_headers(claims: Mapping[str, Any]) -> dict[str, str]:
    """X-MS-CLIENT-PRINCIPAL, -NAME, -ID and -IDP for a validated token's claims."""
    doc = {"auth_typ": PROVIDER, "claims": principal_claims(claims), "name_typ": NAME_TYPE, "role_typ": ROLE_TYPE}
    name = next((str(claims[c]) for c in ("preferred_username", "upn", "email", "name") if claims.get(c)), "")
    object_id = str(claims.get("oid") or claims.get("sub") or "")
    headers = {"X-MS-CLIENT-PRINCIPAL": base64.b64encode(json.dumps(doc).encode()).decode(),
               "X-MS-CLIENT-PRINCIPAL-ID": object_id, "X-MS-CLIENT-PRINCIPAL-IDP": PROVIDER}
    headers["X-MS-CLIENT-PRINCIPAL-NAME"] = name or object_id
    return headers


def without_client_principal(headers: Mapping[str, str]) -> dict[str, str]:
    """The request's headers less any the platform alone may set."""
    return {k: v for k, v in headers.items() if not k.lower().startswith(PRINCIPAL_HEADERS)}


def safe_redirect(target: str) -> bool:
    """A post-login/-logout target the platform follows without allowedExternalRedirectUrls: a path on this app."""
    # Browsers drop tabs and newlines from URLs ("/\t/evil" becomes "//evil"): no control character or space either.
    return (target.startswith("/") and not target.startswith(("//", "/\\")) and "\\" not in target
            and not any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in target))


def unauthenticated_answer(settings: Settings, path: str, path_and_query: str) -> web.Response | None:
    """What the platform answers a request that carries no identity (None: it reaches the code)."""
    if not settings.require_authentication or settings.excluded(path):
        return None
    action = settings.unauthenticated_action
    if action == "Return401":
        return web.Response(status=401)
    if action == "Return403":
        return web.Response(status=403)
    if action == "RedirectToLoginPage":
        login = f"{settings.api_prefix}/login/{PROVIDER}?{urlencode({'post_login_redirect_uri': path_and_query})}"
        return web.Response(status=302, headers={"Location": login})
    return None


@dataclass
class _Login:
    binding: str
    verifier: str
    nonce: str
    redirect_uri: str
    post_login: str
    started: float


@dataclass
class _Session:
    claims: dict[str, Any]
    expires: float
    id_token: str = ""


@dataclass
class Metadata:
    """The issuer's OpenID configuration and signing keys, fetched once and again when a token names an unknown key
    (key rollover), at most once a minute."""

    provider: Provider
    config: dict[str, Any] = field(default_factory=dict)
    keys: dict[str, Any] = field(default_factory=dict)
    fetched: float = 0.0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.provider.ca_bundle or None)

    async def _get(self, url: str) -> dict[str, Any]:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session, \
                session.get(url, ssl=self.ssl_context()) as response:
            response.raise_for_status()
            body: dict[str, Any] = await response.json()
            return body

    async def refresh(self, force: bool = False) -> None:
        async with self.lock:
            if self.config and not (force and time.monotonic() - self.fetched > 60):
                return
            self.config = await self._get(f"{self.provider.issuer}/.well-known/openid-configuration")
            jwks = await self._get(self.config["jwks_uri"])
            self.keys = {k["kid"]: jwt.PyJWK(k).key for k in jwks.get("keys", []) if k.get("kid")}
            self.fetched = time.monotonic()

    async def key(self, kid: str) -> Any:
        await self.refresh()
        if kid not in self.keys:
            await self.refresh(force=True)
        if kid not in self.keys:
            raise InvalidToken("signed with a key the issuer does not publish")
        return self.keys[kid]


class EasyAuth:
    """The module in front of the host: `authenticate` each request, and serve `/.auth/*`."""

    def __init__(self, settings: Settings, provider: Provider) -> None:
        self.settings, self.provider = settings, provider
        self.metadata = Metadata(provider)
        self.sessions: dict[str, _Session] = {}
        self.logins: dict[str, _Login] = {}

    # ------------------------------------------------------------------------------------------- tokens
    async def validate(self, token: str, audiences: tuple[str, ...], nonce: str | None = None) -> dict[str, Any]:
        """The claims of a token the provider's issuer signed for one of `audiences`; InvalidToken otherwise."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as error:
            raise InvalidToken("not a JWT") from error
        if header.get("alg") != "RS256":
            raise InvalidToken("not signed with RS256")
        try:
            key = await self.metadata.key(str(header.get("kid", "")))
        except (aiohttp.ClientError, OSError, KeyError, ValueError) as error:
            raise InvalidToken("the issuer's signing keys cannot be read") from error
        try:
            claims: dict[str, Any] = jwt.decode(
                token, key, algorithms=["RS256"], audience=list(audiences), issuer=self.provider.issuer,
                leeway=CLOCK_SKEW, options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.PyJWTError as error:
            raise InvalidToken(type(error).__name__) from error
        if nonce is not None and not secrets.compare_digest(str(claims.get("nonce", "")), nonce):
            raise InvalidToken("the nonce is not the one this sign-in sent")
        return claims

    # ------------------------------------------------------------------------------------------- requests
    async def authenticate(self, request: web.Request) -> tuple[web.StreamResponse | None, dict[str, str]]:
        """(a refusal, or None) and the identity headers to add for the code (empty: anonymous)."""
        path = request.path
        if self.settings.excluded(path):
            return None, {}
        # Without an identity provider (no client id yet) nobody can sign in: every caller is unauthenticated.
        if self.provider.enabled:
            authorization = request.headers.get("Authorization", "")
            if authorization[:7].lower() == "bearer ":
                try:
                    claims = await self.validate(authorization[7:].strip(), self.provider.allowed_audiences)
                except InvalidToken:
                    return web.Response(status=401, headers={
                        "WWW-Authenticate": f'Bearer realm="{request.host}", error="invalid_token"'}), {}
                return None, principal_headers(claims)
            session = self._session(request)
            if session is not None:
                return None, principal_headers(session.claims)
        return unauthenticated_answer(self.settings, path, request.path_qs), {}

    def _session(self, request: web.Request) -> _Session | None:
        found = self.sessions.get(request.cookies.get(SESSION_COOKIE, ""))
        if found is None:
            return None
        if found.expires <= time.time():
            self.sessions.pop(request.cookies.get(SESSION_COOKIE, ""), None)
            return None
        return found

    async def endpoint(self, request: web.Request) -> web.StreamResponse:
        """`/.auth/login/aad`, its callback, `/.auth/me`, `/.auth/logout`: anything else under the prefix is 404."""
        rest = request.path[len(self.settings.api_prefix):].rstrip("/").lower()
        if rest == f"/login/{PROVIDER}" and self.provider.enabled:
            return await self._login(request)
        if rest == f"/login/{PROVIDER}/callback" and self.provider.enabled:
            return await self._callback(request)
        if rest == "/me":
            return self._me(request)
        if rest == "/logout":
            return await self._logout(request)
        if rest == "/logout/complete":
            return web.Response(text="You have successfully signed out.", content_type="text/plain")
        return web.Response(status=404)

    def _callback_uri(self, request: web.Request) -> str:
        return f"{request.scheme}://{request.host}{self.settings.api_prefix}/login/{PROVIDER}/callback"

    async def _login(self, request: web.Request) -> web.StreamResponse:
        target = request.query.get("post_login_redirect_uri") or request.query.get("post_login_redirect_url") or "/"
        if not safe_redirect(target):
            return web.Response(status=403, text="The post-login redirect URL is not allowed.")
        try:
            await self.metadata.refresh()
        except (aiohttp.ClientError, OSError, KeyError, ValueError):
            return web.Response(status=502, text="The identity provider's configuration cannot be read.")
        state, binding = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        verifier, nonce = secrets.token_urlsafe(48), secrets.token_urlsafe(24)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        redirect_uri = self._callback_uri(request)
        now = time.monotonic()  # sign-ins never finished are forgotten once they could no longer finish
        lifetime = self.settings.nonce_lifetime.total_seconds()
        for stale in [k for k, v in self.logins.items() if now - v.started > lifetime]:
            del self.logins[stale]
        self.logins[state] = _Login(binding, verifier, nonce, redirect_uri, target, now)
        query = {"client_id": self.provider.client_id, "response_type": "code", "redirect_uri": redirect_uri,
                 "scope": SIGN_IN_SCOPES, "state": state, "nonce": nonce, "code_challenge": challenge,
                 "code_challenge_method": "S256", "response_mode": "query"}
        response = web.Response(status=302, headers={
            "Location": f"{self.metadata.config['authorization_endpoint']}?{urlencode(query)}",
            "Cache-Control": "no-store"})
        response.set_cookie(LOGIN_COOKIE, binding, httponly=True, samesite="Lax", path="/",
                            max_age=int(self.settings.nonce_lifetime.total_seconds()))
        return response

    async def _callback(self, request: web.Request) -> web.StreamResponse:
        pending = self.logins.pop(request.query.get("state", ""), None)
        if pending is None or not secrets.compare_digest(request.cookies.get(LOGIN_COOKIE, ""), pending.binding):
            return web.Response(status=401, text="The sign-in's state is unknown or belongs to another browser.")
        if time.monotonic() - pending.started > self.settings.nonce_lifetime.total_seconds():
            return web.Response(status=401, text="The sign-in took too long; start again.")
        if "error" in request.query or "code" not in request.query:
            return web.Response(status=401, text=f"The identity provider refused the sign-in: "
                                                 f"{request.query.get('error', 'no code')}.")
        try:
            answer = await self._redeem(request.query["code"], pending)
            claims = await self.validate(str(answer.get("id_token", "")), (self.provider.client_id,),
                                         pending.nonce if self.settings.validate_nonce else None)
        except (InvalidToken, aiohttp.ClientError, OSError, ValueError) as error:
            return web.Response(status=401, text=f"The sign-in could not be completed ({error}).")
        session_id = secrets.token_urlsafe(32)
        lifetime = self.settings.cookie_lifetime.total_seconds()
        self.sessions[session_id] = _Session(claims, time.time() + lifetime,
                                             str(answer["id_token"]) if self.settings.token_store else "")
        response = web.Response(status=302, headers={"Location": pending.post_login, "Cache-Control": "no-store"})
        response.set_cookie(SESSION_COOKIE, session_id, httponly=True, samesite="Lax", path="/",
                            max_age=int(lifetime))
        response.del_cookie(LOGIN_COOKIE, path="/")
        return response

    async def _client_credential(self) -> dict[str, str]:
        """The managed identity's token for api://AzureADTokenExchange, as the app's client assertion."""
        if not self.provider.identity_endpoint:
            raise ValueError("no managed identity to prove the app with (IDENTITY_ENDPOINT)")
        query = {"resource": "api://AzureADTokenExchange", "api-version": "2019-08-01"}
        if self.provider.identity_client_id:
            query["client_id"] = self.provider.identity_client_id
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session, session.get(
                self.provider.identity_endpoint, params=query, ssl=self.metadata.ssl_context(),
                headers={"X-IDENTITY-HEADER": self.provider.identity_header}) as response:
            response.raise_for_status()
            assertion = (await response.json())["access_token"]
        return {"client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                "client_assertion": str(assertion)}

    async def _redeem(self, code: str, pending: _Login) -> dict[str, Any]:
        form = {"grant_type": "authorization_code", "client_id": self.provider.client_id, "code": code,
                "redirect_uri": pending.redirect_uri, "code_verifier": pending.verifier, "scope": SIGN_IN_SCOPES,
                **await self._client_credential()}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session, session.post(
                self.metadata.config["token_endpoint"], data=form, ssl=self.metadata.ssl_context()) as response:
            body: dict[str, Any] = await response.json(content_type=None)
            if response.status != 200:
                raise ValueError(f"the token endpoint answered {response.status} {body.get('error', '')}")
            return body

    def _me(self, request: web.Request) -> web.StreamResponse:
        if not self.settings.token_store:
            return web.Response(status=404)
        session = self._session(request)
        if session is None:
            return web.Response(status=401)
        return web.json_response([{
            "provider_name": PROVIDER, "user_id": str(session.claims.get("preferred_username", "")),
            "user_claims": principal_claims(session.claims), "id_token": session.id_token,
            "expires_on": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(session.expires)),
        }])

    async def _logout(self, request: web.Request) -> web.StreamResponse:
        """End the session here, then sign out at the provider (its end_session_endpoint), which returns the browser
        to the post-logout path (configure-authentication-customize-sign-in-out, "Sign out of a session")."""
        self.sessions.pop(request.cookies.get(SESSION_COOKIE, ""), None)
        target = request.query.get("post_logout_redirect_uri", "")
        location = target if target and safe_redirect(target) else f"{self.settings.api_prefix}/logout/complete"
        if self.provider.enabled:
            try:
                await self.metadata.refresh()
                end_session = self.metadata.config.get("end_session_endpoint")
            except (aiohttp.ClientError, OSError, KeyError, ValueError):
                end_session = None  # the provider cannot be reached: the local session is ended all the same
            if end_session:
                back = f"{request.scheme}://{request.host}{location}"
                location = f"{end_session}?{urlencode({'post_logout_redirect_uri': back})}"
        response = web.Response(status=302, headers={"Location": location, "Cache-Control": "no-store"})
        response.del_cookie(SESSION_COOKIE, path="/")
        return response
