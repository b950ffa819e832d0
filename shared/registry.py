"""The customer registry: parsing and validating target documents, and their public (secret-free) views."""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

from shared import change_control
from shared.domain import (
    DESTINATION_NAME,
    GUID,
    MAX_LIFETIME_DAYS,
    Ack,
    DestinationConfig,
    Policy,
    SignInEvidence,
    Target,
    lifetime_days,
    renew_before,
    renewal_problem,
)
from shared.sign_in_proof import MAX_QUIET_HOURS, reported_last

_TARGET_FIELDS = {"tenantId", "appId", "customer", "enabled", "policy", "destinations"}
_POLICY_FIELDS = {"renewBeforeDays", "lifetimeDays", "retireQuietHours", "changeControl"}
_DESTINATION_FIELDS = {"name", "kind", "options"}
# Azure Tables: a string property holds at most 64 KiB of UTF-16 (learn.microsoft.com/rest/api/storageservices/
# understanding-the-table-service-data-model); the destinations are stored as one JSON string property.
TABLE_STRING_BYTES = 64 * 1024


class InvalidTarget(ValueError):
    """A target document breaks a rule; `field` names where."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = f"{field}: {message}"


def guid(value: object, field: str) -> str:
    if not isinstance(value, str) or not GUID.fullmatch(value):
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
    policy = Policy(
        renew_before_days=_int(doc.get("renewBeforeDays"), "policy.renewBeforeDays", 1, 365),
        lifetime_days=_int(doc.get("lifetimeDays"), "policy.lifetimeDays", 1, MAX_LIFETIME_DAYS),
        # Entra keeps sign-in logs 30 days: a longer quiet period could never be seen to have passed.
        retire_quiet_hours=_int(doc.get("retireQuietHours"), "policy.retireQuietHours", 1, MAX_QUIET_HOURS),
        change_control=_change_control(doc.get("changeControl")),
    )
    if policy.renew_before_days is not None and policy.lifetime_days is not None:
        problem = renewal_problem(policy.renew_before_days, policy.lifetime_days)
        if problem:
            raise InvalidTarget("policy", problem)
    return policy


def _change_control(value: object) -> change_control.ChangeControl | None:
    try:
        return change_control.parse(value)
    except change_control.InvalidChangeControl as error:
        raise InvalidTarget(error.field, error.message.removeprefix(f"{error.field}: ")) from None


def parse_destination(value: object, index: int, allowed_hosts: frozenset[str] = frozenset()) -> DestinationConfig:
    field = f"destinations[{index}]"
    doc = _object(value, field, _DESTINATION_FIELDS)
    name, kind, options = doc.get("name"), doc.get("kind"), doc.get("options", {})
    if not isinstance(name, str) or not DESTINATION_NAME.fullmatch(name):
        raise InvalidTarget(f"{field}.name", "must be 1-64 letters, digits, inner spaces, dots, dashes or underscores, "
                            "starting and ending with a letter or digit")
    if not isinstance(kind, str):
        raise InvalidTarget(f"{field}.kind", "must be a string")
    if not isinstance(options, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and len(v) <= 2048 for k, v in options.items()
    ):
        raise InvalidTarget(f"{field}.options", "must be an object of string values")
    config = DestinationConfig(name, kind, dict(options))
    from shared.destinations import validate_destination

    try:
        validate_destination(config, allowed_hosts)
    except ValueError as error:
        raise InvalidTarget(field, str(error)) from None
    return config


def customer_name(text: str) -> str:
    """A customer's name from another service (Partner Center's GDAP list, Proofpoint's org list) as the registry
    would accept it from a person: one line (each control, format or separator character a space, runs of spaces
    one), NFC, stripped, at most 200 characters. A name is shown in alerts, tickets and exports: it is never a
    second line there."""
    spaced = "".join(" " if unicodedata.category(c)[0] in "CZ" else c for c in text)
    return " ".join(unicodedata.normalize("NFC", spaced).split())[:200].strip()


def parse_target(
    value: object, *, tenant_id: str | None = None, app_id: str | None = None,
    allowed_hosts: frozenset[str] = frozenset(),
) -> Target:
    """A target from its JSON document; the path's ids, when given, must agree with the body's. Destination hosts
    must be public unless in `allowed_hosts` (DESTINATION_ALLOWED_HOSTS, the local sandbox only)."""
    refuse_secret_values(value)  # first: no later message may echo a secret sent as an unknown key
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
    if any(unicodedata.category(c)[0] in "CZ" and c != " " for c in customer):
        raise InvalidTarget("customer", "must be one line of text (no control, format or separator characters)")
    customer = unicodedata.normalize("NFC", customer).strip()
    enabled = doc.get("enabled", True)
    if not isinstance(enabled, bool):
        raise InvalidTarget("enabled", "must be true or false")
    destinations = doc.get("destinations", [])
    if not isinstance(destinations, list) or len(destinations) > 10:
        raise InvalidTarget("destinations", "must be a list of at most 10 destinations")
    parsed = tuple(parse_destination(d, i, allowed_hosts) for i, d in enumerate(destinations))
    names = [d.name for d in parsed]
    if len(set(names)) != len(names):
        raise InvalidTarget("destinations", "names must be unique")
    size = len(destinations_json(parsed).encode("utf-16-le"))
    if size > TABLE_STRING_BYTES:
        raise InvalidTarget("destinations", f"take {size} bytes as stored (UTF-16); Azure Tables holds at most "
                            f"{TABLE_STRING_BYTES} bytes in one property: shorten options or instructions")
    return Target(tenant, app, customer, enabled, parse_policy(doc.get("policy")), parsed)


def destinations_json(destinations: tuple[DestinationConfig, ...]) -> str:
    """The destinations as the registry row stores them (one JSON string property)."""
    return json.dumps([{"name": d.name, "kind": d.kind, "options": d.options} for d in destinations])


def check_policy(policy: Policy, default_renew_before_days: int, default_lifetime_days: int) -> None:
    """The target's renewal window, combined with the global settings, must fit its secret lifetime."""
    renew = renew_before(policy, default_renew_before_days)
    lifetime = lifetime_days(policy, default_lifetime_days)
    problem = renewal_problem(renew, lifetime)
    if problem:
        source = ", ".join(
            f"{name} {'from the target' if mine is not None else 'from the settings'}"
            for name, mine in (("renewBeforeDays", policy.renew_before_days), ("lifetimeDays", policy.lifetime_days))
        )
        raise InvalidTarget("policy", f"{problem} ({source})")
    forcing = change_control.force_problem(policy.change_control, renew)
    if forcing:
        raise InvalidTarget("policy.changeControl.forceDaysBeforeExpiry", forcing)


