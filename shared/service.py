"""Operator services over the registry: what the HTTP API and the command line both call."""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from shared import change_control, verify_probe
from shared.approvals import approval_document
from shared.change_control import ApprovalRequest
from shared.conditions import APPROVAL_REQUESTED, CHANGE_BLOCKING, STATUS_CONDITIONS, acknowledged
from shared.domain import (
    Actor,
    Application,
    AssessmentStatus,
    Credential,
    CredentialSignIns,
    Stage,
    Target,
    actor_of,
    days_left,
    renew_before,
)
from shared.drift import DRIFT_UNREADABLE, drift_unreadable
from shared.errors import Conflict, NotFound, RotationError, Unreachable
from shared.ports import (
    Approvals,
    Destination,
    Directory,
    Event,
    PreviewableDestination,
    RotationRequest,
    SecretStore,
    StateStore,
    Work,
    WorkQueue,
    WorkReason,
)
from shared.protocol.verify import VERIFY_FLAGS
from shared.registry import status_document
from shared.rotation import Engine, Outcome
from shared.sign_in_proof import EVIDENCE_UNREADABLE, SELF_SIGN_IN_MARGIN, reported_last, unreadable

# Entra's answer for a tenant that does not exist: the caller typed a wrong tenant id.
UNKNOWN_TENANT = "AADSTS90002"


async def put_target(state: StateStore, target: Target, *, actor: str = "", at: datetime | None = None) -> bool:
    """Register a target, or update its registry fields keeping its protocol state; True when created. The change
    is written to the audit log with the caller as its actor."""
    created = await _put_target(state, target, at or datetime.now(UTC))
    await _audit(state, target.tenant_id, target.app_id, "created" if created else "updated", actor, at)
    return created


async def _audit(
    state: StateStore, tenant_id: str, app_id: str, outcome: str, actor: str, at: datetime | None
) -> None:
    await state.record(Event(tenant_id, app_id, "registry", outcome, actor_of(Actor.MANUAL, actor),
                             at=at or datetime.now(UTC)))


async def _put_target(state: StateStore, target: Target, now: datetime) -> bool:
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
        o = current.observed
        if target.policy.change_control != current.policy.change_control and (o.waiting or o.approval_status):
            # A rotation waiting for change control is looked at again by the next resume pass (within 15 minutes)
            # under the new rules, not a day later.
            updated = updated.with_observed(waiting_until=now)
        await state.replace_target(updated, etag)
        return False


async def delete_target(
    state: StateStore, tenant_id: str, app_id: str, *, actor: str = "", at: datetime | None = None
) -> None:
    """Remove a target from the registry; refused while a rotation is in flight (its credential would be orphaned)."""
    target, etag = await state.get_target(tenant_id, app_id)
    if target.state.stage is not Stage.IDLE:
        raise Conflict(
            f"a rotation of {target.key} is in flight (stage {target.state.stage.value}); let it finish first",
            code="RotationInFlight",
        )
    await state.delete_target(tenant_id, app_id, etag)
    await _audit(state, tenant_id, app_id, "deleted", actor, at)


STATUSES = (*(s.value for s in AssessmentStatus), "unknown")
# Statuses that are themselves a condition a human must handle (the engine alerts on each; the alert book resolves
# each when the status moves on: one list for both).
ALERTING_STATUSES = STATUS_CONDITIONS


@dataclass(frozen=True)
class StatusPolicy:
    """The settings the status view needs: when rotations are planned and when one counts as stuck."""

    renew_before_days: int = 30
    stuck_after: timedelta = timedelta(hours=24)


def planned_rotation(target: Target, policy: StatusPolicy) -> datetime | None:
    """When the timer will rotate this target: its secret's expiry less the renew-before days (None if unknown)."""
    expires = target.observed.expires
    if expires is None:
        return None
    return expires - timedelta(days=renew_before(target.policy, policy.renew_before_days))


