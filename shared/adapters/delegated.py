"""A partner admin's delegated sign-in to the MSP app: authorization code with PKCE (the dashboard; the rotator a
confidential client authenticating with its federated client assertion) or the device code flow (the command line; a
public client), then access tokens per customer tenant and resource from the refresh token.

Protocols: Microsoft identity platform "OAuth 2.0 authorization code flow" (v2-oauth2-auth-code-flow.md, PKCE and
"Refresh the access token"), "OAuth 2.0 device authorization grant" (v2-oauth2-device-code.md). The refresh token is
multi-resource and, for a GDAP foreign principal, redeemable at a customer tenant's token endpoint.

Tokens live in this object only: never logged, never in an exception's text, never written anywhere; `close()`
forgets them. Nothing here keeps a refresh token after the run (issue 23): a caller that must keep one asks for it
explicitly (`refresh_token_for_vault`) and stores it in Key Vault.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import aiohttp

from shared.errors import PartnerRefused, RotationError, Throttled
from shared.ports import PartnerAdmin
from shared.settings import Settings
from shared.tls import tls_context

log = logging.getLogger(__name__)

GRAPH = "https://graph.microsoft.com"
PARTNER_CENTER = "https://api.partnercenter.microsoft.com"
PARTNER_CENTER_SCOPE = f"{PARTNER_CENTER}/user_impersonation"
# What the partner admin consents to at sign-in in the partner tenant: read the GDAP relationships, read its own
# group memberships (/me/transitiveMemberOf with User.Read), and a refresh token for the other tenants and resources.
SIGN_IN_SCOPES = (f"{GRAPH}/DelegatedAdminRelationship.Read.All", f"{GRAPH}/User.Read", "offline_access", "openid",
                  "profile")
DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
_TIMEOUT = aiohttp.ClientTimeout(total=30)
_EARLY = 120.0  # renew an access token this many seconds before it expires


def pkce() -> tuple[str, str]:
    """A PKCE verifier and its S256 challenge (RFC 7636 section 4.1-4.2)."""
    verifier = secrets.token_urlsafe(64)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


@dataclass(frozen=True)
class DeviceCodePrompt:
    """What the admin is told to do: open `verification_uri` and enter `user_code` (the device code stays inside)."""

    user_code: str
    verification_uri: str
    message: str
    expires_in: int
    interval: int


# Entra's answers that name a fix for the admin (Microsoft's AADSTS error code reference).
_REFUSALS = {
    "AADSTS50020": ("NoGdapAccess", "The signed-in partner admin holds no role in this customer tenant: check that "
                    "its GDAP relationship is active and assigns roles to a security group the admin is a member of."),
    "AADSTS65001": ("AppNotConsented", "The MSP app is not consented in this customer tenant yet: install it with "
                    "the Partner Center method, or have the customer's administrator consent once."),
    "AADSTS70008": ("SignInExpired", "The sign-in expired: sign in again."),
    "AADSTS700082": ("SignInExpired", "The sign-in expired: sign in again."),
    "AADSTS50173": ("SignInExpired", "The sign-in was revoked: sign in again."),
    "AADSTS7000218": ("PublicClientFlowsDisabled", "Allow public client flows on the MSP app registration "
                      "(isFallbackPublicClient; infra/scripts/create-msp-app.sh sets it), or sign in on the "
                      "dashboard."),
    "AADSTS90002": ("TenantNotFound", "No tenant has this id: check the customer's tenant id."),
    "AADSTS50105": ("NotAssigned", "Assign the admin an app role of the MSP app (Rotator.Operate)."),
}
# AADSTS65001 in the partner tenant itself: its admin never consented to the sign-in's Graph scopes
# (DelegatedAdminRelationship.Read.All needs admin consent: Graph permissions reference).
_SIGN_IN_NOT_CONSENTED = (
    "PartnerSignInNotConsented", "The partner tenant's admin has not consented to the MSP app's sign-in permissions "
    "(Microsoft Graph DelegatedAdminRelationship.Read.All, User.Read): a Global Administrator or Privileged Role "
    "Administrator of the partner tenant runs infra/scripts/create-msp-app.sh again (it grants that admin consent), "
    "or grants admin consent under Enterprise applications > the MSP app > Permissions; then sign in again.")
# AADSTS65001 for Partner Center's token means the partner tenant never consented to its user_impersonation.
_PARTNER_CENTER_NOT_CONSENTED = (
    "PartnerCenterNotConsented", "The partner tenant has not consented to the MSP app's use of Partner Center "
    "(user_impersonation): an Application Administrator of the partner tenant runs infra/scripts/create-msp-app.sh "
    "once (it grants that admin consent), or grants it under Enterprise applications > the MSP app > Permissions.")


class DelegatedSignIn:
    """One admin's delegated sign-in to the MSP app; access tokens per (tenant, resource) from its refresh token."""

    def __init__(
        self, *, authority: str, client_id: str, home_tenant_id: str, session: aiohttp.ClientSession,
        ca_bundle: str = "", client_assertion: Callable[[], Awaitable[str]] | None = None,
    ) -> None:
        self._authority = authority.rstrip("/")
        self._client_id = client_id
        self._home = home_tenant_id
        self._session = session
        self._tls = tls_context(ca_bundle)
        self._client_assertion = client_assertion  # None: a public client (the device code flow)
        self._refresh: str | None = None
        self._tokens: dict[tuple[str, str], tuple[str, float]] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._device: tuple[str, tuple[str, ...]] = ("", ())
        self.admin: PartnerAdmin | None = None
        self.monotonic: Callable[[], float] = time.monotonic
        self.sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    @classmethod
    def for_settings(cls, settings: Settings, session: aiohttp.ClientSession, *, tenant_id: str | None = None,
                     client_assertion: Callable[[], Awaitable[str]] | None = None) -> DelegatedSignIn:
        """A sign-in to the MSP app at the MSP tenant (or `tenant_id`, a customer's admin at their own tenant);
        with `client_assertion` a confidential client (the web flow), without it a public one (device code)."""
        return cls(authority=settings.authority_host, client_id=settings.msp_app_client_id,
                   home_tenant_id=tenant_id or settings.msp_tenant_id, session=session,
                   ca_bundle=settings.ca_bundle, client_assertion=client_assertion)

    # Signing in

    def authorize_url(self, redirect_uri: str, state: str, code_challenge: str, *, login_hint: str | None = None,
                      scopes: Sequence[str] = SIGN_IN_SCOPES) -> str:
        """Where the browser goes to sign in (the partner tenant's authorize endpoint, PKCE S256)."""
        query = {"client_id": self._client_id, "response_type": "code", "redirect_uri": redirect_uri,
                 "response_mode": "query", "scope": " ".join(scopes), "state": state,
                 "code_challenge": code_challenge, "code_challenge_method": "S256"}
        if login_hint:
            query["login_hint"] = login_hint
        return f"{self._authority}/{self._home}/oauth2/v2.0/authorize?{urlencode(query)}"

    async def redeem_code(self, code: str, redirect_uri: str, code_verifier: str,
                          scopes: Sequence[str] = SIGN_IN_SCOPES) -> PartnerAdmin:
        """Exchange the authorization code (with the client assertion); the signed-in admin."""
        form = {"grant_type": "authorization_code", "client_id": self._client_id, "code": code,
                "redirect_uri": redirect_uri, "code_verifier": code_verifier, "scope": " ".join(scopes)}
        try:
            answer = await self._post(self._home, form, confidential=True)
        except _OAuthError as error:
            raise error.translated(self._home) from None
        return self._signed_in(answer, scopes)

    async def start_device_code(self, scopes: Sequence[str] = SIGN_IN_SCOPES) -> DeviceCodePrompt:
        """Begin the device code flow; show the prompt's message to the admin, then `wait_device_code`."""
        url = f"{self._authority}/{self._home}/oauth2/v2.0/devicecode"
        try:
            doc = await self._form(url, {"client_id": self._client_id, "scope": " ".join(scopes)}, self._home)
        except _OAuthError as error:
            raise error.translated(self._home) from None
        self._device = (str(doc["device_code"]), tuple(scopes))
        return DeviceCodePrompt(str(doc["user_code"]), str(doc["verification_uri"]), str(doc.get("message", "")),
                                int(doc.get("expires_in", 900)), int(doc.get("interval", 5)))

    async def wait_device_code(self, prompt: DeviceCodePrompt) -> PartnerAdmin:
        """Poll until the admin approved (the signed-in admin), declined or let the code expire (PartnerRefused)."""
        device_code, scopes = self._device
        interval = max(prompt.interval, 1)
        deadline = self.monotonic() + prompt.expires_in
        form = {"grant_type": DEVICE_CODE_GRANT, "client_id": self._client_id, "device_code": device_code}
        wait = float(interval)
        throttled = 0
        while True:
            await self.sleep(wait)
            wait = float(interval)
            try:
                answer = await self._post(self._home, form, confidential=False)
            except Throttled as error:
                # Entra answers a token request made too often (any flow) with 429 and Retry-After, and a 5xx
                # without it (MSAL.NET "Client and server throttling"): the code is still good, so wait and poll on
                # until it expires rather than losing the admin's sign-in.
                throttled += 1
                left = deadline - self.monotonic()
                if left <= 0:
                    raise
                wait = min(_device_backoff(error.retry_after, throttled, interval), left)
                log.info("device code poll throttled", extra={"wait_seconds": wait})
                continue
            except _OAuthError as error:
                throttled = 0
                if error.error == "authorization_pending" and self.monotonic() < deadline:
                    continue
                if error.error == "slow_down":
                    interval += 5  # RFC 8628 section 3.5: this and every later poll
                    wait = float(interval)
                    continue
                if error.error == "authorization_declined":
                    raise PartnerRefused("the sign-in was declined on the verification page",
                                         code="authorization_declined", fix="Run the command again and approve the "
                                         "sign-in.") from None
                if error.error in ("expired_token", "authorization_pending"):
                    raise PartnerRefused("the device code expired before the sign-in", code="expired_token",
                                         fix="Run the command again and complete the sign-in within "
                                         f"{prompt.expires_in // 60} minutes.") from None
                raise error.translated(self._home) from None
            return self._signed_in(answer, scopes)

    async def resume(self, refresh_token: str) -> PartnerAdmin:
        """Sign in again from a refresh token kept (in Key Vault) at the admin's request: a resumed run."""
        self._refresh = refresh_token
        self._tokens.clear()
        form = {"grant_type": "refresh_token", "client_id": self._client_id, "refresh_token": refresh_token,
                "scope": " ".join(SIGN_IN_SCOPES)}
        try:
            answer = await self._post(self._home, form, confidential=self._client_assertion is not None)
        except _OAuthError as error:
            self._refresh = None
            raise error.translated(self._home) from None
        return self._signed_in(answer, SIGN_IN_SCOPES)

    def _signed_in(self, answer: dict[str, Any], scopes: Sequence[str]) -> PartnerAdmin:
        claims = _claims(str(answer["access_token"]))
        self._refresh = answer.get("refresh_token") or self._refresh
        resource = _resource_of(scopes)
        if resource:
            self._keep(self._home, resource, answer)
        self.admin = PartnerAdmin(tenant_id=str(claims.get("tid", self._home)), object_id=str(claims.get("oid", "")),
                                  user_principal_name=str(claims.get("upn") or claims.get("preferred_username") or ""),
                                  display_name=str(claims.get("name", "")))
        log.info("partner admin signed in", extra={"admin": self.admin.user_principal_name})
        return self.admin

    # Tokens per tenant and resource

    async def access_token(self, tenant_id: str, resource: str = GRAPH) -> str:
        """An access token for the resource in the tenant (the partner's own or a customer's), from the refresh
        token; cached until shortly before it expires. PartnerRefused with the fix when Entra refuses."""
        key = (tenant_id.lower(), resource)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            cached = self._tokens.get(key)
            if cached is not None and cached[1] > self.monotonic():
                return cached[0]
            if self._refresh is None:
                raise PartnerRefused("nobody is signed in", code="NotSignedIn", fix="Sign in first.")
            scope = PARTNER_CENTER_SCOPE if resource == PARTNER_CENTER else f"{resource}/.default"
            form = {"grant_type": "refresh_token", "client_id": self._client_id, "refresh_token": self._refresh,
                    "scope": scope}
            try:
                answer = await self._post(tenant_id, form, confidential=self._client_assertion is not None)
            except _OAuthError as error:
                if resource == PARTNER_CENTER and error.description.startswith("AADSTS65001"):
                    name, fix = _PARTNER_CENTER_NOT_CONSENTED
                    raise PartnerRefused(f"Entra refused the Partner Center token: {error.description}", code=name,
                                         fix=fix) from None
                raise error.translated(self._home) from None
            self._refresh = answer.get("refresh_token") or self._refresh
            return self._keep(tenant_id, resource, answer)

    def _keep(self, tenant_id: str, resource: str, answer: dict[str, Any]) -> str:
        token = str(answer["access_token"])
        self._tokens[(tenant_id.lower(), resource)] = (token, self.monotonic() + float(answer.get("expires_in", 0))
                                                       - _EARLY)
        return token

    def refresh_token_for_vault(self) -> str | None:
        """The current refresh token, for a caller that was asked to keep it (and keeps it in Key Vault only)."""
        return self._refresh

    @property
    def public_client(self) -> bool:
        """Signed in as a public client (the device code flow): its refresh token is redeemed without the
        client assertion."""
        return self._client_assertion is None

    async def close(self) -> None:
        """Forget every token."""
        self._refresh = None
        self._tokens.clear()
        self._device = ("", ())

    # HTTP

    async def _post(self, tenant_id: str, form: dict[str, str], *, confidential: bool) -> dict[str, Any]:
        if confidential:
            if self._client_assertion is None:
                raise RotationError("a confidential sign-in needs the client assertion", code="NoClientAssertion")
            form = {**form, "client_assertion_type": ASSERTION_TYPE, "client_assertion": await self._client_assertion()}
        return await self._form(f"{self._authority}/{tenant_id}/oauth2/v2.0/token", form, tenant_id)

    async def _form(self, url: str, form: dict[str, str], tenant_id: str) -> dict[str, Any]:
        try:
            async with self._session.post(url, data=form, ssl=self._tls, timeout=_TIMEOUT,
                                          allow_redirects=False) as response:
                body = await response.read()
                status, retry_after = response.status, response.headers.get("Retry-After")
        except (aiohttp.ClientError, TimeoutError) as error:
            # Only the type: an aiohttp error's text may quote the request.
            raise RotationError(f"the token endpoint did not answer ({type(error).__name__})",
                                code="TokenEndpointUnavailable") from None
        try:
            doc: dict[str, Any] = json.loads(body)
        except ValueError:
            doc = {}
        if status == 200 and isinstance(doc, dict) and ("access_token" in doc or "device_code" in doc):
            return doc
        if status == 429 or status >= 500:
            raise Throttled(f"the token endpoint answered HTTP {status}", code="TokenEndpointUnavailable",
                            retry_after=_seconds(retry_after))
        raise _OAuthError(str(doc.get("error", f"HTTP {status}")), str(doc.get("error_description", "")), tenant_id)


