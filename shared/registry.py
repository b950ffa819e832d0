"""The customer registry: parsing and validating target documents, and their public (secret-free) views."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from shared.domain import GUID, MAX_LIFETIME_DAYS, Ack, DestinationConfig, Policy, Target

_TARGET_FIELDS = {"tenantId", "appId", "customer", "enabled", "policy", "destinations"}
_POLICY_FIELDS = {"renewBeforeDays", "lifetimeDays"}
_DESTINATION_FIELDS = {"name", "kind", "options"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}$")


class InvalidTarget(ValueError):
    """A target document breaks a rule; `field` names where."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = f"{field}: {message}"


def guid(value: object, field: str) -> str:
    if not isinstance(value, str) or not GUID.match(value):
        raise InvalidTarget(field, "must be a GUID like 00000000-0000-0000-0000-000000000000")
    return value.lower()


def _object(value: object, field: str, allowed: set[str]) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise InvalidTarget(field, "must be a JSON object")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise InvalidTarget(field, f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")
    return value


def _int(value: object, field: str, low: int, high: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidTarget(field, "must be a whole number")
    if not low <= value <= high:
        raise InvalidTarget(field, f"must be between {low} and {high}")
    return value


def parse_policy(value: object) -> Policy:
    if value is None:
        return Policy()
    doc = _object(value, "policy", _POLICY_FIELDS)
    return Policy(
        renew_before_days=_int(doc.get("renewBeforeDays"), "policy.renewBeforeDays", 1, 365),
        lifetime_days=_int(doc.get("lifetimeDays"), "policy.lifetimeDays", 1, MAX_LIFETIME_DAYS),
    )


def parse_destination(value: object, index: int) -> DestinationConfig:
    field = f"destinations[{index}]"
    doc = _object(value, field, _DESTINATION_FIELDS)
    name, kind, options = doc.get("name"), doc.get("kind"), doc.get("options", {})
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidTarget(f"{field}.name", "must be 1-64 letters, digits, spaces, dots, dashes or underscores")
    if not isinstance(kind, str):
        raise InvalidTarget(f"{field}.kind", "must be a string")
    if not isinstance(options, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and len(v) <= 2048 for k, v in options.items()
    ):
        raise InvalidTarget(f"{field}.options", "must be an object of string values")
    config = DestinationConfig(name, kind, dict(options))
    from shared.destinations import validate_destination

    try:
        validate_destination(config)
    except ValueError as error:
        raise InvalidTarget(field, str(error)) from None
    return config


def parse_target(value: object, *, tenant_id: str | None = None, app_id: str | None = None) -> Target:
    """A target from its JSON document; the path's ids, when given, must agree with the body's."""
    doc = _object(value, "body", _TARGET_FIELDS)
    tenant = guid(doc.get("tenantId", tenant_id), "tenantId")
    app = guid(doc.get("appId", app_id), "appId")
    if tenant_id is not None and tenant != tenant_id.lower():
        raise InvalidTarget("tenantId", "does not match the path")
    if app_id is not None and app != app_id.lower():
        raise InvalidTarget("appId", "does not match the path")
    customer = doc.get("customer", "")
    if not isinstance(customer, str) or len(customer) > 200:
        raise InvalidTarget("customer", "must be a string of at most 200 characters")
    enabled = doc.get("enabled", True)
    if not isinstance(enabled, bool):
        raise InvalidTarget("enabled", "must be true or false")
    destinations = doc.get("destinations", [])
    if not isinstance(destinations, list) or len(destinations) > 10:
        raise InvalidTarget("destinations", "must be a list of at most 10 destinations")
    parsed = tuple(parse_destination(d, i) for i, d in enumerate(destinations))
    names = [d.name for d in parsed]
    if len(set(names)) != len(names):
        raise InvalidTarget("destinations", "names must be unique")
    return Target(tenant, app, customer, enabled, parse_policy(doc.get("policy")), parsed)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def target_document(target: Target) -> dict[str, Any]:
    """The registry view of a target (what PUT accepts)."""
    policy: dict[str, int] = {}
    if target.policy.renew_before_days is not None:
        policy["renewBeforeDays"] = target.policy.renew_before_days
    if target.policy.lifetime_days is not None:
        policy["lifetimeDays"] = target.policy.lifetime_days
    return {
        "tenantId": target.tenant_id,
        "appId": target.app_id,
        "customer": target.customer,
        "enabled": target.enabled,
        "policy": policy,
        "destinations": [{"name": d.name, "kind": d.kind, "options": dict(d.options)} for d in target.destinations],
    }


def _sync_state(ack: Ack | None, key_id: str) -> str | None:
    """Whether the destination's own sync has proved the secret: not-reported, waiting or confirmed."""
    if ack is None or ack.key_id != key_id:
        return None
    if ack.sync_after is None:
        return "not-reported"
    return "confirmed" if ack.synced_at is not None else "waiting"


def status_document(target: Target) -> dict[str, Any]:
    """The status view of a target: lifetime, stage, last rotation, each destination's acknowledgement."""
    s, o = target.state, target.observed
    rolling_out = s.new_key_id or s.current_key_id
    return {
        "tenantId": target.tenant_id,
        "appId": target.app_id,
        "customer": target.customer,
        "enabled": target.enabled,
        "status": o.status or "unknown",
        "daysLeft": o.days_left,
        "expires": _iso(o.expires),
        "checkedAt": _iso(o.checked_at),
        "stage": s.stage.value,
        "rotationId": s.rotation_id or None,
        "stageSince": _iso(s.stage_since),
        "lastRotationAt": _iso(o.last_rotation_at),
        "lastOutcome": o.last_outcome or None,
        "error": {"code": o.error_code, "message": o.error_message} if o.error_code else None,
        "needsHuman": o.needs_human or None,
        "secretName": target.secret_name,
        "currentKeyId": s.current_key_id or None,
        "retireAfter": _iso(s.retire_after),
        "otherLiveCredentials": o.other_credentials,
        "lifetimeCapDays": o.lifetime_cap_days,
        "destinations": [
            {
                "name": d.name,
                "kind": d.kind,
                "acknowledged": (ack := s.acks.get(d.name)) is not None and ack.key_id == rolling_out,
                "acknowledgedKeyId": ack.key_id if ack else None,
                "acknowledgedAt": _iso(ack.at) if ack else None,
                "confirmation": list(ack.checks) if ack else [],
                "sync": _sync_state(ack, rolling_out),
                "syncAfter": _iso(ack.sync_after) if ack else None,
                "syncedAt": _iso(ack.synced_at) if ack else None,
                "failures": s.push_failures.get(d.name, 0),
            }
            for d in target.destinations
        ],
    }