def open_alerts(target: Target, policy: StatusPolicy, now: datetime) -> list[str]:
    """The conditions of this target that need a human now, as the engine names them in its alerts."""
    s, o = target.state, target.observed
    alerts: list[str] = []
    if o.status in ALERTING_STATUSES:
        alerts.append(o.status)
    if s.stage is not Stage.IDLE and s.stage_since is not None and now - s.stage_since > policy.stuck_after:
        alerts.append("stuck")
    held = {name for name, key_id in s.held.items() if s.new_key_id and key_id == s.new_key_id}
    if held or o.drift:
        alerts.append("proofpoint-drift")  # only Proofpoint's read-back and report find drift
    if any(count > 0 for name, count in s.push_failures.items() if name not in held):
        alerts.append("destination-failing")
    waiting = [d for d in target.destinations if d.kind == "notify-only" and not acknowledged(target, d.name)]
    if s.stage is Stage.VERIFIED and waiting:
        alerts.append("notify-only-waiting")
    if s.stage is Stage.IDLE and o.waiting == "approval" and o.approval_status == "pending":
        alerts.append(APPROVAL_REQUESTED)  # a due rotation waits for a person's decision
    if s.stage is Stage.IDLE and o.change_blocking:
        alerts.append(CHANGE_BLOCKING)  # neverForce keeps it waiting past the force day
    if o.evidence_hold:
        alerts.append(o.evidence_hold.split(":", 1)[0])  # old-key-still-used, new-key-unused: the sign-in evidence
    if unreadable(o.sign_ins_unreadable_since, now):
        alerts.append(EVIDENCE_UNREADABLE)  # the sign-in read has failed on every pass for about a day
    if drift_unreadable(o.drift_unreadable_since, now):
        alerts.append(DRIFT_UNREADABLE)  # Proofpoint's settings unreadable at every drift check for two days
    verify_flag = next((f for f in VERIFY_FLAGS if s.stage is Stage.PENDING and o.needs_human.startswith(f)), None)
    if verify_flag:
        alerts.append(verify_flag)  # the new secret was refused, or never started working: named as alerted
    elif o.needs_human and not {"destination-failing", "notify-only-waiting", "proofpoint-drift"} & set(alerts):
        alerts.append("needs-human")
    return alerts


def status_view(target: Target, policy: StatusPolicy, now: datetime,
                approval: ApprovalRequest | None = None) -> dict[str, Any]:
    """The status document of a target with what the dashboard adds: the planned rotation, open alerts, and its
    change control (mode, what a due rotation waits for, the next window, the force day, the approval request)."""
    planned = planned_rotation(target, policy)
    return {
        **status_document(target),
        "plannedRotation": planned.isoformat() if planned else None,
        "alerts": open_alerts(target, policy, now),
        **change_view(target, now, approval),
    }


def change_view(target: Target, now: datetime, approval: ApprovalRequest | None) -> dict[str, Any]:
    """A target's change control in its status: `changeMode`, `rotationWaiting` ("window", "approval" or ""),
    `nextWindow` (window mode: when the next window opens, in UTC and the customer's wall clock), `forceOn` (when a
    waiting rotation goes ahead anyway; null in auto mode, with neverForce, or before the expiry is known) and
    `approval` (the request for the key being replaced, as GET /api/approvals lists it; null when none)."""
    control = target.policy.change_control
    coming = change_control.next_window(control, now) if control is not None else None
    forced = None
    if control is not None and control.mode is not change_control.Mode.AUTO and not control.never_force:
        forced = change_control.force_on(control, target.observed.expires)
    return {
        "changeMode": control.mode.value if control is not None else change_control.Mode.AUTO.value,
        "rotationWaiting": target.observed.waiting,
        "nextWindow": {"start": coming.start.isoformat(), "startLocal": coming.local.isoformat(),
                       "timeZone": coming.time_zone} if coming is not None else None,
        "forceOn": forced.isoformat() if forced is not None else None,
        "approval": approval_document(approval) if approval is not None else None,
    }


async def requests_by_target(approvals: Approvals | None) -> dict[tuple[str, str], ApprovalRequest]:
    """Every target's approval request, by (tenant id, app id) (one read; empty without the book)."""
    if approvals is None:
        return {}
    return {(r.tenant_id, r.app_id): r for r in await approvals.list_requests()}


