"""Credentials for each identity mode of DESIGN.md, cached per tenant.

- managed-identity: the function's user-assigned managed identity calls Graph in its own tenant.
- federated: the MSP's multi-tenant app, trusting the managed identity through a federated identity
  credential; per customer tenant a ClientAssertionCredential fed by the identity's token for
  api://AzureADTokenExchange. No secret of our own is stored anywhere.
The sandbox plays the managed identity endpoint (IDENTITY_ENDPOINT) and the authority, so the same
code runs locally, in tests and in Azure.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import OrderedDict
from typing import Any
from urllib.parse import urlparse

import aiohttp
from azure.core.credentials import AccessToken, AccessTokenInfo
from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import AzureError, ClientAuthenticationError
from azure.core.pipeline.transport import AioHttpTransport
from azure.identity import ManagedIdentityCredential as SyncManagedIdentityCredential
from azure.identity.aio import ClientAssertionCredential, ClientSecretCredential, ManagedIdentityCredential

from shared.domain import Secret, TokenRefusal
from shared.errors import RotationError, Unreachable
from shared.settings import IdentityMode, Settings
from shared.tls import tls_context
from shared.verify_probe import HEADER

GRAPH_SCOPE = "https://graph.microsoft.com/.default"
TOKEN_EXCHANGE_SCOPE = "api://AzureADTokenExchange/.default"  # noqa: S105 - a scope, not a secret
_KNOWN_AUTHORITIES = {"login.microsoftonline.com", "login.microsoftonline.us", "login.chinacloudapi.cn"}
_AADSTS = re.compile(r"AADSTS\d+")
# Customer tenants whose credential (and its token cache) stays cached: a pass works on SCAN_CONCURRENCY of them at
# once, so memory stays flat however many customers there are. A credential dropped here needs no close: the
# transport it uses is shared and closed with the Credentials.
TENANTS_CACHED = 256
KEEPALIVE_SECONDS = 4.0
REFRESH_OFFSET = 300  # azure-identity's DEFAULT_REFRESH_OFFSET: a token this close to its expiry is refreshed


def shared_transport(settings: Settings, pool_size: int) -> AioHttpTransport:
    """One HTTP transport for every Azure SDK client and credential of an invocation.

    Connections are pooled across tenants' credentials, Key Vault and Tables instead of a session per client, and
    the sandbox's CA is loaded once (a per-request `connection_verify` path would build an SSL context, and a new
    TLS connection, for every request). Must be created inside the running event loop; close with close_transport.
    """
    # The pool outlives invocations (bootstrap.invocation_services), so a connection may idle between them: the
    # client closes an idle one after KEEPALIVE_SECONDS, before a server does (Node's default, Azurite's, is 5 s).
    # A request sent on a connection the server is closing at that moment is reset, and so are its retries when
    # every pooled connection went stale together.
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(
        ssl=tls_context(settings.ca_bundle), limit=pool_size, keepalive_timeout=KEEPALIVE_SECONDS))
    return AioHttpTransport(session=session, session_owner=False)


async def close_transport(transport: AioHttpTransport) -> None:
    if transport.session is not None:
        await transport.session.close()


def authority_options(settings: Settings) -> dict[str, Any]:
    """The authority, and instance discovery off for one that is not a public Entra cloud (the sandbox)."""
    options: dict[str, Any] = {"authority": settings.authority_host}
    if urlparse(settings.authority_host).hostname not in _KNOWN_AUTHORITIES:
        options["disable_instance_discovery"] = True
    return options


def unreachable(error: ClientAuthenticationError, tenant_id: str) -> Unreachable:
    """An authentication failure as the operator needs it: the AADSTS code and Entra's first sentence."""
    text = str(error.message or error)
    match = _AADSTS.search(text)
    code = match.group(0) if match else "AuthenticationFailed"
    first = text[match.start():] if match else text
    first = first.split("\n")[0].split(" Trace ID")[0][:300]
    return Unreachable(f"cannot authenticate to tenant {tenant_id}: {first}", code=code)


