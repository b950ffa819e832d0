"""Operator services over the registry: what the HTTP API and the command line both call."""

from __future__ import annotations

from dataclasses import replace

from shared.domain import Target
from shared.errors import Conflict
from shared.ports import StateStore


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
