"""Directory on Microsoft Graph (msgraph-sdk): app registrations and their password credentials."""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import aiohttp
import orjson
from azure.core.exceptions import ClientAuthenticationError

from shared.adapters.identity import GRAPH_SCOPE, Credentials, unreachable
from shared.domain import Application, Credential, Secret
from shared.errors import (
    Ambiguous,
    AppNotFound,
    NotFound,
    NotOwner,
    PolicyBlocked,
    PolicyLifetime,
    RotationError,
    Throttled,
    Unreachable,
)
from shared.ports import NewCredential, Ownership, Principal
from shared.tls import tls_context

if TYPE_CHECKING:
    import httpx
    from azure.core.credentials_async import AsyncTokenCredential
    from kiota_abstractions.api_error import APIError
    from msgraph.generated.models.password_credential import PasswordCredential
    from msgraph.graph_service_client import GraphServiceClient

T = TypeVar("T")
_SELECT = "id,appId,displayName,passwordCredentials"
_READ_ATTEMPTS = 4
_READ_TIMEOUT = aiohttp.ClientTimeout(total=30)
# Tenants whose clients (credential, Graph client) stay cached: enough for every target worked on at once, so a
# pass over thousands of customers keeps a bounded number (each holds a token cache and a pipeline).
TENANTS_CACHED = 256
# How long the rotator's service principal in a tenant is trusted from cache: the services live as long as the worker
# process, and a customer who removes and grants consent again gets a new service principal.
PRINCIPAL_TTL_SECONDS = 3600.0


