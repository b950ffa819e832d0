"""Errors of the rotator: one base, a subclass only where a caller branches on it."""

from __future__ import annotations


class RotationError(Exception):
    """Something stopped a step; `code` is machine-readable (often the remote service's own code)."""

    def __init__(self, message: str, *, code: str = "RotationFailed", retry_after: float | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after = retry_after


class AppNotFound(RotationError):
    """The app registration does not exist in the tenant (or is invisible to the rotator)."""


class NotOwner(RotationError):
    """Graph refused a write on the app (403 Authorization_RequestDenied): the rotator does not own it."""


class PolicyBlocked(RotationError):
    """A tenant app-management policy forbids password credentials on the app (nothing was created)."""


class PolicyLifetime(RotationError):
    """A tenant app-management policy caps a secret's lifetime below the one asked (nothing was created)."""


class Unreachable(RotationError):
    """Authentication, consent or permission failure: a human must grant access."""


class Throttled(RotationError):
    """The service asked us to slow down (429, or 503 concurrency violation); safe to retry after a wait."""


class StaleDeltaLink(RotationError):
    """Graph no longer knows a delta token (expired, or its sync state gone): the inventory pass starts over with a
    full read."""


class Ambiguous(RotationError):
    """The request may or may not have taken effect (network error, timeout): never retry a create blindly."""


class Conflict(RotationError):
    """Another writer changed the row (ETag mismatch) or holds the target's lease."""


class NotFound(RotationError):
    """The thing asked for does not exist."""


class DestinationRejected(RotationError):
    """A destination refused the secret (e.g. Proofpoint 422); retrying the same value will not help."""


class DestinationDrift(DestinationRejected):
    """A destination stored the secret but changed other settings it should have kept (`fields`): the destination
    is held for a human, never acknowledged, so the old secret stays."""

    def __init__(self, message: str, *, code: str, fields: tuple[str, ...]) -> None:
        super().__init__(message, code=code)
        self.fields = fields


class PartnerRefused(RotationError):
    """A customer-tenant change through the partner relationship was refused; `fix` tells the admin what to do
    (e.g. the GDAP role to add to the relationship)."""

    def __init__(self, message: str, *, code: str, fix: str) -> None:
        super().__init__(message, code=code)
        self.fix = fix
