"""Operator services over the registry: what the HTTP API and the command line both call."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from shared.domain import Application, AssessmentStatus, Stage, Target, days_left
from shared.errors import Conflict, NotFound, Unreachable
from shared.ports import Directory, StateStore
from shared.registry import status_document

# Entra's answer for a tenant that does not exist: the caller typed a wrong tenant id.
UNKNOWN_TENANT = "AADSTS90002"


async def put_target(state: StateStore, target: Target) -> bool:
    """Register a target, or update its registry fields keeping its protocol state; True when created."""
    try:
        await state.create_target(target)
        return True
    except Conflict:
        current, etag = await state.get_target(target.tenant_id, target.app_id)
        updated = replace(
            current,
            customer=target.customer,
            enabled=target.enabled,
            policy=target.policy,
            destinations=target.destinations,
        )
        await state.replace_target(updated, etag)
        return False


async def delete_target(state: StateStore, tenant_id: str, app_id: str) -> None:
    """Remove a target from the registry; refused while a rotation is in flight (its credential would be orphaned)."""
    target, etag = await state.get_target(tenant_id, app_id)
    if target.state.stage is not Stage.IDLE:
        raise Conflict(
            f"a rotation of {target.key} is in flight (stage {target.state.stage.value}); let it finish first",
            code="RotationInFlight",
        )
    await state.delete_target(tenant_id, app_id, etag)


STATUSES = (*(s.value for s in AssessmentStatus), "unknown")


async def list_status(state: StateStore, statuses: Collection[str] = ()) -> list[dict[str, Any]]:
    """The status view of every target (only those whose status is in `statuses`, when given)."""
    docs = [status_document(target) for target, _ in await state.list_targets()]
    docs.sort(key=lambda d: (d["customer"].lower(), d["tenantId"], d["appId"]))
    return [d for d in docs if not statuses or d["status"] in statuses]


async def discover(
    directory: Directory, state: StateStore, tenant_id: str, name_prefixes: Sequence[str], now: datetime
) -> list[dict[str, Any]]:
    """The app registrations of a tenant whose names start with a Proofpoint pattern, with their secrets' expiry
    and whether each is registered already (for onboarding)."""
    try:
        apps = await directory.find_applications(tenant_id, name_prefixes)
    except Unreachable as error:
        if error.code == UNKNOWN_TENANT:
            raise NotFound(f"tenant {tenant_id} does not exist", code="TenantNotFound") from error
        raise
    registered = {t.app_id.lower() for t, _ in await state.list_targets() if t.tenant_id.lower() == tenant_id.lower()}
    return [discovery_document(app, now, app.app_id.lower() in registered) for app in apps]


def discovery_document(app: Application, now: datetime, registered: bool) -> dict[str, Any]:
    """One discovered app registration: ids, name, each credential's expiry (never a value or hint)."""
    return {
        "appId": app.app_id,
        "objectId": app.object_id,
        "displayName": app.display_name,
        "registered": registered,
        "credentials": [
            {
                "keyId": c.key_id,
                "displayName": c.display_name,
                "start": c.start.isoformat() if c.start else None,
                "end": c.end.isoformat(),
                "daysLeft": days_left(c, now),
                "expired": c.expired(now),
            }
            for c in sorted(app.credentials, key=lambda c: c.end)
        ],
    }