class GraphAnswer(Exception):
    """An error answer to one of the plain reads: its status, Graph's error code and message, Retry-After."""

    def __init__(self, status: int, code: str, message: str, retry_after: float | None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after


def _seconds(value: object) -> float | None:
    try:
        return float(str(value))
    except (TypeError, ValueError):
        return None


def _retry_after(error: APIError) -> float | None:
    headers = error.response_headers or {}
    for name, value in headers.items():
        if name.lower() == "retry-after":
            return _seconds(value)
    return None


def _translate(
    error: Exception, tenant_id: str, what: str, *, creating: bool = False, writing: bool = False
) -> RotationError:
    """Graph and transport errors as the engine branches on them; chained by the caller.

    A 403 on a write is a missing ownership (OwnedBy reads every app but writes only owned ones); on a read it is
    a missing permission. The two app-management policy refusals of addPassword are 400s that created nothing.
    """
    if isinstance(error, RotationError):
        return error
    if isinstance(error, ClientAuthenticationError):
        return unreachable(error, tenant_id)
    if isinstance(error, GraphAnswer):
        return _answer(error.status, error.code, error.message, error.retry_after, tenant_id, what,
                       creating=creating, writing=writing)
    # httpx carries msgraph-sdk's writes only and is imported with them (it costs a fresh process 25-90 ms).
    httpx = sys.modules.get("httpx")
    if isinstance(error, aiohttp.ClientError | TimeoutError | json.JSONDecodeError) or (
        httpx is not None and isinstance(error, httpx.HTTPError)
    ):
        text = f"{what} in tenant {tenant_id}: {type(error).__name__}"
        return Ambiguous(text, code="NetworkError") if creating else RotationError(text, code="NetworkError")
    from kiota_abstractions.api_error import APIError
    from msgraph.generated.models.o_data_errors.o_data_error import ODataError

    if isinstance(error, ODataError | APIError):
        status = error.response_status_code or 0
        code, message = "GraphError", str(error)
        if isinstance(error, ODataError) and error.error is not None:
            code = error.error.code or code
            message = error.error.message or message
        return _answer(status, code, message, _retry_after(error), tenant_id, what, creating=creating,
                       writing=writing)
    raise error


def _answer(
    status: int, code: str, message: str, retry_after: float | None, tenant_id: str, what: str, *,
    creating: bool, writing: bool,
) -> RotationError:
    """One Graph error answer as the engine branches on it."""
    text = f"{what} in tenant {tenant_id}: {message}"
    if status == 404:
        return AppNotFound(text, code=code)
    if code == "CredentialTypeNotAllowedAsPerAppPolicy":
        return PolicyBlocked(text, code=code)
    if code == "CredentialInvalidLifetimeAsPerAppPolicy":
        return PolicyLifetime(text, code=code)
    if status == 403 and writing and code == "Authorization_RequestDenied":
        return NotOwner(text, code="NotOwner")
    if status in (401, 403):
        return Unreachable(text, code=code)
    # Only these answers say that nothing was written (README): a write may be retried after them.
    if status == 429 or (status in (409, 503) and code == "Directory_ConcurrencyViolation"):
        return Throttled(text, code=code, retry_after=retry_after)
    if creating and status >= 500:
        # Any other server error after the request was sent: the credential may exist. Never retry blindly;
        # the next advance finds it through the rotation id in its display name.
        return Ambiguous(text, code=code)
    if status in (500, 502, 503, 504):
        # Reads and removals are idempotent: a transient server error may be retried.
        return Throttled(text, code=code, retry_after=retry_after)
    return RotationError(text, code=code)


def _credential(pc: PasswordCredential) -> Credential:
    end = pc.end_date_time or datetime.max.replace(tzinfo=UTC)
    return Credential(
        key_id=str(pc.key_id),
        display_name=pc.display_name or "",
        start=pc.start_date_time,
        end=end if end.tzinfo else end.replace(tzinfo=UTC),
        hint=pc.hint or "",
    )


def _when(value: object) -> datetime | None:
    """An ISO 8601 instant as Graph writes it (`Z`, up to 7 fractional digits) as an aware datetime."""
    if not isinstance(value, str) or not value:
        return None
    text = value.replace("Z", "+00:00")
    if "." in text:  # Python reads at most 6 fractional digits
        head, _, tail = text.partition(".")
        digits = len(tail) - len(tail.lstrip("0123456789"))
        text = f"{head}.{tail[:min(digits, 6)]}{tail[digits:]}" if digits else head + tail
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _credential_of(doc: dict[str, Any]) -> Credential:
    """A passwordCredential of Graph's JSON (never with its secretText)."""
    return Credential(
        key_id=str(doc.get("keyId") or "").lower(),
        display_name=doc.get("displayName") or "",
        start=_when(doc.get("startDateTime")),
        end=_when(doc.get("endDateTime")) or datetime.max.replace(tzinfo=UTC),
        hint=doc.get("hint") or "",
    )


def _application_of(doc: dict[str, Any]) -> Application:
    """An application of Graph's JSON ($select=id,appId,displayName,passwordCredentials)."""
    return Application(
        object_id=str(doc.get("id") or ""),
        app_id=str(doc.get("appId") or ""),
        display_name=doc.get("displayName") or "",
        credentials=tuple(_credential_of(pc) for pc in doc.get("passwordCredentials") or []),
    )


class GraphDirectory:
    """Directory over Microsoft Graph: reads as plain GETs parsed here, writes through msgraph-sdk.

    Reads (the app, its owners, the rotator's service principal) are a few fields of JSON: msgraph-sdk's model
    deserialisation of an `Application` costs milliseconds of CPU per object and its import about a second, so
    reads skip it and msgraph-sdk is imported on the first write only. Kiota's retry handler is left out of the
    write client on purpose: it would retry addPassword on 503/504, and a blind retry can create a second
    credential. Reads are retried here, on throttling only.
    """

    def __init__(
        self, credentials: Credentials, base_url: str, session: aiohttp.ClientSession, ca_bundle: str = "",
        rotator_client_id: str = "",
    ) -> None:
        self._credentials = credentials
        # The client id the rotator signs in to customer tenants with (the MSP app, or the managed identity):
        # its service principal there is who must own the target apps.
        self._rotator_client_id = rotator_client_id
        self._principals: OrderedDict[str, tuple[float, Principal]] = OrderedDict()
        self.monotonic: Callable[[], float] = time.monotonic
        self._base_url = base_url.rstrip("/")
        self._verify = tls_context(ca_bundle)
        # Reads share the process's aiohttp session (its pool and TLS context) with the Azure SDK clients: httpx's
        # pool costs about ten times the CPU per request at the concurrency of a pass (docs/benchmarks.md).
        self._reads = session
        self._writes: httpx.AsyncClient | None = None
        self._clients: OrderedDict[str, GraphServiceClient] = OrderedDict()
        self.sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    def _client(self, tenant_id: str) -> GraphServiceClient:
        """msgraph-sdk's client for a tenant (writes only): imported and built on first use, a bounded few kept."""
        client = self._clients.get(tenant_id)
        if client is not None:
            self._clients.move_to_end(tenant_id)
            return client
        import httpx
        from kiota_authentication_azure.azure_identity_authentication_provider import (
            AzureIdentityAuthenticationProvider,
        )
        from kiota_http.kiota_client_factory import KiotaClientFactory
        from kiota_http.middleware import RetryHandler
        from msgraph.graph_request_adapter import GraphRequestAdapter
        from msgraph.graph_service_client import GraphServiceClient
        from msgraph_core import GraphClientFactory
        from msgraph_core.middleware import GraphTelemetryHandler

        if self._writes is None:
            middleware = [m for m in KiotaClientFactory.get_default_middleware(None)
                          if not isinstance(m, RetryHandler)]
            middleware.append(GraphTelemetryHandler())
            http = httpx.AsyncClient(verify=self._verify, timeout=httpx.Timeout(30.0), base_url=self._base_url)
            self._writes = GraphClientFactory.create_with_custom_middleware(middleware, client=http)
        auth = AzureIdentityAuthenticationProvider(
            self._credentials.graph(tenant_id), scopes=[GRAPH_SCOPE], allowed_hosts=[httpx.URL(self._base_url).host]
        )
        adapter = GraphRequestAdapter(auth, client=self._writes)
        adapter.base_url = self._base_url
        client = GraphServiceClient(request_adapter=adapter)
        self._clients[tenant_id] = client
        while len(self._clients) > TENANTS_CACHED:
            self._clients.popitem(last=False)
        return client

    async def _get(self, tenant_id: str, url: str, params: dict[str, str] | None = None) -> dict[str, Any]:
        """One plain GET of Graph JSON with the tenant's token; an error answer raised as GraphAnswer."""
        doc: dict[str, Any] = await get_json(self._reads, self._credentials.graph(tenant_id),
                                             url if url.startswith("https://") else self._base_url + url, params,
                                             _READ_TIMEOUT)
        return doc

    async def _read(
        self, tenant_id: str, what: str, call: Callable[[], Awaitable[T]], *, writing: bool = False
    ) -> T:
        for attempt in range(1, _READ_ATTEMPTS + 1):
            try:
                return await call()
            except Exception as error:
                translated = _translate(error, tenant_id, what, writing=writing)
                if isinstance(translated, Throttled) and attempt < _READ_ATTEMPTS:
                    await self.sleep(translated.retry_after or float(attempt))
                    continue
                raise translated from error
        raise AssertionError("unreachable")

    async def _pages(self, tenant_id: str, what: str, url: str, params: dict[str, str]) -> list[dict[str, Any]]:
        """Every item of a collection, following @odata.nextLink."""
        items: list[dict[str, Any]] = []
        link: str | None = url
        query: dict[str, str] | None = params
        while link:

            async def call(at: str = link, q: dict[str, str] | None = query) -> dict[str, Any]:
                return await self._get(tenant_id, at, q)

            page = await self._read(tenant_id, what, call)
            items += page.get("value") or []
            link, query = page.get("@odata.nextLink"), None
        return items

    async def get_application(self, tenant_id: str, app_id: str) -> Application:
        params = {"$filter": f"appId eq '{_guid(app_id)}'", "$select": _SELECT}
        found = await self._pages(tenant_id, f"reading app {app_id}", "/applications", params)
        if not found:
            raise AppNotFound(f"no app registration with appId {app_id} exists in tenant {tenant_id}",
                              code="AppNotFound")
        return _application_of(found[0])

    async def add_password(self, tenant_id: str, object_id: str, display_name: str, end: datetime) -> NewCredential:
        from msgraph.generated.applications.item.add_password.add_password_post_request_body import (
            AddPasswordPostRequestBody,
        )
        from msgraph.generated.models.password_credential import PasswordCredential

        client = self._client(tenant_id)
        body = AddPasswordPostRequestBody(
            password_credential=PasswordCredential(display_name=display_name, end_date_time=end)
        )
        try:
            created = await client.applications.by_application_id(object_id).add_password.post(body)
        except Exception as error:
            raise _translate(
                error, tenant_id, f"adding a secret to {object_id}", creating=True, writing=True
            ) from error
        if created is None or not created.secret_text or created.key_id is None:
            raise Ambiguous(f"addPassword in tenant {tenant_id} returned no secret", code="NoSecretReturned")
        return NewCredential(_credential(created), Secret(created.secret_text))

    async def remove_password(self, tenant_id: str, object_id: str, key_id: str) -> None:
        from msgraph.generated.applications.item.remove_password.remove_password_post_request_body import (
            RemovePasswordPostRequestBody,
        )

        client = self._client(tenant_id)
        body = RemovePasswordPostRequestBody(key_id=uuid.UUID(key_id))

        async def call() -> None:
            await client.applications.by_application_id(object_id).remove_password.post(body)

        try:
            await self._read(tenant_id, f"removing secret {key_id}", call, writing=True)
        except (AppNotFound, NotFound):
            # Already gone: removal is idempotent, as a re-run after a crash needs it to be.
            return

    async def remove_owner(self, tenant_id: str, object_id: str, principal_id: str) -> bool:
        client = self._client(tenant_id)

        async def call() -> None:
            owners = client.applications.by_application_id(object_id).owners
            await owners.by_directory_object_id(principal_id).ref.delete()

        try:
            await self._read(tenant_id, f"removing owner {principal_id} of app {object_id}", call, writing=True)
        except (AppNotFound, NotFound):
            # 404: the principal is not (or no longer) an owner; the caller read the app just before.
            return False
        return True

    async def rotator_principal(self, tenant_id: str) -> Principal | None:
        """The rotator's own service principal in the tenant: GET /servicePrincipals(appId='{client id}').

        Looked up by the client id the rotator signs in with (not from the access token, which a client must treat
        as opaque); cached (a bounded few, for PRINCIPAL_TTL_SECONDS), since it changes only with a new consent. None
        when no client id is configured (a system-assigned identity): the ownership check is then left to the
        write's own 403.
        """
        if not self._rotator_client_id:
            return None
        cached = self._principals.get(tenant_id)
        if cached is not None and self.monotonic() - cached[0] < PRINCIPAL_TTL_SECONDS:
            return cached[1]
        url = f"/servicePrincipals(appId='{self._rotator_client_id}')"

        async def call() -> Principal:
            sp = await self._get(tenant_id, url, {"$select": "id,appId,displayName"})
            if not sp.get("id"):
                raise NotFound(f"no service principal of {self._rotator_client_id}", code="ServicePrincipalNotFound")
            return Principal(str(sp["id"]), str(sp.get("appId") or self._rotator_client_id),
                             sp.get("displayName") or "")

        try:
            principal = await self._read(tenant_id, "reading the rotator's service principal", call)
        except (AppNotFound, NotFound) as error:
            raise Unreachable(
                f"the rotator (client id {self._rotator_client_id}) has no service principal in tenant {tenant_id}: "
                "admin consent is missing", code="ServicePrincipalNotFound",
            ) from error
        self._principals[tenant_id] = (self.monotonic(), principal)
        self._principals.move_to_end(tenant_id)
        while len(self._principals) > TENANTS_CACHED:
            self._principals.popitem(last=False)
        return principal

    async def ownership(self, tenant_id: str, app_id: str) -> Ownership:
        # The principal and the owners are independent reads: one round trip instead of two. The app is addressed
        # by its appId (GET /applications(appId='{appId}')/owners), so this needs no read of the app first.
        principal, owners = await asyncio.gather(
            self.rotator_principal(tenant_id),
            self._pages(tenant_id, f"listing the owners of app {app_id}",
                        f"/applications(appId='{_guid(app_id)}')/owners", {"$select": "id"}),
        )
        if principal is None:
            return Ownership(True, None)
        ids = {str(o.get("id")).lower() for o in owners if o.get("id")}
        return Ownership(principal.object_id.lower() in ids, principal)

    async def find_applications(self, tenant_id: str, name_prefixes: Sequence[str]) -> list[Application]:
        found: dict[str, Application] = {}
        for prefix in name_prefixes:
            escaped = prefix.replace("'", "''")
            params = {"$filter": f"startswith(displayName,'{escaped}')", "$select": _SELECT, "$top": "999"}
            for doc in await self._pages(tenant_id, "listing apps", "/applications", params):
                app = _application_of(doc)
                found[app.object_id] = app
        return sorted(found.values(), key=lambda a: a.display_name.lower())

    @property
    def closed(self) -> bool:
        """True once the session its reads go through is closed (with the services)."""
        return bool(self._reads.closed)

    async def close(self) -> None:
        """Close the write client; the read session is the transport's, closed with it."""
        if self._writes is not None:
            await self._writes.aclose()


def _guid(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError as error:
        raise AppNotFound(f"{value!r} is not an application (client) id", code="InvalidAppId") from error


async def get_json(session: aiohttp.ClientSession, credential: AsyncTokenCredential, url: str,
                   params: dict[str, str] | None, limit: aiohttp.ClientTimeout) -> Any:
    """One plain GET of Graph JSON with a token of `credential` (never following a redirect); an error answer
    raised as GraphAnswer with Graph's own code and message."""
    token = await credential.get_token(GRAPH_SCOPE)
    headers = {"Authorization": f"Bearer {token.token}", "Accept": "application/json"}
    async with session.get(url, params=params, timeout=limit, allow_redirects=False, headers=headers) as response:
        body = await response.read()
        if response.status >= 400:
            code, message = "GraphError", f"HTTP {response.status}"
            try:
                error = json.loads(body).get("error") or {}
                code, message = error.get("code") or code, error.get("message") or message
            except (ValueError, AttributeError):
                pass
            raise GraphAnswer(response.status, code, message, _seconds(response.headers.get("Retry-After")))
    return orjson.loads(body)  # twice as fast as json.loads on the inventory's pages of 100 objects


async def read_retrying(fetch: Callable[[], Awaitable[T]], tenant_id: str, what: str, attempts: int,
                        sleep: Callable[[float], Awaitable[None]],
                        refusal: Callable[[GraphAnswer], Exception | None] = lambda answer: None) -> T:
    """A read (it changes nothing) retried while Graph throttles or has a transient error, after the wait it asks
    for; the reader's own `refusal` of an answer raised as it is, every other error translated as graph.py does."""
    for attempt in range(1, attempts + 1):
        try:
            return await fetch()
        except GraphAnswer as answer:
            refused = refusal(answer)
            if refused is not None:
                raise refused from answer
            error = _translate(answer, tenant_id, what)
        except Exception as failure:  # the transport's and the credential's errors
            error = _translate(failure, tenant_id, what)
        if isinstance(error, Throttled) and attempt < attempts:
            await sleep(error.retry_after or float(attempt))
            continue
        raise error
    raise AssertionError("unreachable")