async def list_status(
    state: StateStore, statuses: Collection[str] = (), policy: StatusPolicy | None = None, now: datetime | None = None,
    approvals: Approvals | None = None,
) -> list[dict[str, Any]]:
    """The status view of every target (only those whose status is in `statuses`, when given)."""
    policy = policy or StatusPolicy()
    now = now or datetime.now().astimezone()
    requests = await requests_by_target(approvals)
    docs = [status_view(target, policy, now, requests.get((target.tenant_id, target.app_id)))
            for target, _ in await state.list_targets()]
    docs.sort(key=lambda d: (d["customer"].lower(), d["tenantId"], d["appId"]))
    return [d for d in docs if not statuses or d["status"] in statuses]


async def discover(
    directory: Directory, state: StateStore, tenant_id: str, name_prefixes: Sequence[str], now: datetime,
    registered_apps: Collection[tuple[str, str]] | None = None,
) -> list[dict[str, Any]]:
    """The app registrations of a tenant whose names start with a Proofpoint pattern, with their secrets' expiry
    and whether each is registered already (for onboarding). `registered_apps` ((tenant id, app id), lower case):
    what the caller read of the registry already (bulk onboarding, once per run), instead of reading it again."""
    try:
        apps = await directory.find_applications(tenant_id, name_prefixes)
    except Unreachable as error:
        if error.code == UNKNOWN_TENANT:
            raise NotFound(f"tenant {tenant_id} does not exist", code="TenantNotFound") from error
        raise
    pairs = registered_apps if registered_apps is not None else {
        (t.tenant_id.lower(), t.app_id.lower()) for t, _ in await state.list_targets()}
    registered = {app for tenant, app in pairs if tenant == tenant_id.lower()}
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


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _error(error: RotationError) -> dict[str, str]:
    return {"code": error.code, "message": error.message}


async def target_details(
    state: StateStore, directory: Directory, secrets: SecretStore, tenant_id: str, app_id: str,
    policy: StatusPolicy, now: datetime, events_limit: int = 100, approvals: Approvals | None = None,
) -> dict[str, Any]:
    """Everything about one target for the dashboard: its status, its credentials in Entra ID, its Key Vault
    versions and tags (never values), each destination's acknowledgement and its audit trail.

    A failing Graph or Key Vault read is reported in its section (`error`) rather than failing the whole view."""
    target, _ = await state.get_target(tenant_id, app_id)  # NotFound -> 404
    held = await approvals.get(tenant_id, app_id) if approvals is not None else None
    doc = status_view(target, policy, now, held[0] if held is not None else None)
    s = target.state
    signed = target.observed.sign_ins.credentials if target.observed.sign_ins else {}
    reported = reported_last(target.observed.sign_ins)

    async def entra() -> dict[str, Any]:
        try:
            app = await directory.get_application(tenant_id, app_id)
        except RotationError as error:
            return {"error": _error(error), "credentials": []}
        return {
            "objectId": app.object_id,
            "displayName": app.display_name,
            "error": None,
            "credentials": [
                {
                    "keyId": c.key_id,
                    "hint": c.hint or None,
                    "displayName": c.display_name,
                    "start": c.start.isoformat() if c.start else None,
                    "end": c.end.isoformat(),
                    "daysLeft": days_left(c, now),
                    "expired": c.expired(now),
                    "madeByRotator": c.rotation_id is not None,
                    "rotationId": c.rotation_id,
                    "role": _credential_role(c.key_id, s.current_key_id, s.new_key_id, s.superseded),
                    # From the last sign-in evidence read (null where it saw none, or none was read).
                    "firstSignIn": _iso(_first(target, c, seen)[0]) if (seen := signed.get(c.key_id)) else None,
                    # The rotator's own verify probe is the new key's first sign-in in the log: said so, not shown
                    # as if a destination had used it (known by its request id; by time for older rotations).
                    "firstSignInBy": "rotator-probe" if seen and _first(target, c, seen)[1] else None,
                    # The log's last sign-in; beyond its window (30 days at most), the credential activity report's
                    # day, said so (`lastSignInFrom`: "log" | "report").
                    "lastSignIn": _iso(last[0]) if (last := _last_sign_in(seen, reported.get(c.key_id))) else None,
                    "lastSignInFrom": last[1] if last else None,
                    "lastSignInIp": seen.last_ip_address if seen else None,
                    "usedBy": sorted(n for n, k in target.observed.uses.items() if k == c.key_id),
                }
                for c in sorted(app.credentials, key=lambda c: c.end, reverse=True)
            ],
        }

    async def vault() -> dict[str, Any]:
        try:
            versions = await secrets.versions(target)
        except RotationError as error:
            return {"secretName": target.secret_name, "error": _error(error), "versions": []}
        ordered = sorted(versions, key=lambda v: v.created or datetime.min.replace(tzinfo=now.tzinfo), reverse=True)
        return {
            "secretName": target.secret_name,
            "error": None,
            "versions": [
                {
                    "version": v.version,
                    "created": v.created.isoformat() if v.created else None,
                    "expires": v.expires.isoformat() if v.expires else None,
                    "enabled": v.enabled,
                    # The store's own labels (Key Vault tags), shown as they are.
                    "tags": dict(sorted(v.labels.items())),
                }
                for v in ordered
            ],
        }

    async def audit() -> list[dict[str, Any]]:
        return [
            {
                "at": e.at.isoformat() if e.at else None,
                "step": e.step,
                "outcome": e.outcome,
                "actor": e.actor or None,
                "rotationId": e.rotation_id or None,
                "durationMs": e.duration_ms,
                "errorCode": e.error_code or None,
                "detail": e.detail or None,
            }
            for e in await state.events(tenant_id, app_id, events_limit)
        ]

    entra_doc, vault_doc, events = await asyncio.gather(entra(), vault(), audit())
    return {
        **doc,
        "policy": {
            "renewBeforeDays": renew_before(target.policy, policy.renew_before_days),
            "lifetimeDays": target.policy.lifetime_days,
        },
        "newKeyId": s.new_key_id or None,
        "entra": entra_doc,
        "keyVault": vault_doc,
        "events": events,
    }