class OneRequestAtATime(AsyncTokenCredential):
    """A credential whose callers wait for each other's token request instead of each making their own, and which
    hands out the token it got for as long as azure-identity would hand out its cached one without asking.

    azure-identity's async credentials ask the identity platform whenever their cache has no valid token, so
    requests sent side by side with an empty cache (an assessment's Graph reads, a pass's first Tables and Key Vault
    calls) would each fetch one. Here the first caller for a scope fetches it and the others then find it in the
    cache; callers for another scope (the managed identity serves Tables, Key Vault and the queue) do not wait.

    The token kept: azure-identity answers a cached token's request by searching MSAL's token cache (8 us a call on
    the benchmarks' machine, 0.3 us kept: docs/benchmarks.md, sixth round; a tenant's first inventory pass asks 11
    times, a rotation's assessment 3 or more) and returns it unchanged while
    its refresh status is "not needed" (azure/identity/_internal/utils.py get_refresh_status: before the token's
    refresh_on and more than DEFAULT_REFRESH_OFFSET, 300 s, before its expiry). The same token is returned here
    for that time without asking; past it, or for a request with options (claims, tenant, CAE), the credential is
    asked as before and decides.
    """

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._locks: dict[tuple[str, ...], asyncio.Lock] = {}
        self._kept: dict[tuple[str, ...], tuple[AccessToken, float]] = {}  # scopes -> token, kept until

    def _lock(self, scopes: tuple[str, ...]) -> asyncio.Lock:
        lock = self._locks.get(scopes)
        if lock is None:
            lock = self._locks[scopes] = asyncio.Lock()
        return lock

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        if kwargs:
            async with self._lock(scopes):
                asked: AccessToken = await self._inner.get_token(*scopes, **kwargs)
                return asked
        kept = self._kept.get(scopes)
        if kept is not None and time.time() < kept[1]:
            return kept[0]
        async with self._lock(scopes):
            kept = self._kept.get(scopes)
            if kept is not None and time.time() < kept[1]:  # fetched by the caller this one waited for
                return kept[0]
            info: AccessTokenInfo = await self._inner.get_token_info(*scopes)
            token = AccessToken(info.token, info.expires_on)
            until = info.expires_on - REFRESH_OFFSET
            if info.refresh_on is not None:
                until = min(until, info.refresh_on)
            self._kept[scopes] = (token, until)
            return token

    async def get_token_info(self, *scopes: str, options: Any = None) -> AccessTokenInfo:
        async with self._lock(scopes):
            info: AccessTokenInfo = await self._inner.get_token_info(*scopes, options=options)
            return info

    async def close(self) -> None:
        self._kept.clear()
        await self._inner.close()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class Credentials:
    """Builds and caches the credentials of one process."""

    def __init__(self, settings: Settings, transport: AioHttpTransport) -> None:
        self._settings = settings
        self._transport = transport
        self._home: AsyncTokenCredential | None = None
        self._per_tenant: OrderedDict[str, AsyncTokenCredential] = OrderedDict()
        self._exchange: SyncManagedIdentityCredential | None = None

    def home(self) -> AsyncTokenCredential:
        """The managed identity: Key Vault, Tables, and Graph in single-tenant mode."""
        if self._home is None:
            kwargs: dict[str, Any] = {"transport": self._transport}
            if self._settings.managed_identity_client_id:
                kwargs["client_id"] = self._settings.managed_identity_client_id
            self._home = OneRequestAtATime(ManagedIdentityCredential(**kwargs))
        return self._home

    def graph(self, tenant_id: str) -> AsyncTokenCredential:
        """The credential that calls Graph in a customer tenant."""
        s = self._settings
        if s.identity_mode is IdentityMode.MANAGED_IDENTITY:
            if s.msp_tenant_id and tenant_id.lower() != s.msp_tenant_id.lower():
                raise Unreachable(
                    f"tenant {tenant_id} is not the function's own tenant: single-tenant (managed-identity) mode "
                    "cannot reach it; use IDENTITY_MODE=federated",
                    code="TenantNotReachableInSingleTenantMode",
                )
            return self.home()
        cached = self._per_tenant.get(tenant_id)
        if cached is not None:
            self._per_tenant.move_to_end(tenant_id)
            return cached
        cached = OneRequestAtATime(ClientAssertionCredential(
            tenant_id, s.msp_app_client_id, self._assertion, transport=self._transport, **authority_options(s)
        ))
        self._per_tenant[tenant_id] = cached
        while len(self._per_tenant) > TENANTS_CACHED:
            self._per_tenant.popitem(last=False)
        return cached

    def _assertion(self) -> str:
        # ClientAssertionCredential calls this synchronously; the managed identity caches its token,
        # so the local identity endpoint is asked about once an hour.
        if self._exchange is None:
            kwargs: dict[str, Any] = {}
            if self._settings.managed_identity_client_id:
                kwargs["client_id"] = self._settings.managed_identity_client_id
            self._exchange = SyncManagedIdentityCredential(**kwargs)
        return str(self._exchange.get_token(TOKEN_EXCHANGE_SCOPE).token)

    async def client_assertion(self) -> str:
        """The MSP app's client assertion (the managed identity's token for api://AzureADTokenExchange): what a
        delegated sign-in to the MSP app (shared.adapters.delegated) authenticates the rotator with."""
        return await asyncio.to_thread(self._assertion)

    async def close(self) -> None:
        for credential in [*self._per_tenant.values(), *([self._home] if self._home else [])]:
            await credential.close()
        self._per_tenant.clear()
        self._home = None


