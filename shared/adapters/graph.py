"""Directory on Microsoft Graph (msgraph-sdk): app registrations and their password credentials."""

from __future__ import annotations

import asyncio
import ssl
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx
from azure.core.exceptions import ClientAuthenticationError
from kiota_abstractions.api_error import APIError
from kiota_abstractions.base_request_configuration import RequestConfiguration
from kiota_authentication_azure.azure_identity_authentication_provider import AzureIdentityAuthenticationProvider
from kiota_http.kiota_client_factory import KiotaClientFactory
from kiota_http.middleware import RetryHandler
from msgraph.generated.applications.applications_request_builder import ApplicationsRequestBuilder
from msgraph.generated.applications.item.add_password.add_password_post_request_body import (
    AddPasswordPostRequestBody,
)
from msgraph.generated.applications.item.remove_password.remove_password_post_request_body import (
    RemovePasswordPostRequestBody,
)
from msgraph.generated.models.application import Application as GraphApplication
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.models.password_credential import PasswordCredential
from msgraph.graph_request_adapter import GraphRequestAdapter
from msgraph.graph_service_client import GraphServiceClient
from msgraph_core import GraphClientFactory
from msgraph_core.middleware import GraphTelemetryHandler

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

T = TypeVar("T")
_SELECT = ["id", "appId", "displayName", "passwordCredentials"]
_READ_ATTEMPTS = 4


def _retry_after(error: APIError) -> float | None:
    headers = error.response_headers or {}
    for name, value in headers.items():
        if name.lower() == "retry-after":
            try:
                return float(value)
            except (TypeError, ValueError):
                return None
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
    if isinstance(error, ODataError | APIError):
        status = error.response_status_code or 0
        code, message = "GraphError", str(error)
        if isinstance(error, ODataError) and error.error is not None:
            code = error.error.code or code
            message = error.error.message or message
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
            return Throttled(text, code=code, retry_after=_retry_after(error))
        if creating and status >= 500:
            # Any other server error after the request was sent: the credential may exist. Never retry blindly;
            # the next advance finds it through the rotation id in its display name.
            return Ambiguous(text, code=code)
        if status in (500, 502, 503, 504):
            # Reads and removals are idempotent: a transient server error may be retried.
            return Throttled(text, code=code, retry_after=_retry_after(error))
        return RotationError(text, code=code)
    if isinstance(error, httpx.HTTPError):
        text = f"{what} in tenant {tenant_id}: {type(error).__name__}"
        return Ambiguous(text, code="NetworkError") if creating else RotationError(text, code="NetworkError")
    raise error


def _credential(pc: PasswordCredential) -> Credential:
    end = pc.end_date_time or datetime.max.replace(tzinfo=UTC)
    return Credential(
        key_id=str(pc.key_id),
        display_name=pc.display_name or "",
        start=pc.start_date_time,
        end=end if end.tzinfo else end.replace(tzinfo=UTC),
        hint=pc.hint or "",
    )


def _application(app: GraphApplication) -> Application:
    return Application(
        object_id=str(app.id),
        app_id=str(app.app_id),
        display_name=app.display_name or "",
        credentials=tuple(_credential(pc) for pc in app.password_credentials or []),
    )


