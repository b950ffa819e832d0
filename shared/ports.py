"""Ports: the small interfaces the services need; adapters implement them with the real SDKs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from shared.domain import Application, Credential, DestinationConfig, Secret, Target


@dataclass(frozen=True)
class NewCredential:
    """What addPassword returned: the only moment the value exists outside Key Vault."""

    credential: Credential
    secret: Secret


@dataclass(frozen=True)
class SecretVersion:
    """One version of a target's Key Vault secret: its tags, never its value."""

    version: str
    tags: dict[str, str]
    expires: datetime | None
    created: datetime | None
    enabled: bool = True


@dataclass(frozen=True)
class Event:
    """One audit-log record: a protocol step and how it ended. Never carries a secret."""

    tenant_id: str
    app_id: str
    step: str
    outcome: str
    actor: str = ""
    rotation_id: str = ""
    duration_ms: int = 0
    error_code: str = ""
    detail: str = ""
    at: datetime | None = None


@dataclass(frozen=True)
class Delivery:
    """What a destination is given: the new secret and what identifies it."""

    tenant_id: str
    app_id: str
    key_id: str
    secret: Secret
    expires: datetime
    customer: str = ""
    secret_name: str = ""  # where a human finds the value (Key Vault secret name and version)
    version: str = ""


@dataclass(frozen=True)
class Alert:
    """A condition that needs a human."""

    condition: str
    tenant_id: str
    app_id: str
    message: str
    customer: str = ""
    details: dict[str, str] = field(default_factory=dict)


class Directory(Protocol):
    """Entra ID app registrations through Microsoft Graph, per customer tenant."""

    async def get_application(self, tenant_id: str, app_id: str) -> Application: ...

    async def add_password(self, tenant_id: str, object_id: str, display_name: str, end: datetime) -> NewCredential: ...

    async def remove_password(self, tenant_id: str, object_id: str, key_id: str) -> None: ...

    async def find_applications(self, tenant_id: str, name_prefixes: Sequence[str]) -> list[Application]: ...


class TokenProbe(Protocol):
    """Proves a secret works: a client-credentials token for the app in its tenant."""

    async def try_token(self, tenant_id: str, app_id: str, secret: Secret) -> str | None:
        """None when a token was issued; otherwise the identity platform's error (e.g. AADSTS7000215)."""
        ...


class SecretStore(Protocol):
    """Key Vault: rotated values (one secret name per target, a version per rotation) and named secrets."""

    async def add_version(self, name: str, secret: Secret, tags: dict[str, str], expires: datetime) -> str: ...

    async def list_versions(self, name: str) -> list[SecretVersion]: ...

    async def get_value(self, name: str, version: str) -> Secret: ...

    async def set_tags(self, name: str, version: str, tags: dict[str, str]) -> None: ...

    async def get_named(self, name: str) -> Secret: ...


class StateStore(Protocol):
    """The registry, the protocol state (one row per target, ETag-guarded) and the audit log."""

    async def list_targets(self) -> list[tuple[Target, str]]: ...

    async def get_target(self, tenant_id: str, app_id: str) -> tuple[Target, str]: ...

    async def create_target(self, target: Target) -> str: ...

    async def replace_target(self, target: Target, etag: str) -> str: ...

    async def delete_target(self, tenant_id: str, app_id: str, etag: str | None = None) -> None: ...

    async def record(self, event: Event) -> None: ...

    async def events(self, tenant_id: str, app_id: str, limit: int = 50) -> list[Event]: ...


class Destination(Protocol):
    """A consumer of the secret (Proofpoint, the MSP portal, a human)."""

    async def deliver(self, config: DestinationConfig, delivery: Delivery) -> None:
        """Return once the destination confirmed it holds the secret; raise RotationError otherwise."""
        ...


class Clock(Protocol):
    def now(self) -> datetime: ...


class Alerter(Protocol):
    async def raise_alert(self, alert: Alert) -> None: ...
