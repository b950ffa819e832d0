"""SecretStore on Azure Key Vault (azure-keyvault-secrets, async)."""

from __future__ import annotations

from datetime import datetime

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.keyvault.secrets.aio import SecretClient

from shared.domain import Secret
from shared.errors import Ambiguous, NotFound, RotationError, Throttled, Unreachable
from shared.ports import SecretVersion

CONTENT_TYPE = "application/x-entra-client-secret"


def _translate(error: AzureError, what: str) -> RotationError:
    text = f"Key Vault: {what}"
    if isinstance(error, ResourceNotFoundError):
        return NotFound(f"{text}: not found", code="SecretNotFound")
    if isinstance(error, ClientAuthenticationError):
        return Unreachable(f"{text}: access denied", code="KeyVaultAccessDenied")
    if isinstance(error, HttpResponseError):
        code = (error.error.code if error.error else None) or f"HTTP{error.status_code}"
        if error.status_code == 429:
            headers = getattr(error.response, "headers", None) or {}
            retry = headers.get("Retry-After")
            return Throttled(f"{text}: throttled", code=code, retry_after=float(retry) if retry else None)
        if error.status_code in (401, 403):
            return Unreachable(f"{text}: {code}", code=code)
        return RotationError(f"{text}: {code} (HTTP {error.status_code})", code=code)
    if isinstance(error, ServiceRequestError | ServiceResponseError):
        return Ambiguous(f"{text}: {type(error).__name__}", code="NetworkError")
    return RotationError(f"{text}: {type(error).__name__}", code="KeyVaultError")


class KeyVaultSecretStore:
    """One secret name per target; every rotation adds a version tagged with its stage and rotation id."""

    def __init__(self, client: SecretClient) -> None:
        self._client = client

    async def add_version(self, name: str, secret: Secret, tags: dict[str, str], expires: datetime) -> str:
        try:
            stored = await self._client.set_secret(
                name, secret.reveal(), tags=tags, content_type=CONTENT_TYPE, expires_on=expires
            )
        except AzureError as error:
            raise _translate(error, f"storing a version of {name}") from None
        return str(stored.properties.version)

    async def list_versions(self, name: str) -> list[SecretVersion]:
        try:
            return [
                SecretVersion(
                    version=str(p.version),
                    tags=dict(p.tags or {}),
                    expires=p.expires_on,
                    created=p.created_on,
                    enabled=bool(p.enabled),
                )
                async for p in self._client.list_properties_of_secret_versions(name)
            ]
        except ResourceNotFoundError:
            return []
        except AzureError as error:
            raise _translate(error, f"listing versions of {name}") from error

    async def get_value(self, name: str, version: str) -> Secret:
        try:
            bundle = await self._client.get_secret(name, version)
        except AzureError as error:
            raise _translate(error, f"reading {name}/{version}") from error
        if bundle.value is None:
            raise NotFound(f"Key Vault: {name}/{version} has no value", code="SecretNotFound")
        return Secret(bundle.value)

    async def set_tags(self, name: str, version: str, tags: dict[str, str]) -> None:
        try:
            await self._client.update_secret_properties(name, version, tags=tags)
        except AzureError as error:
            raise _translate(error, f"tagging {name}/{version}") from error

    async def get_named(self, name: str) -> Secret:
        try:
            bundle = await self._client.get_secret(name)
        except AzureError as error:
            raise _translate(error, f"reading {name}") from error
        if bundle.value is None:
            raise NotFound(f"Key Vault: {name} has no value", code="SecretNotFound")
        return Secret(bundle.value)

    async def close(self) -> None:
        await self._client.close()
