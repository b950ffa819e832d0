"""Key Vault's set-secret is sent once (issue 22, item 11): the real azure-keyvault-secrets client, built as the
composition root builds it (shared/adapters/retries.py), against the sandbox's vault with a fault after the work.

azure-core's default retry policy sends the PUT again after a 500/503 or a dropped connection, and every PUT makes a
new version: one value ends in two versions. With SendOnceRetryPolicy the write is sent once and the error reaches
the adapter (Ambiguous), whose caller looks for the stored version; throttling (nothing written) and reads keep
their retries."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from azure.core.exceptions import AzureError
from azure.core.pipeline.transport import AioHttpTransport
from azure.identity.aio import ClientSecretCredential
from azure.keyvault.secrets.aio import SecretClient

from shared.adapters.identity import close_transport
from shared.adapters.retries import SendOnceRetryPolicy, key_vault_write_once, send_once_transport
from shared.tls import tls_context
from tests.integration.test_sdks_keyvault_tables import client_secret_credential  # noqa: F401 - a fixture

pytestmark = pytest.mark.sandbox
NAME = "ppsync-send-once"
FAST = {"retry_backoff_factor": 0.01}


@asynccontextmanager
async def client(sb: Any, credential: ClientSecretCredential, once: bool) -> AsyncIterator[SecretClient]:
    """As shared/bootstrap.py builds it (once=True) over a pooled aiohttp session, or as the SDK would by default."""
    pool = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=tls_context(sb.ca_file)))
    shared = AioHttpTransport(session=pool, session_owner=False)
    transport = send_once_transport(shared) if once else shared
    options: dict[str, Any] = {"retry_policy": SendOnceRetryPolicy(key_vault_write_once, **FAST)} if once else FAST
    try:
        async with SecretClient(vault_url=sb.settings["KEY_VAULT_URL"], credential=credential,
                                verify_challenge_resource=False, transport=transport, **options) as kv:
            yield kv
    finally:
        if transport is not shared:
            await close_transport(transport)
        await close_transport(shared)


async def versions(kv: SecretClient) -> int:
    return len([p async for p in kv.list_properties_of_secret_versions(NAME)])


FAULTS = {"500": {"status": 500}, "503": {"status": 503}, "drop": {"drop": True}}


@pytest.mark.parametrize("fault", FAULTS)
async def test_a_set_secret_whose_answer_is_lost_is_not_sent_again(
    sb: Any, client_secret_credential: ClientSecretCredential, fault: str,  # noqa: F811
) -> None:
    async with client(sb, client_secret_credential, once=True) as kv:
        await kv.set_secret(NAME, "warm-up")  # the token and the challenge, outside the fault
        sb.control.add_fault("keyvault", method="PUT", path=f"/secrets/{NAME}$", when="after", **FAULTS[fault])
        with pytest.raises(AzureError):
            await kv.set_secret(NAME, "the-value")
        assert await versions(kv) == 2, "stored once: the warm-up and the value"


@pytest.mark.parametrize("fault", FAULTS)
async def test_the_sdk_defaults_send_it_twice(
    sb: Any, client_secret_credential: ClientSecretCredential, fault: str,  # noqa: F811
) -> None:
    """Why: the client as the SDK and aiohttp build it stores the value in two versions after each of the faults."""
    async with client(sb, client_secret_credential, once=False) as kv:
        await kv.set_secret(NAME, "warm-up")
        sb.control.add_fault("keyvault", method="PUT", path=f"/secrets/{NAME}$", when="after", **FAULTS[fault])
        await kv.set_secret(NAME, "the-value")  # the second send answers 200
        assert await versions(kv) == 3


async def test_throttled_writes_and_failed_reads_are_still_retried(
    sb: Any, client_secret_credential: ClientSecretCredential,  # noqa: F811
) -> None:
    async with client(sb, client_secret_credential, once=True) as kv:
        await kv.set_secret(NAME, "warm-up")
        sb.control.add_fault("keyvault", method="PUT", path=f"/secrets/{NAME}$", status=429, retry_after=0)
        await kv.set_secret(NAME, "the-value")  # 429: nothing was written, so the retry is safe
        sb.control.add_fault("keyvault", method="GET", path=f"/secrets/{NAME}/?$", status=503)
        assert (await kv.get_secret(NAME)).value == "the-value"
        assert await versions(kv) == 2