# Answers of the token endpoint that say nothing about the secret: the service is busy or failing (Microsoft's AADSTS
# reference: 50033 RetryableError, 90006 ExternalServerRetryableError, 90024 RequestBudgetExceededError "a transient
# error", 90033 MSODS unavailable; OAuth's `temporarily_unavailable`), or answered with a server error.
_TRANSIENT_CODES = frozenset({"AADSTS50033", "AADSTS90006", "AADSTS90024", "AADSTS90033"})
_OAUTH_ERROR = re.compile(r"error '\((\w+)\)")


def refusal_of(error: ClientAuthenticationError) -> TokenRefusal:
    """Entra's refusal as the protocol needs it: the AADSTS code and Entra's first sentence; RotationError when the
    answer was a transient failure, which says nothing about the secret."""
    text = str(error.message or error)
    match = _AADSTS.search(text)
    code = match.group(0) if match else ""
    # Entra's first sentence, after the code: "AADSTS7000112: Application '<id>'(<name>) is disabled."
    first = text[match.end():].lstrip(": ") if match else text
    first = first.replace("\r", "\n").split("\n")[0].split(" Trace ID")[0]
    first = (first.split(". ")[0].rstrip(".") + ".")[:300]
    status = getattr(error.response, "status_code", None) if error.response is not None else None
    oauth = _OAUTH_ERROR.search(str(error.message or error))
    if code in _TRANSIENT_CODES or (status is not None and (status >= 500 or status == 429)) \
            or (oauth is not None and oauth.group(1) == "temporarily_unavailable"):
        raise RotationError(f"the token endpoint failed (HTTP {status}): {code} {first}".replace("  ", " "),
                            code="TokenEndpointUnavailable")
    return TokenRefusal(code, f"{code}: {first}" if code else first)


class EntraTokenProbe:
    """TokenProbe: asks the identity platform for a client-credentials token with a secret."""

    def __init__(self, settings: Settings, transport: AioHttpTransport) -> None:
        self._settings = settings
        self._transport = transport

    async def try_token(self, tenant_id: str, app_id: str, secret: Secret, request_id: str = "") -> TokenRefusal | None:
        s = self._settings
        # azure-identity's ClientSecretCredential runs its token request through azure-core's RequestIdPolicy
        # (azure/identity/_internal/pipeline.py `RequestIdPolicy(**kwargs)`, fed the credential's keyword
        # arguments), which sends `x-ms-client-request-id` with a fresh uuid1 by default. Named `client-request-id`
        # and given our id, it sends the header Entra keeps as the sign-in's correlationId, on every retry alike.
        probe_id = {"request_id_header_name": HEADER, "request_id": request_id} if request_id else {}
        credential = ClientSecretCredential(
            tenant_id, app_id, secret.reveal(), transport=self._transport, **authority_options(s), **probe_id
        )
        try:
            await credential.get_token(GRAPH_SCOPE)
            return None
        except ClientAuthenticationError as error:
            return refusal_of(error)
        except AzureError as error:
            # No answer (a dropped connection, a timeout): nothing is known about the secret. Only the type is kept:
            # an SDK error's text may quote the request.
            raise RotationError(f"the token endpoint did not answer ({type(error).__name__})",
                                code="TokenEndpointUnavailable") from None
        finally:
            await credential.close()