class _OAuthError(Exception):
    """An OAuth error answer of the token endpoint (`error`, the first line of `error_description`)."""

    def __init__(self, error: str, description: str, tenant_id: str) -> None:
        first = description.replace("\r", "\n").split("\n")[0].split(" Trace ID")[0][:300]
        super().__init__(f"{error}: {first}")
        self.error, self.description, self.tenant_id = error, first, tenant_id

    def translated(self, home_tenant_id: str = "") -> RotationError:
        code = self.description.split(":")[0] if self.description.startswith("AADSTS") else ""
        if code == "AADSTS65001" and home_tenant_id and self.tenant_id.lower() == home_tenant_id.lower():
            name, fix = _SIGN_IN_NOT_CONSENTED
            return PartnerRefused(f"Entra refused the partner admin's sign-in: {self.description}", code=name, fix=fix)
        if code in _REFUSALS:
            name, fix = _REFUSALS[code]
            return PartnerRefused(f"Entra refused the sign-in for tenant {self.tenant_id}: {self.description}",
                                  code=name, fix=fix)
        return RotationError(f"Entra refused the sign-in for tenant {self.tenant_id}: {self.error}: "
                             f"{self.description}", code=code or self.error)


def _resource_of(scopes: Sequence[str]) -> str | None:
    for scope in scopes:
        prefix, _, _ = scope.rpartition("/")
        if prefix:
            return prefix
    return None


def _claims(token: str) -> dict[str, Any]:
    """The claims of an access token just received from the token endpoint over TLS (read, not verified: the
    identity it names is checked by every service it is sent to)."""
    try:
        payload = token.split(".")[1]
        doc: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return {}
    return doc


_DEVICE_BACKOFF_LONGEST = 60.0  # never wait longer than this between two polls of a device code


def _device_backoff(retry_after: float | None, attempt: int, interval: int) -> float:
    """How long to wait after the `attempt`-th throttled poll: Entra's Retry-After when it gave a usable one (never
    less than the polling interval), else exponential from the interval (1, 2, 4 ... times it), capped."""
    if retry_after is not None and retry_after == retry_after and retry_after > 0:
        return min(max(retry_after, float(interval)), _DEVICE_BACKOFF_LONGEST)
    return min(float(interval) * float(2 ** min(attempt - 1, 10)), _DEVICE_BACKOFF_LONGEST)


def _seconds(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