class GraphDirectory:
    """Directory over msgraph-sdk with one shared HTTP client and a Graph client per tenant.

    Kiota's retry handler is left out on purpose: it would retry addPassword on 503/504, and a blind
    retry can create a second credential. Reads are retried here, on throttling only.
    """

    def __init__(
        self, credentials: Credentials, base_url: str, ca_bundle: str = "", rotator_client_id: str = ""
    ) -> None:
        self._credentials = credentials
        # The client id the rotator signs in to customer tenants with (the MSP app, or the managed identity):
        # its service principal there is who must own the target apps.
        self._rotator_client_id = rotator_client_id
        self._principals: dict[str, Principal] = {}
        self._base_url = base_url.rstrip("/")
        host = httpx.URL(self._base_url).host
        middleware = [m for m in KiotaClientFactory.get_default_middleware(None) if not isinstance(m, RetryHandler)]
        middleware.append(GraphTelemetryHandler())
        verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=ca_bundle) if ca_bundle else True
        http = httpx.AsyncClient(verify=verify, timeout=httpx.Timeout(30.0), base_url=self._base_url)
        self._http = GraphClientFactory.create_with_custom_middleware(middleware, client=http)
        self._allowed_hosts = [host]
        self._clients: dict[str, GraphServiceClient] = {}
        self.sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    def _client(self, tenant_id: str) -> GraphServiceClient:
        client = self._clients.get(tenant_id)
        if client is None:
            auth = AzureIdentityAuthenticationProvider(
                self._credentials.graph(tenant_id), scopes=[GRAPH_SCOPE], allowed_hosts=self._allowed_hosts
            )
            adapter = GraphRequestAdapter(auth, client=self._http)
            adapter.base_url = self._base_url
            client = GraphServiceClient(request_adapter=adapter)
            self._clients[tenant_id] = client
        return client

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

    async def get_application(self, tenant_id: str, app_id: str) -> Application:
        client = self._client(tenant_id)
        config = RequestConfiguration(
            query_parameters=ApplicationsRequestBuilder.ApplicationsRequestBuilderGetQueryParameters(
                filter=f"appId eq '{_guid(app_id)}'", select=_SELECT
            )
        )

        async def call() -> Application:
            page = await client.applications.get(request_configuration=config)
            found = (page.value if page else None) or []
            if not found:
                raise AppNotFound(
                    f"no app registration with appId {app_id} exists in tenant {tenant_id}", code="AppNotFound"
                )
            return _application(found[0])

        return await self._read(tenant_id, f"reading app {app_id}", call)

    async def add_password(self, tenant_id: str, object_id: str, display_name: str, end: datetime) -> NewCredential:
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
        client = self._client(tenant_id)
        body = RemovePasswordPostRequestBody(key_id=uuid.UUID(key_id))

        async def call() -> None:
            await client.applications.by_application_id(object_id).remove_password.post(body)

        try:
            await self._read(tenant_id, f"removing secret {key_id}", call, writing=True)
        except (AppNotFound, NotFound):
            # Already gone: removal is idempotent, as a re-run after a crash needs it to be.
            return

    async def rotator_principal(self, tenant_id: str) -> Principal | None:
        """The rotator's own service principal in the tenant: GET /servicePrincipals(appId='{client id}').

        Looked up by the client id the rotator signs in with (not from the access token, which a client must treat
        as opaque); cached, since it does not change. None when no client id is configured (a system-assigned
        identity): the ownership check is then left to the write's own 403.
        """
        if not self._rotator_client_id:
            return None
        cached = self._principals.get(tenant_id)
        if cached is not None:
            return cached
        client = self._client(tenant_id)
        builder = client.service_principals_with_app_id(self._rotator_client_id)

        async def call() -> Principal:
            sp = await builder.get()
            if sp is None or not sp.id:
                raise NotFound(f"no service principal of {self._rotator_client_id}", code="ServicePrincipalNotFound")
            return Principal(str(sp.id), str(sp.app_id or self._rotator_client_id), sp.display_name or "")

        try:
            principal = await self._read(tenant_id, "reading the rotator's service principal", call)
        except (AppNotFound, NotFound) as error:
            raise Unreachable(
                f"the rotator (client id {self._rotator_client_id}) has no service principal in tenant {tenant_id}: "
                "admin consent is missing", code="ServicePrincipalNotFound",
            ) from error
        self._principals[tenant_id] = principal
        return principal

    async def ownership(self, tenant_id: str, object_id: str) -> Ownership:
        principal = await self.rotator_principal(tenant_id)
        if principal is None:
            return Ownership(True, None)
        client = self._client(tenant_id)
        owners: set[str] = set()
        link: str | None = None
        while True:

            async def call(url: str | None = link) -> Any:
                builder = client.applications.by_application_id(object_id).owners
                return await (builder.with_url(url) if url else builder).get()

            page = await self._read(tenant_id, f"listing the owners of {object_id}", call)
            owners |= {str(o.id).lower() for o in (page.value if page else None) or [] if o.id}
            link = page.odata_next_link if page else None
            if not link:
                break
        return Ownership(principal.object_id.lower() in owners, principal)

    async def find_applications(self, tenant_id: str, name_prefixes: Sequence[str]) -> list[Application]:
        client = self._client(tenant_id)
        found: dict[str, Application] = {}
        for prefix in name_prefixes:
            escaped = prefix.replace("'", "''")
            config = RequestConfiguration(
                query_parameters=ApplicationsRequestBuilder.ApplicationsRequestBuilderGetQueryParameters(
                    filter=f"startswith(displayName,'{escaped}')", select=_SELECT, top=999
                )
            )
            link: str | None = None
            while True:

                async def call(url: str | None = link, c: RequestConfiguration[Any] = config) -> Any:
                    builder = client.applications.with_url(url) if url else client.applications
                    return await builder.get(request_configuration=None if url else c)

                page = await self._read(tenant_id, "listing apps", call)
                for app in (page.value if page else None) or []:
                    found[str(app.id)] = _application(app)
                link = page.odata_next_link if page else None
                if not link:
                    break
        return sorted(found.values(), key=lambda a: a.display_name.lower())

    async def close(self) -> None:
        await self._http.aclose()


def _guid(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError as error:
        raise AppNotFound(f"{value!r} is not an application (client) id", code="InvalidAppId") from error
