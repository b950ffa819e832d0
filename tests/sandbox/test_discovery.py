"""The sandbox's discovery document names only what it serves: the device code endpoint it advertises
(`device_authorization_endpoint`, as Entra's v2.0 discovery document does) answers a device authorization request
(sandbox/README.md); Key Vault serves a secret past its `exp`, as the vault does. The refresh token of an
authorization code asked with `offline_access` is proved by tests/api/test_partner_signin.py (the real hand-over
keeps it)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import requests

from tests.conftest import SandboxHandle
from tests.destinations import seed, vault_store
from tests.sandbox.test_partner import MSP, MSP_APP


def test_every_endpoint_of_the_discovery_document_is_served(sb: SandboxHandle) -> None:
    for tenant in (MSP, "organizations", "common"):
        doc = requests.get(f"{sb.endpoints['entra']}/{tenant}/v2.0/.well-known/openid-configuration",
                           verify=sb.ca_file, timeout=10).json()
        device = requests.post(doc["device_authorization_endpoint"],
                               data={"client_id": MSP_APP, "scope": "User.Read offline_access"},
                               verify=sb.ca_file, timeout=10)
        assert device.status_code == 200, device.text
        assert device.json()["device_code"] and device.json()["verification_uri"].endswith("/devicelogin")
        assert doc["device_authorization_endpoint"] == f"{sb.endpoints['entra']}/{tenant}/oauth2/v2.0/devicecode"
        assert "offline_access" in doc["scopes_supported"]




async def test_key_vault_serves_a_secret_past_its_expiry_as_the_vault_does(sb: SandboxHandle) -> None:
    """Key Vault's `exp` is a marker, not a refusal (Azure/AzureKeyVault#19): the product must enforce it itself."""
    seed(sb)
    async with vault_store(sb) as store:
        client = store._client  # the store's real aio SecretClient
        await client.set_secret("expired-marker", "v", expires_on=datetime.now(UTC) - timedelta(hours=1))
        secret = await client.get_secret("expired-marker")
        assert secret.value == "v" and secret.properties.expires_on is not None