def _strings(value: object, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            # A key that looks like a secret is reported by where it is, never by itself.
            yield f"{path or 'body'} (a key)", str(key)
            yield from _strings(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, f"{path}[{index}]")


def refuse_secret_values(doc: object) -> None:
    """Every string of a registry document, names and keys included, must not look like a secret value: the
    registry holds Key Vault secret *names*. The message names the field, never the value."""
    from shared.destinations.options import looks_like_secret

    for path, value in _strings(doc, ""):
        if looks_like_secret(value):
            raise InvalidTarget(path or "body", "looks like a secret value; store secrets in Key Vault and give the "
                                "secret's name instead")


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def target_document(target: Target) -> dict[str, Any]:
    """The registry view of a target (what PUT accepts)."""
    policy: dict[str, Any] = {}
    if target.policy.renew_before_days is not None:
        policy["renewBeforeDays"] = target.policy.renew_before_days
    if target.policy.lifetime_days is not None:
        policy["lifetimeDays"] = target.policy.lifetime_days
    if target.policy.retire_quiet_hours is not None:
        policy["retireQuietHours"] = target.policy.retire_quiet_hours
    if target.policy.change_control is not None:
        policy["changeControl"] = change_control.document(target.policy.change_control)
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
        "signInEvidence": sign_in_document(o.sign_ins, o.evidence_hold, o.evidence_kept),
        "driftKeptKeyIds": list(o.drift_kept),
        "driftCheckedAt": _iso(o.drift_checked_at),
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
                "held": bool(s.new_key_id) and s.held.get(d.name) == s.new_key_id,
                "drift": o.drift.get(d.name),
                "usesKeyId": o.uses.get(d.name),
            }
            for d in target.destinations
        ],
    }


def sign_in_document(evidence: SignInEvidence | None, hold: str = "",
                     kept: tuple[str, ...] = ()) -> dict[str, Any] | None:
    """The last sign-in evidence read for a target (null: never read, no superseded key has waited since): whether the
    tenant allows the read (else its code and why), when it was read, from when, each credential's sign-ins, and what
    it holds against retiring the old key for a human (old-key-still-used, new-key-unused: the alert's text)."""
    if evidence is None:
        return None
    report = evidence.reported
    reported = reported_last(evidence)
    return {
        "available": evidence.available,
        "hold": hold or None,
        "keptKeyIds": list(kept),  # the superseded keys that hold keeps
        "code": evidence.code or None,
        "reason": evidence.reason or None,
        "readAt": _iso(evidence.read_at),
        "since": _iso(evidence.since),
        "credentials": [
            {
                "keyId": c.key_id,
                "firstSignIn": _iso(c.first_sign_in),
                "lastSignIn": _iso(c.last_sign_in),
                "lastSignInIp": c.last_ip_address,
                "lastSignInResource": c.last_resource,
                "reportedLastSignIn": _iso(reported.get(c.key_id)),
            }
            for c in sorted(evidence.credentials.values(), key=lambda c: c.key_id)
        ] + [
            # Keys the log did not see in its window but the credential activity report knows (a day, midnight UTC).
            {"keyId": k, "firstSignIn": None, "lastSignIn": None, "lastSignInIp": None, "lastSignInResource": None,
             "reportedLastSignIn": _iso(at)}
            for k, at in sorted(reported.items()) if k not in evidence.credentials
        ],
        # Entra's credential activity report, where it was read beside the log (null: not read).
        "report": None if report is None else {"available": report.available, "code": report.code or None,
                                               "readAt": _iso(report.read_at)},
    }
