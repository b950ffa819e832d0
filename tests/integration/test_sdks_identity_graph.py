"""The real azure-identity and msgraph-sdk against the sandbox: the wiring the product's adapters copy."""

from __future__ import annotations

import ssl
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from azure.core.exceptions import ClientAuthenticationError
from azure.identity import ManagedIdentityCredential
from azure.identity.aio import ClientAssertionCredential, ClientSecretCredential
from kiota_abstractions.base_request_configuration import RequestConfiguration
from kiota_authentication_azure.azure_identity_authentication_provider import AzureIdentityAuthenticationProvider
from msgraph.generated.applications.applications_request_builder import ApplicationsRequestBuilder
from msgraph.generated.applications.item.add_password.add_password_post_request_body import (
    AddPasswordPostRequestBody,
)
from msgraph.generated.applications.item.remove_password.remove_password_post_request_body import (
    RemovePasswordPostRequestBody,
)
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.models.password_credential import PasswordCredential
from msgraph.graph_request_adapter import GraphRequestAdapter
from msgraph.graph_service_client import GraphServiceClient
from msgraph_core import GraphClientFactory

from tests.conftest import SandboxHandle
from tests.material import client_secret

pytestmark = pytest.mark.sandbox

CUSTOMER = "c0000000-0000-4000-8000-000000000031"
OTHER = "c0000000-0000-4000-8000-000000000032"
PPE_APP = "a0000000-0000-4000-8000-000000000031"
PPE_OBJECT = "b0000000-0000-4000-8000-000000000031"
NOBODY_APP = "a0000000-0000-4000-8000-000000000032"
OTHER_APP = "a0000000-0000-4000-8000-000000000033"
NOBODY_SECRET = client_secret("nob")
OTHER_SECRET = client_secret("oth")
GRAPH_SCOPE = "https://graph.microsoft.com/.default"


def seed(sb: SandboxHandle) -> None:
    sb.control.seed(
        {
            "tenants": [
                {
                    "id": CUSTOMER,
                    "name": "Fabrikam",
                    "applications": [
                        {"appId": PPE_APP, "id": PPE_OBJECT, "displayName": "Proofpoint Essentials",
                         "owners": ["msp-app"]},
                        {"appId": NOBODY_APP, "displayName": "No permissions", "owners": ["msp-app"],
                         "passwordCredentials": [{"secretText": NOBODY_SECRET, "endDateTime": "+30d"}]},
                    ]
                    + [{"appId": str(uuid.UUID(int=i + 1)), "displayName": f"PPE {i:02d}", "owners": ["msp-app"]}
                       for i in range(5)],
                    "grants": [{"appId": "msp-app", "roles": ["Application.ReadWrite.OwnedBy"]}],
                },
                {
                    "id": OTHER,
                    "name": "Northwind",
                    "applications": [{"appId": OTHER_APP, "displayName": "Proofpoint",
                                      "passwordCredentials": [{"secretText": OTHER_SECRET, "endDateTime": "+30d"}]}],
                    "grants": [{"appId": OTHER_APP, "roles": ["Application.ReadWrite.All"]}],
                },
            ]
        }
    )


AnyCredential = ClientSecretCredential | ClientAssertionCredential


def graph_client(sb: SandboxHandle, credential: AnyCredential) -> GraphServiceClient:
    """The wiring documented in sandbox/README.md."""
    tls = ssl.create_default_context(cafile=sb.ca_file)
    http_client = GraphClientFactory.create_with_default_middleware(client=httpx.AsyncClient(verify=tls))
    auth = AzureIdentityAuthenticationProvider(credential, scopes=[GRAPH_SCOPE], allowed_hosts=["127.0.0.1"])
    adapter = GraphRequestAdapter(auth, client=http_client)
    adapter.base_url = sb.settings["GRAPH_BASE_URL"]
    return GraphServiceClient(request_adapter=adapter)


def secret_credential(sb: SandboxHandle, tenant: str, app_id: str, secret: str) -> ClientSecretCredential:
    return ClientSecretCredential(
        tenant, app_id, secret,
        authority=sb.settings["AZURE_AUTHORITY_HOST"], disable_instance_discovery=True,
        connection_verify=sb.ca_file,
    )


