"""The real azure-keyvault-secrets (aio) against the sandbox's vault, and azure-data-tables (aio) against Azurite.

The wiring here is what the product's adapters copy (see sandbox/README.md, "Key Vault").
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from azure.core import MatchConditions
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.data.tables import UpdateMode
from azure.data.tables.aio import TableServiceClient
from azure.identity.aio import ClientSecretCredential, ManagedIdentityCredential
from azure.keyvault.secrets.aio import SecretClient

from tests.material import client_secret

KV_APP_ID = "4b7e0000-0000-4000-8000-0000000000a1"
KV_APP_SECRET = client_secret("Kvt")


async def vault_client(sb: Any, credential: Any) -> SecretClient:
    """A SecretClient pointed at the sandbox: its CA trusted, the challenge resource check off."""
    return SecretClient(
        vault_url=sb.settings["KEY_VAULT_URL"],
        credential=credential,
        verify_challenge_resource=False,
        connection_verify=sb.ca_file,
    )


@pytest.fixture
async def client_secret_credential(sb: Any) -> AsyncIterator[ClientSecretCredential]:
    """An app registered in the MSP tenant, signing in with a client secret at the sandbox's Entra."""
    tenant = sb.control.msp()["tenantId"]
    sb.control.seed(
        {
            "tenants": [
                {
                    "id": tenant,
                    "applications": [
                        {
                            "appId": KV_APP_ID,
                            "displayName": "kv-integration-test",
                            "passwordCredentials": [{"secretText": KV_APP_SECRET, "endDateTime": "+1d"}],
                        }
                    ],
                }
            ]
        }
    )
    credential = ClientSecretCredential(
        tenant,
        KV_APP_ID,
        KV_APP_SECRET,
        authority=sb.settings["AZURE_AUTHORITY_HOST"],
        disable_instance_discovery=True,
        connection_verify=sb.ca_file,
    )
    async with credential:
        yield credential


@pytest.mark.sandbox
async def test_secret_lifecycle_with_the_real_sdk(sb: Any, client_secret_credential: ClientSecretCredential) -> None:
    async with await vault_client(sb, client_secret_credential) as client:
        first = await client.set_secret("sync-secret-contoso", "value-1", tags={"stage": "current"})
        second = await client.set_secret(
            "sync-secret-contoso", "value-2", content_type="text/plain", tags={"stage": "pending", "rotation-id": "r1"}
        )
        assert first.properties.version != second.properties.version
        assert len(second.properties.version or "") == 32

        latest = await client.get_secret("sync-secret-contoso")
        assert latest.value == "value-2" and latest.properties.tags == {"stage": "pending", "rotation-id": "r1"}
        older = await client.get_secret("sync-secret-contoso", first.properties.version)
        assert older.value == "value-1"

        versions = [p async for p in client.list_properties_of_secret_versions("sync-secret-contoso")]
        assert {p.version for p in versions} == {first.properties.version, second.properties.version}
        names = [p.name async for p in client.list_properties_of_secrets()]
        assert names == ["sync-secret-contoso"]

        updated = await client.update_secret_properties(
            "sync-secret-contoso", second.properties.version, tags={"stage": "current", "rotation-id": "r1"}
        )
        assert updated.tags == {"stage": "current", "rotation-id": "r1"}
        await client.update_secret_properties("sync-secret-contoso", first.properties.version, enabled=False)
        with pytest.raises(HttpResponseError) as disabled:
            await client.get_secret("sync-secret-contoso", first.properties.version)
        assert disabled.value.status_code == 403

        deleted = await client.delete_secret("sync-secret-contoso")
        assert deleted.recovery_id and deleted.scheduled_purge_date
        with pytest.raises(ResourceNotFoundError):
            await client.get_secret("sync-secret-contoso")
        assert [d.name async for d in client.list_deleted_secrets()] == ["sync-secret-contoso"]

        recovered = await client.recover_deleted_secret("sync-secret-contoso")
        assert recovered.name == "sync-secret-contoso"
        assert (await client.get_secret("sync-secret-contoso")).value == "value-2"

        await client.delete_secret("sync-secret-contoso")
        await client.purge_deleted_secret("sync-secret-contoso")
        with pytest.raises(ResourceNotFoundError):
            await client.get_deleted_secret("sync-secret-contoso")


@pytest.mark.sandbox
async def test_managed_identity_credential_reads_the_vault(sb: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The App Service managed identity endpoint of the sandbox (IDENTITY_ENDPOINT/IDENTITY_HEADER) also works."""
    monkeypatch.setenv("IDENTITY_ENDPOINT", sb.settings["IDENTITY_ENDPOINT"])
    monkeypatch.setenv("IDENTITY_HEADER", sb.settings["IDENTITY_HEADER"])
    sb.control.seed({"keyvault": {"secrets": [{"name": "vircom-portal-auth", "value": "Bearer x"}]}})
    async with (
        ManagedIdentityCredential(client_id=sb.settings["AZURE_CLIENT_ID"]) as credential,
        await vault_client(sb, credential) as client,
    ):
        assert (await client.get_secret("vircom-portal-auth")).value == "Bearer x"


@pytest.mark.sandbox
async def test_an_app_of_another_tenant_cannot_read_the_vault(sb: Any) -> None:
    """The challenge names the MSP tenant, so a customer tenant's app gets no vault token at all."""
    tenant = "7e570000-0000-4000-8000-0000000000b1"
    sb.control.seed({"tenants": [{"id": tenant, "name": "Elsewhere", "applications": [
        {"appId": KV_APP_ID, "passwordCredentials": [{"secretText": KV_APP_SECRET, "endDateTime": "+1d"}]}]}]})
    credential = ClientSecretCredential(
        tenant, KV_APP_ID, KV_APP_SECRET, authority=sb.settings["AZURE_AUTHORITY_HOST"],
        disable_instance_discovery=True, connection_verify=sb.ca_file, additionally_allowed_tenants=["*"],
    )
    async with credential, await vault_client(sb, credential) as client:
        with pytest.raises(ClientAuthenticationError) as refused:
            await client.get_secret("anything")
    assert "AADSTS700016" in str(refused.value)


@pytest.mark.azurite
async def test_tables_etag_guarded_update_against_azurite() -> None:
    connection_string = os.environ.get("STATE_TABLES_CONNECTION_STRING")
    if not connection_string:
        pytest.skip("needs Azurite: run under scripts/with-azurite.sh")
    table_name = f"state{uuid.uuid4().hex[:12]}"
    async with TableServiceClient.from_connection_string(connection_string) as service:
        table = await service.create_table(table_name)
        try:
            entity = {"PartitionKey": "tenant-1", "RowKey": "app-1", "stage": "idle"}
            await table.upsert_entity(entity)
            stored = await table.get_entity("tenant-1", "app-1")
            etag = stored.metadata["etag"]

            stored["stage"] = "creating"
            await table.update_entity(
                stored, mode=UpdateMode.REPLACE, etag=etag, match_condition=MatchConditions.IfNotModified
            )
            assert (await table.get_entity("tenant-1", "app-1"))["stage"] == "creating"

            stale = {"PartitionKey": "tenant-1", "RowKey": "app-1", "stage": "pending"}
            with pytest.raises(ResourceModifiedError) as conflict:
                await table.update_entity(
                    stale, mode=UpdateMode.MERGE, etag=etag, match_condition=MatchConditions.IfNotModified
                )
            assert conflict.value.status_code == 412
            assert (await table.get_entity("tenant-1", "app-1"))["stage"] == "creating"
        finally:
            await service.delete_table(table_name)