def _first(target: Target, credential: Credential, seen: CredentialSignIns) -> tuple[datetime | None, bool]:
    """A credential's first logged sign-in, and whether it was the rotator's verify probe: by the probe's recorded
    request id (shared/verify_probe.py) where the row has one for the key, else by time (`_probe`)."""
    if credential.key_id in target.state.probes:
        return verify_probe.first_sign_in(seen, identified=True)
    return seen.first_sign_in, _probe(target, credential, seen.first_sign_in)


def _last_sign_in(seen: CredentialSignIns | None, reported: datetime | None) -> tuple[datetime, str] | None:
    """The log's last sign-in of a key, else the report's day when the log saw none (or an older one)."""
    logged = (seen.last_sign_in or seen.probe_sign_in) if seen else None
    if logged is not None and (reported is None or logged >= reported):
        return logged, "log"
    return (reported, "report") if reported is not None else None


def _probe(target: Target, credential: Credential, first: datetime | None) -> bool:
    """Whether a credential's first logged sign-in is the rotator's verify probe: a key the rotator made, in use or
    rolling out, whose first sign-in is not later than its first push plus the self-sign-in margin (or not pushed)."""
    s = target.state
    if first is None or credential.rotation_id is None or credential.key_id not in (s.current_key_id, s.new_key_id):
        return False
    pushes = [a.at for a in s.acks.values() if a.key_id == credential.key_id]
    return not pushes or first <= min(pushes) + SELF_SIGN_IN_MARGIN


def _credential_role(key_id: str, current: str, new: str, superseded: Sequence[str]) -> str | None:
    """What a credential is to the rotation: the one in use, the one being rolled out, or one awaiting retirement."""
    if key_id == new:
        return "rolling-out"
    if key_id == current:
        return "current"
    if key_id in superseded:
        return "superseded"
    return None


# ------------------------------------------------------------------------------------------ manual rotations
# POST /api/rotations reserves the rotation (the same ETag-guarded checks and write as any rotation), keeps who
# asked under its rotation id, and enqueues it for a queue worker; GET /api/rotations/{rotationId} reports it.

ROTATION_STATES = ("queued", "running", "needs-human", "succeeded", "failed")  # what rotation_progress says