@pytest.fixture
async def msp_credential(
    sb: SandboxHandle, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[ClientAssertionCredential]:
    """The MSP app in the customer tenant, signed in with the managed identity's assertion (no secret)."""
    monkeypatch.setenv("IDENTITY_ENDPOINT", sb.settings["IDENTITY_ENDPOINT"])
    monkeypatch.setenv("IDENTITY_HEADER", sb.settings["IDENTITY_HEADER"])
    managed = ManagedIdentityCredential(client_id=sb.settings["AZURE_CLIENT_ID"])

    def assertion() -> str:
        return str(managed.get_token("api://AzureADTokenExchange/.default").token)

    credential = ClientAssertionCredential(
        CUSTOMER, sb.settings["MSP_APP_CLIENT_ID"], assertion,
        authority=sb.settings["AZURE_AUTHORITY_HOST"], disable_instance_discovery=True,
        connection_verify=sb.ca_file,
    )
    yield credential
    await credential.close()
    managed.close()


async def test_client_secret_credential_gets_a_token(sb: SandboxHandle) -> None:
    seed(sb)
    async with secret_credential(sb, OTHER, OTHER_APP, OTHER_SECRET) as credential:
        token = await credential.get_token(GRAPH_SCOPE)
    assert token.token and token.expires_on > 0


async def test_wrong_secret_raises_with_the_aadsts_code(sb: SandboxHandle) -> None:
    seed(sb)
    async with secret_credential(sb, OTHER, OTHER_APP, "wrong") as credential:
        with pytest.raises(ClientAuthenticationError, match="AADSTS7000215"):
            await credential.get_token(GRAPH_SCOPE)


async def test_list_filter_page_add_and_remove_password(
    sb: SandboxHandle, msp_credential: ClientAssertionCredential
) -> None:
    seed(sb)
    client = graph_client(sb, msp_credential)
    query = ApplicationsRequestBuilder.ApplicationsRequestBuilderGetQueryParameters(
        filter=f"appId eq '{PPE_APP}'", select=["id", "appId", "displayName", "passwordCredentials"]
    )
    found = await client.applications.get(request_configuration=RequestConfiguration(query_parameters=query))
    assert found is not None and found.value is not None
    assert [(a.id, a.app_id) for a in found.value] == [(PPE_OBJECT, PPE_APP)]

    paged = ApplicationsRequestBuilder.ApplicationsRequestBuilderGetQueryParameters(
        filter="startswith(displayName,'PPE')", top=2
    )
    page = await client.applications.get(request_configuration=RequestConfiguration(query_parameters=paged))
    names: list[str] = []
    while page is not None:
        names += [a.display_name or "" for a in page.value or []]
        page = await client.applications.with_url(page.odata_next_link).get() if page.odata_next_link else None
    assert names == [f"PPE {i:02d}" for i in range(5)]

    body = AddPasswordPostRequestBody(password_credential=PasswordCredential(display_name="rotation 7"))
    created = await client.applications.by_application_id(PPE_OBJECT).add_password.post(body)
    assert created is not None and created.secret_text and created.key_id is not None
    async with secret_credential(sb, CUSTOMER, PPE_APP, created.secret_text) as ppe:
        assert (await ppe.get_token(GRAPH_SCOPE)).token

    await client.applications.by_application_id(PPE_OBJECT).remove_password.post(
        RemovePasswordPostRequestBody(key_id=created.key_id)
    )
    app = await client.applications.by_application_id(PPE_OBJECT).get()
    assert app is not None and app.password_credentials == []


async def test_tenant_isolation(sb: SandboxHandle) -> None:
    seed(sb)
    async with secret_credential(sb, OTHER, OTHER_APP, OTHER_SECRET) as credential:
        client = graph_client(sb, credential)
        listed = await client.applications.get()
        assert listed is not None and [a.app_id for a in listed.value or []] == [OTHER_APP]
        with pytest.raises(ODataError) as caught:
            await client.applications.by_application_id(PPE_OBJECT).get()
    assert caught.value.response_status_code == 404
    assert caught.value.error is not None and caught.value.error.code == "Request_ResourceNotFound"


async def test_no_permission_is_403(sb: SandboxHandle) -> None:
    seed(sb)
    async with secret_credential(sb, CUSTOMER, NOBODY_APP, NOBODY_SECRET) as credential:
        with pytest.raises(ODataError) as caught:
            await graph_client(sb, credential).applications.get()
    assert caught.value.response_status_code == 403
    assert caught.value.error is not None and caught.value.error.code == "Authorization_RequestDenied"


async def test_graph_sdk_retries_a_429_after_retry_after(sb: SandboxHandle) -> None:
    seed(sb)
    sb.control.add_fault("graph", method="GET", path=r"/applications$", status=429, retry_after=1)
    async with secret_credential(sb, OTHER, OTHER_APP, OTHER_SECRET) as credential:
        listed = await graph_client(sb, credential).applications.get()
    assert listed is not None and [a.app_id for a in listed.value or []] == [OTHER_APP]
    assert sb.control.faults() == []  # the fault was hit, then the SDK's retry succeeded
