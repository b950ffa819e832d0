"""SecretStore on Azure Key Vault (azure-keyvault-secrets, async)."""

from __future__ import annotations

import asyncio
import base64
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.keyvault.secrets import SecretProperties
from azure.keyvault.secrets.aio import SecretClient

from shared.domain import Credential, Secret, Target, VersionStage
from shared.errors import Ambiguous, NotFound, RotationError, Throttled, Unreachable
from shared.ports import StoredVersion

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
        if (error.status_code or 0) >= 500:
            # A server error after the request was sent: a write may have taken effect.
            return Ambiguous(f"{text}: {code} (HTTP {error.status_code})", code=code)
        return RotationError(f"{text}: {code} (HTTP {error.status_code})", code=code)
    if isinstance(error, ServiceRequestError | ServiceResponseError):
        return Ambiguous(f"{text}: {type(error).__name__}", code="NetworkError")
    return RotationError(f"{text}: {type(error).__name__}", code="KeyVaultError")


# Key Vault allows 300 secret creates (a new version each) per 10 s per vault and region (learn.microsoft.com,
# azure/key-vault/general/service-limits); the rotator keeps a margin below it.
WRITE_WINDOW_SECONDS = 10.0
DEFAULT_WRITES_PER_WINDOW = 250


class WriteBudget:
    """At most `limit` secret writes to one vault in any `window` seconds, from this process.

    A write counts from the moment it is sent until `window` after its answer came back, so however long a request
    travels, the vault never receives more than `limit` of them within any `window` (a request arrives after it
    was sent and before its answer). Writes over the budget wait their turn; nothing is refused. One budget per
    vault per process (`write_budget`), shared by every invocation; with several instances writing to one vault, each
    gets its share (KEY_VAULT_WRITES_PER_10S, README).
    """

    def __init__(
        self, limit: int, window: float = WRITE_WINDOW_SECONDS, *, monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.limit = limit
        self.window = window
        self._monotonic = monotonic
        self._sleep = sleep
        self._answered: deque[float] = deque()  # when each recent write's answer came back, oldest first
        self._sending = 0

    def in_use(self) -> int:
        """Writes counted now: on their way, or answered within the window."""
        now = self._monotonic()
        while self._answered and self._answered[0] <= now - self.window:
            self._answered.popleft()
        return self._sending + len(self._answered)

    @asynccontextmanager
    async def write(self) -> AsyncIterator[None]:
        """Wait until one more write fits the budget; count it while it runs and for `window` after."""
        while self.in_use() >= self.limit:
            oldest = self._answered[0] + self.window - self._monotonic() if self._answered else 0.0
            # Check and take happen with no await between them, so concurrent writers never overbook.
            await self._sleep(max(oldest, 0.01))
        self._sending += 1
        try:
            yield
        finally:
            self._sending -= 1
            self._answered.append(self._monotonic())


_BUDGETS: dict[str, WriteBudget] = {}


def write_budget(vault_url: str, limit: int) -> WriteBudget:
    """The process's write budget for this vault, shared by every invocation (a changed limit applies at once)."""
    budget = _BUDGETS.get(vault_url)
    if budget is None:
        budget = _BUDGETS[vault_url] = WriteBudget(limit)
    budget.limit = limit
    return budget


# A write is answered well within the lease's margin (EngineConfig.lease_margin) or given up (azure-core's default
# waits 300 s, the whole lease): a side effect never starts with less of the lease left than it may take.
WRITE_TIMEOUT_SECONDS = 30


# The tags of a rotated version (README, "Where things are kept"): only this adapter knows them.
STAGE, ROTATION_ID, KEY_ID, TENANT_ID, APP_ID, EXPIRES = "stage", "rotation-id", "key-id", "tenant-id", "app-id", \
    "expires"
# Key Vault's secret attributes name no writer (created/updated times only): a person writing a version by hand may
# say who they are in this tag, which the audit trail then records.
AUTHOR = "author"


def _stage(tags: Mapping[str, str]) -> VersionStage | None:
    try:
        return VersionStage(tags.get(STAGE, ""))
    except ValueError:
        return None


def _stored(p: SecretProperties) -> StoredVersion:
    tags = dict(p.tags or {})
    return StoredVersion(
        version=str(p.version),
        rotation_id=tags.get(ROTATION_ID, ""),
        key_id=tags.get(KEY_ID, ""),
        stage=_stage(tags),
        expires=p.expires_on,
        created=p.created_on,
        enabled=bool(p.enabled),
        labels=tags,
        author=tags.get(AUTHOR, "")[:200],
    )


class KeyVaultSecretStore:
    """One secret name per target; every rotation adds a version tagged with its stage and rotation id."""

    def __init__(self, client: SecretClient, writes: WriteBudget | None = None) -> None:
        self._client = client
        self._writes = writes or WriteBudget(limit=DEFAULT_WRITES_PER_WINDOW)
        # Destination credentials by name, read once per store: a store lives for one invocation (a pass), so
        # every rotation of the pass shares one read of the Proofpoint account and the portal's auth.
        self._named: dict[str, asyncio.Future[Secret]] = {}

    async def store_pending(self, target: Target, rotation_id: str, credential: Credential, secret: Secret) -> str:
        tags = {
            STAGE: VersionStage.PENDING.value,
            ROTATION_ID: rotation_id,
            KEY_ID: credential.key_id,
            TENANT_ID: target.tenant_id,
            APP_ID: target.app_id,
            EXPIRES: credential.end.isoformat(),
        }
        name = target.secret_name
        try:
            async with self._writes.write():
                stored = await self._client.set_secret(
                    name, secret.reveal(), tags=tags, content_type=CONTENT_TYPE, expires_on=credential.end,
                    connection_timeout=WRITE_TIMEOUT_SECONDS, read_timeout=WRITE_TIMEOUT_SECONDS,
                )
        except AzureError as error:
            raise _translate(error, f"storing a version of {name}") from None
        return str(stored.properties.version)

    async def versions(self, target: Target) -> list[StoredVersion]:
        name = target.secret_name
        try:
            return [_stored(p) async for p in self._client.list_properties_of_secret_versions(name)]
        except ResourceNotFoundError:
            return []
        except AzureError as error:
            raise _translate(error, f"listing versions of {name}") from error

    async def find_by_rotation(self, target: Target, rotation_id: str) -> StoredVersion | None:
        found = [v for v in await self.versions(target) if v.rotation_id == rotation_id and v.key_id]
        return found[-1] if found else None

    async def promote(self, target: Target, version: StoredVersion, key_id: str = "") -> None:
        await self._tag(target, version, VersionStage.CURRENT, {KEY_ID: key_id} if key_id else {})

    async def demote(self, target: Target, version: StoredVersion, stage: VersionStage) -> None:
        await self._tag(target, version, stage)

    async def _tag(self, target: Target, version: StoredVersion, stage: VersionStage,
                   more: Mapping[str, str] | None = None) -> None:
        name = target.secret_name
        try:
            # Key Vault replaces the whole tag set: keep every other tag as it was.
            await self._client.update_secret_properties(
                name, version.version, tags={**version.labels, **(more or {}), STAGE: stage.value},
                connection_timeout=WRITE_TIMEOUT_SECONDS, read_timeout=WRITE_TIMEOUT_SECONDS,
            )
        except AzureError as error:
            raise _translate(error, f"tagging {name}/{version.version}") from error

    async def value(self, target: Target, version: str) -> Secret:
        name = target.secret_name
        try:
            bundle = await self._client.get_secret(name, version)
        except AzureError as error:
            raise _translate(error, f"reading {name}/{version}") from error
        if bundle.value is None:
            raise NotFound(f"Key Vault: {name}/{version} has no value", code="SecretNotFound")
        return Secret(bundle.value)

    async def get_named(self, name: str) -> Secret:
        """A destination credential, read once per store (concurrent callers share the read; a failure is not
        kept)."""
        pending = self._named.get(name)
        if pending is None:
            pending = self._named[name] = asyncio.ensure_future(self._read_named(name))
        try:
            return await asyncio.shield(pending)
        except RotationError:
            if self._named.get(name) is pending:
                del self._named[name]
            raise

    async def _read_named(self, name: str) -> Secret:
        try:
            bundle = await self._client.get_secret(name)
        except AzureError as error:
            raise _translate(error, f"reading {name}") from error
        if bundle.value is None:
            raise NotFound(f"Key Vault: {name} has no value", code="SecretNotFound")
        return Secret(bundle.value)

    async def close(self) -> None:
        await self._client.close()


CONSENT_KEY_SECRET = "consent-state-key"  # noqa: S105 - a secret's name, not a secret
CONSENT_KEY_CONTENT_TYPE = "application/x-hmac-sha256-key"


class KeyVaultConsentKeys:
    """ConsentKeys in Key Vault: the secret `consent-state-key` (32 random bytes, base64), made on first use.

    Two instances making it at once each write a version; both then sign with the latest, and a link signed with
    the other still verifies, since every state names the version that signed it."""

    def __init__(self, client: SecretClient, writes: WriteBudget, name: str = CONSENT_KEY_SECRET) -> None:
        self._client = client
        self._writes = writes
        self._name = name

    async def signing_key(self) -> tuple[str, bytes]:
        try:
            bundle = await self._client.get_secret(self._name)
        except ResourceNotFoundError:
            bundle = None
        except AzureError as error:
            raise _translate(error, f"reading {self._name}") from None
        if bundle is None or not bundle.value:
            value = base64.b64encode(secrets.token_bytes(32)).decode("ascii")
            try:
                async with self._writes.write():
                    await self._client.set_secret(
                        self._name, value, content_type=CONSENT_KEY_CONTENT_TYPE, tags={"purpose": "consent-state"}
                    )
                bundle = await self._client.get_secret(self._name)
            except AzureError as error:
                raise _translate(error, f"creating {self._name}") from None
        if not bundle.value:
            raise RotationError(f"Key Vault: {self._name} has no value", code="ConsentKeyMissing")
        return str(bundle.properties.version), self._decode(bundle.value)

    def _decode(self, value: str) -> bytes:
        try:
            key = base64.b64decode(value, validate=True)
        except ValueError:
            key = b""
        if len(key) < 32:
            raise RotationError(f"Key Vault: {self._name} is not 32+ bytes of base64; delete it and a new one is made",
                                code="ConsentKeyInvalid")
        return key

    async def key(self, version: str) -> bytes | None:
        try:
            bundle = await self._client.get_secret(self._name, version)
        except ResourceNotFoundError:
            return None
        except AzureError as error:
            raise _translate(error, f"reading {self._name}") from None
        if not bundle.value or bundle.properties.enabled is False:
            return None
        return self._decode(bundle.value)


RETAIN_UNTIL = "retain-until"  # an offboarded target's versions: when the daily timer may delete the secret
_TARGET_SECRET_PREFIX = "ppsync-"  # noqa: S105 - the prefix of secret names (Target.secret_name)


def _retained_until(tags: Mapping[str, str] | None) -> datetime | None:
    raw = (tags or {}).get(RETAIN_UNTIL, "")
    try:
        moment = datetime.fromisoformat(raw) if raw else None
    except ValueError:
        return None  # a tag edited by hand into something else: never a reason to delete
    return moment if moment is None or moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class KeyVaultSecretRetention:
    """SecretRetention in Key Vault: every version of an offboarded target's secret tagged `retain-until`; the
    secret deleted once the tag of its latest version has passed (a target registered again writes versions without
    it, so a secret in use again is never due). Deleting is Key Vault's soft delete: with purge protection (as
    infra/core/security/key-vault.bicep deploys) the secret stays recoverable for the vault's 90 days."""

    def __init__(self, client: SecretClient) -> None:
        self._client = client  # tag updates and deletes are not creates: outside the write budget

    async def retain(self, target: Target, until: datetime) -> int:
        name = target.secret_name
        tagged = 0
        try:
            async for p in self._client.list_properties_of_secret_versions(name):
                tags = {**(p.tags or {}), RETAIN_UNTIL: until.astimezone(UTC).isoformat()}
                if p.tags == tags:
                    continue  # already tagged so (a second offboarding after a crash)
                await self._client.update_secret_properties(
                    name, p.version, tags=tags,
                    connection_timeout=WRITE_TIMEOUT_SECONDS, read_timeout=WRITE_TIMEOUT_SECONDS,
                )
                tagged += 1
        except ResourceNotFoundError:
            return tagged
        except AzureError as error:
            raise _translate(error, f"tagging the versions of {name} for retention") from error
        return tagged

    async def due(self, now: datetime) -> list[str]:
        try:
            return [p.name async for p in self._client.list_properties_of_secrets()
                    if p.name and p.name.startswith(_TARGET_SECRET_PREFIX)
                    and (until := _retained_until(p.tags)) is not None and until <= now]
        except AzureError as error:
            raise _translate(error, "listing the vault's secrets") from error

    async def delete(self, name: str) -> bool:
        try:
            await self._client.delete_secret(name)
        except ResourceNotFoundError:
            return False
        except AzureError as error:
            raise _translate(error, f"deleting {name}") from error
        return True