async def accept_rotation(
    engine: Engine, queue: WorkQueue, tenant_id: str, app_id: str, *, force: bool, actor: str, hold_seconds: int = 0,
) -> tuple[Outcome, RotationRequest | None]:
    """Reserve a manual rotation and enqueue it (visible after `hold_seconds`); the request, or None with the
    outcome when nothing was reserved (the tenant refused, the app is gone: a final answer, nothing queued).

    Conflict (in flight, cool-down) and NotFound come before anything is written. A failure after the reservation
    leaves the rotation in flight: the resume timer enqueues it again, so it is never lost."""
    reserved = await engine.rotate_now(tenant_id, app_id, force=force, actor=actor, reserve_only=True)
    if reserved.result != "reserved":
        return reserved, None
    request = RotationRequest(reserved.rotation_id, tenant_id, app_id, actor, engine.clock.now())
    await engine.state.record_request(request)
    await queue.enqueue(Work(tenant_id, app_id, actor, WorkReason.MANUAL), delay_seconds=hold_seconds)
    return reserved, request


async def rotation_report(state: StateStore, rotation_id: str) -> dict[str, Any]:
    """Where a requested rotation stands; NotFound when no such rotation was requested, or its target is gone."""
    request = await state.request(rotation_id)
    target, _ = await state.get_target(request.tenant_id, request.app_id)
    return rotation_progress(request, target, await state.events(request.tenant_id, request.app_id, 200))


def rotation_progress(request: RotationRequest, target: Target, events: Sequence[Event]) -> dict[str, Any]:
    """A rotation's state from its target's row and its audit events (newest first): queued (reserved, no step
    taken yet), running, needs-human (in flight, waiting for a person), succeeded (finished), failed (ended
    without finishing: refused, abandoned)."""
    mine = [e for e in events if e.rotation_id == request.rotation_id]
    s = target.state
    in_flight = s.rotation_id == request.rotation_id and s.stage is not Stage.IDLE
    failure = next((e for e in mine if e.error_code), None)
    if in_flight:
        started = any(e.step != "reserve" for e in mine)
        state = "needs-human" if target.observed.needs_human else "running" if started else "queued"
    elif any(e.step == "finish" and e.outcome == "ok" for e in mine):
        state, failure = "succeeded", None
    else:
        state = "failed"
    error_code = failure.error_code if failure else (target.observed.error_code if state == "failed" else "")
    message = failure.detail if failure else (target.observed.needs_human if state == "needs-human" else "")
    return {
        "rotationId": request.rotation_id,
        "tenantId": request.tenant_id,
        "appId": request.app_id,
        "customer": target.customer,
        "requestedBy": request.actor,
        "requestedAt": request.at.isoformat(),
        "state": state,
        "stage": s.stage.value if in_flight else Stage.IDLE.value,
        "errorCode": error_code or None,
        "message": message or None,
        "steps": [
            {"at": e.at.isoformat() if e.at else None, "step": e.step, "outcome": e.outcome,
             "errorCode": e.error_code or None}
            for e in reversed(mine)
        ],
    }


async def proofpoint_check(
    state: StateStore, destinations: Mapping[str, Destination], tenant_id: str, app_id: str
) -> dict[str, Any]:
    """For each Proofpoint destination of a target: the org's sync settings as Proofpoint returns them and the PUT a
    push would send, secrets hidden. Reads only: an MSP checks one org before enabling the destination."""
    target, _ = await state.get_target(tenant_id, app_id)  # NotFound -> 404
    configs = [d for d in target.destinations if d.kind == "proofpoint"]
    if not configs:
        raise NotFound(f"{target.key} has no proofpoint destination", code="DestinationNotFound")
    adapter = destinations.get("proofpoint")
    results = []
    for config in configs:
        entry: dict[str, Any] = {"name": config.name, "domain": config.options.get("domain", ""),
                                 "stack": config.options.get("stack") or None, "url": None, "get": None,
                                 "put": None, "changes": [], "hidden": [], "notes": [], "error": None}
        try:
            if not isinstance(adapter, PreviewableDestination):
                raise RotationError("no Proofpoint adapter can preview here", code="UnknownKind")
            entry.update(await adapter.preview(config, target.app_id))
        except RotationError as error:
            entry["error"] = {"code": error.code, "message": error.message}
        results.append(entry)
    return {"tenantId": target.tenant_id, "appId": target.app_id, "customer": target.customer,
            "destinations": results}
