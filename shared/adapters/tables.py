"""State on Azure Tables: the targets table (registry + protocol state), the events table (audit log), the rotations
table (who asked for each manual rotation, by rotation id) and the consents table (customer tenants' admin consent,
and the consent links already answered)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.data.tables import UpdateMode
from azure.data.tables.aio import TableClient, TableServiceClient

from shared import change_control
from shared.bulk_onboarding import (
    RUN_CURSOR,
    Run,
    RunState,
    StepRecord,
    TenantProgress,
    TenantState,
)
from shared.domain import (
    Ack,
    Baseline,
    CredentialSignIns,
    DestinationConfig,
    Observation,
    Policy,
    ReportedSignIns,
    RotationState,
    SignInEvidence,
    Stage,
    Target,
)
from shared.errors import Conflict, NotFound, RotationError
from shared.ports import Consent, Event, InstallMethod, RotationRequest

_EPOCH_LIMIT_MS = 10**13
# A single-use row (an event id seen, a consent link used) carries the random id of the call that inserted it: the
# SDK's retry policy re-sends an insert (POST) after a 500/503/504, and when the first was stored the second answers
# 409 to its own row. The claim tells that from another writer's row.
CLAIM = "Claim"



def _event_key(event_id: str) -> str:
    """The row key of an event id. Keys may not hold / \\ # ? or control characters (Tables' key rules) and are at
    most 1 KiB: an id with any of those, non-ASCII text, or longer than 128 characters is stored by its hash, so two
    ids never share a key (never truncated)."""
    clean = len(event_id) <= 128 and event_id.isascii() \
        and all(c.isprintable() and c not in "/\\#?" for c in event_id)
    return event_id if clean else "sha256-" + hashlib.sha256(event_id.encode("utf-8")).hexdigest()

def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat() if value is not None else None


def _dt(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) and value else None


def _object(value: Any) -> Any:
    """A JSON object property: absent or "{}" (most of a healthy row's) is answered without the parser, which costs a
    microsecond or two each, ten times a row, for every target of every pass."""
    return json.loads(value) if value and value != "{}" else {}


def _array(value: Any) -> Any:
    """A JSON array property: absent or "[]" without the parser (as `_object`)."""
    return json.loads(value) if value and value != "[]" else []


def _drop_none(entity: dict[str, Any]) -> dict[str, Any]:
    # Tables stores no nulls: an absent property is the null, and REPLACE removes stale ones.
    return {k: v for k, v in entity.items() if v is not None}


def target_to_entity(target: Target) -> dict[str, Any]:
    """One row per target: registry fields, protocol state and the last observation."""
    s, o = target.state, target.observed
    return _drop_none(
        {
            "PartitionKey": target.tenant_id,
            "RowKey": target.app_id,
            "Customer": target.customer,
            "Enabled": target.enabled,
            "RenewBeforeDays": target.policy.renew_before_days,
            "LifetimeDays": target.policy.lifetime_days,
            "RetireQuietHours": target.policy.retire_quiet_hours,
            "ChangeControl": json.dumps(change_control.document(target.policy.change_control))
            if target.policy.change_control is not None else None,
            "Destinations": json.dumps(
                [{"name": d.name, "kind": d.kind, "options": d.options} for d in target.destinations]
            ),
            "Stage": s.stage.value,
            "RotationId": s.rotation_id,
            "Actor": s.actor,
            "StageSince": _iso(s.stage_since),
            "NewKeyId": s.new_key_id,
            "NewVersion": s.new_version,
            "NewExpires": _iso(s.new_expires),
            "Replaces": json.dumps(list(s.replaces)),
            "Acks": json.dumps({k: _ack_doc(a) for k, a in s.acks.items()}),
            "PushFailures": json.dumps(s.push_failures),
            "Held": json.dumps(s.held),
            "Baselines": json.dumps({k: {"keyId": b.key_id, "settings": b.settings} for k, b in s.baselines.items()}),
            "CurrentKeyId": s.current_key_id,
            "CurrentVersion": s.current_version,
            "Superseded": json.dumps(list(s.superseded)),
            "RetireAfter": _iso(s.retire_after),
            "Retiring": json.dumps(list(s.retiring)) if s.retiring else None,  # absent on almost every row
            "Probes": json.dumps(s.probes) if s.probes else None,  # absent on rows rotated before probe ids
            "LeaseOwner": s.lease_owner,
            "LeaseUntil": _iso(s.lease_until),
            "Status": o.status,
            "DaysLeft": o.days_left,
            "Expires": _iso(o.expires),
            "CheckedAt": _iso(o.checked_at),
            "ErrorCode": o.error_code,
            "ErrorMessage": o.error_message,
            "LastRotationAt": _iso(o.last_rotation_at),
            "LastOutcome": o.last_outcome,
            "NeedsHuman": o.needs_human,
            "OtherCredentials": o.other_credentials,
            "LifetimeCapDays": o.lifetime_cap_days,
            "SignIns": _sign_ins_doc(o.sign_ins),  # absent on every row that never waited to retire a key
            "EvidenceHold": o.evidence_hold or None,
            "EvidenceKept": json.dumps(list(o.evidence_kept)) if o.evidence_hold else None,
            "SignInsUnreadableSince": _iso(o.sign_ins_unreadable_since),
            "Drift": json.dumps(o.drift) if o.drift else None,  # absent on almost every row
            "DriftKept": json.dumps(list(o.drift_kept)) if o.drift else None,
            "Uses": json.dumps(o.uses) if o.uses else None,
            "DriftCheckedAt": _iso(o.drift_checked_at),
            "DriftUnreadableSince": _iso(o.drift_unreadable_since),
            # Change control (absent on every row of a customer in auto mode).
            "Waiting": o.waiting or None,
            "WaitingUntil": _iso(o.waiting_until),
            "ApprovalId": o.approval_id or None,
            "ApprovalStatus": o.approval_status or None,
            "ChangeBlocking": o.change_blocking or None,
        }
    )


def _kept(e: dict[str, Any], column: str, text: str, superseded: tuple[str, ...]) -> tuple[str, ...]:
    """The keys a hold or a drift finding keeps: its column; on a row written before the column existed, the
    superseded keys its text names (how they were found then). A new-key-unused hold named only the new key and kept
    every superseded key."""
    if column in e:
        return tuple(str(k) for k in _array(e[column]))
    if text.startswith("new-key-unused:"):  # shared.sign_in_proof.NEW_KEY_UNUSED (adapters import no core)
        return superseded
    return tuple(k for k in superseded if k.lower() in text.lower())


def _sign_ins_doc(evidence: SignInEvidence | None) -> str | None:
    if evidence is None:
        return None
    return json.dumps({
        "available": evidence.available, "readAt": _iso(evidence.read_at), "since": _iso(evidence.since),
        "code": evidence.code, "reason": evidence.reason,
        "credentials": [{"keyId": c.key_id, "first": _iso(c.first_sign_in), "last": _iso(c.last_sign_in),
                         "ip": c.last_ip_address, "resource": c.last_resource,
                         **({"probe": _iso(c.probe_sign_in)} if c.probe_sign_in else {})}
                        for c in evidence.credentials.values()],
        **({"report": _report_doc(evidence.reported)} if evidence.reported is not None else {}),
    })


def _report_doc(report: ReportedSignIns) -> dict[str, Any]:
    return {"available": report.available, "readAt": _iso(report.read_at), "code": report.code,
            "last": {k: _iso(v) for k, v in report.last.items()}}


def _report(doc: Any) -> ReportedSignIns | None:
    if not isinstance(doc, dict):  # rows written before the report was read have none
        return None
    last = {str(k): at for k, v in (doc.get("last") or {}).items() if (at := _dt(v)) is not None}
    return ReportedSignIns(bool(doc.get("available")), _dt(doc.get("readAt")) or datetime.min.replace(tzinfo=UTC),
                           last, str(doc.get("code") or ""))


def _sign_ins(raw: Any) -> SignInEvidence | None:
    if not isinstance(raw, str) or not raw:
        return None
    doc = json.loads(raw)
    credentials = [CredentialSignIns(str(c["keyId"]), _dt(c.get("first")), _dt(c.get("last")), c.get("ip"),
                                     c.get("resource"), _dt(c.get("probe"))) for c in doc.get("credentials") or ()]
    return SignInEvidence(bool(doc["available"]), _dt(doc["readAt"]) or datetime.min.replace(tzinfo=UTC),
                          _dt(doc["since"]) or datetime.min.replace(tzinfo=UTC),
                          {c.key_id: c for c in credentials}, str(doc.get("code") or ""),
                          str(doc.get("reason") or ""), _report(doc.get("report")))


def _ack_doc(ack: Ack) -> dict[str, Any]:
    doc: dict[str, Any] = {"keyId": ack.key_id, "at": _iso(ack.at)}
    if ack.checks:
        doc["checks"] = list(ack.checks)
    if ack.sync_after is not None:
        doc["syncAfter"] = _iso(ack.sync_after)
    if ack.synced_at is not None:
        doc["syncedAt"] = _iso(ack.synced_at)
    return doc


def entity_to_target(e: dict[str, Any]) -> Target:
    acks = {
        name: Ack(str(a["keyId"]), _dt(a["at"]) or datetime.min.replace(tzinfo=UTC),
                  checks=tuple(a.get("checks") or ()), sync_after=_dt(a.get("syncAfter")),
                  synced_at=_dt(a.get("syncedAt")))
        for name, a in _object(e.get("Acks")).items()
    }
    superseded = tuple(_array(e.get("Superseded")))
    drift = {str(k): str(v) for k, v in _object(e.get("Drift")).items()}
    return Target(
        tenant_id=e["PartitionKey"],
        app_id=e["RowKey"],
        customer=e.get("Customer", ""),
        enabled=bool(e.get("Enabled", True)),
        policy=Policy(e.get("RenewBeforeDays"), e.get("LifetimeDays"), e.get("RetireQuietHours"),
                      change_control.parse(json.loads(e["ChangeControl"]), stored=True)
                      if e.get("ChangeControl") else None),
        destinations=tuple(
            DestinationConfig(d["name"], d["kind"], dict(d.get("options") or {}))
            for d in _array(e.get("Destinations"))
        ),
        state=RotationState(
            stage=Stage(e.get("Stage") or "idle"),
            rotation_id=e.get("RotationId", ""),
            actor=e.get("Actor", ""),
            stage_since=_dt(e.get("StageSince")),
            new_key_id=e.get("NewKeyId", ""),
            new_version=e.get("NewVersion", ""),
            new_expires=_dt(e.get("NewExpires")),
            replaces=tuple(_array(e.get("Replaces"))),
            acks=acks,
            push_failures={k: int(v) for k, v in _object(e.get("PushFailures")).items()},
            held={str(k): str(v) for k, v in _object(e.get("Held")).items()},
            baselines={str(k): Baseline(str(b["keyId"]), dict(b["settings"]))
                       for k, b in _object(e.get("Baselines")).items()},
            current_key_id=e.get("CurrentKeyId", ""),
            current_version=e.get("CurrentVersion", ""),
            superseded=superseded,
            retire_after=_dt(e.get("RetireAfter")),
            retiring=tuple(json.loads(e["Retiring"])) if e.get("Retiring") else (),
            probes={str(k): str(v) for k, v in _object(e.get("Probes")).items()},
            lease_owner=e.get("LeaseOwner", ""),
            lease_until=_dt(e.get("LeaseUntil")),
        ),
        observed=Observation(
            status=e.get("Status", ""),
            days_left=e.get("DaysLeft"),
            expires=_dt(e.get("Expires")),
            checked_at=_dt(e.get("CheckedAt")),
            error_code=e.get("ErrorCode", ""),
            error_message=e.get("ErrorMessage", ""),
            last_rotation_at=_dt(e.get("LastRotationAt")),
            last_outcome=e.get("LastOutcome", ""),
            needs_human=e.get("NeedsHuman", ""),
            other_credentials=int(e.get("OtherCredentials", 0)),
            lifetime_cap_days=e.get("LifetimeCapDays"),
            sign_ins=_sign_ins(e.get("SignIns")),
            evidence_hold=e.get("EvidenceHold", ""),
            evidence_kept=_kept(e, "EvidenceKept", e.get("EvidenceHold") or "", superseded),
            sign_ins_unreadable_since=_dt(e.get("SignInsUnreadableSince")),
            drift=drift,
            drift_kept=_kept(e, "DriftKept", " ".join(drift.values()), superseded),
            uses={str(k): str(v) for k, v in _object(e.get("Uses")).items()},
            drift_checked_at=_dt(e.get("DriftCheckedAt")),
            drift_unreadable_since=_dt(e.get("DriftUnreadableSince")),
            waiting=e.get("Waiting", ""),
            waiting_until=_dt(e.get("WaitingUntil")),
            approval_id=e.get("ApprovalId", ""),
            approval_status=e.get("ApprovalStatus", ""),
            change_blocking=bool(e.get("ChangeBlocking", False)),
        ),
    )


def _etag(metadata: Mapping[str, Any]) -> str:
    return str(metadata["etag"])


def _translate(error: AzureError, what: str) -> RotationError:
    if isinstance(error, ResourceNotFoundError):
        return NotFound(f"{what} not found", code="NotFound")
    if isinstance(error, ResourceModifiedError | ResourceExistsError) or (
        isinstance(error, HttpResponseError) and error.status_code in (409, 412)
    ):
        return Conflict(f"{what} was changed by another writer", code="Conflict")
    return RotationError(f"the state store failed on {what}: {type(error).__name__}", code="StateStoreError")


async def _written(table: TableClient, entity: Mapping[str, Any]) -> str | None:
    """The row's ETag when it holds exactly `entity` (every property, none more), else None."""
    try:
        stored = await table.get_entity(entity["PartitionKey"], entity["RowKey"])
    except AzureError:
        return None
    return _etag(stored.metadata) if dict(stored) == dict(entity) else None


async def _use_once(table: TableClient, partition: str, row: str, expires: datetime, what: str,
                    used: Conflict) -> None:
    """Insert the row of a one-time token (a link's nonce); a second use raises `used`. A random claim in the row
    tells our own insert, re-sent by the SDK's retry after its answer was lost, from another use."""
    claim = uuid.uuid4().hex
    try:
        await table.create_entity({"PartitionKey": partition, "RowKey": row, "Expires": _iso(expires), CLAIM: claim})
    except ResourceExistsError as error:
        try:
            mine = (await table.get_entity(partition, row)).get(CLAIM) == claim
        except AzureError:
            mine = False
        if mine:
            return
        raise used from error
    except AzureError as error:
        raise _translate(error, what) from error


# The tables this process has created or found, by account and name. A store is built per invocation, the tables
# are made once per process: a create per table per request costs round trips, and a burst of them is what made
# Azurite drop connections under concurrent requests (a 502 StateStoreError for a plain read).
_CREATED: set[tuple[str, str]] = set()


async def _create_tables(service: TableServiceClient, tables: Sequence[TableClient]) -> None:
    for table in tables:
        key = (service.url, table.table_name)
        if key in _CREATED:
            continue
        try:
            await service.create_table_if_not_exists(table.table_name)
        except AzureError as error:
            raise _translate(error, f"table {table.table_name}") from error
        _CREATED.add(key)


class TablesStateStore:
    """StateStore on Azure Tables (Azurite locally). Tables are created on first use."""

    def __init__(self, service: TableServiceClient, prefix: str = "") -> None:
        self._service = service
        self._targets: TableClient = service.get_table_client(f"{prefix}targets")
        self._events: TableClient = service.get_table_client(f"{prefix}events")
        self._seen: TableClient = service.get_table_client(f"{prefix}seenevents")
        self._requests: TableClient = service.get_table_client(f"{prefix}rotations")
        self._ready = False
        self._creating = asyncio.Lock()

    async def _ensure(self) -> None:
        if self._ready:
            return
        async with self._creating:  # the first calls of a concurrent pass wait for one creation
            if self._ready:
                return
            await _create_tables(self._service, (self._targets, self._events, self._seen, self._requests))
            self._ready = True

    async def list_targets(self) -> list[tuple[Target, str]]:
        await self._ensure()
        try:
            return [(entity_to_target(e), _etag(e.metadata)) async for e in self._targets.list_entities()]
        except AzureError as error:
            raise _translate(error, "targets") from error

    async def get_target(self, tenant_id: str, app_id: str) -> tuple[Target, str]:
        await self._ensure()
        try:
            entity = await self._targets.get_entity(tenant_id, app_id)
        except ResourceNotFoundError as error:
            raise NotFound(f"target {tenant_id}/{app_id} is not registered", code="TargetNotFound") from error
        except AzureError as error:
            raise _translate(error, f"target {tenant_id}/{app_id}") from error
        return entity_to_target(entity), _etag(entity.metadata)

    async def create_target(self, target: Target) -> str:
        await self._ensure()
        try:
            meta = await self._targets.create_entity(target_to_entity(target))
        except ResourceExistsError as error:
            raise Conflict(f"target {target.key} is already registered", code="TargetExists") from error
        except AzureError as error:
            raise _translate(error, f"target {target.key}") from error
        return _etag(meta)

    async def replace_target(self, target: Target, etag: str) -> str:
        await self._ensure()
        entity = target_to_entity(target)
        try:
            meta = await self._targets.update_entity(
                entity, mode=UpdateMode.REPLACE, etag=etag, match_condition=MatchConditions.IfNotModified,
            )
        except ResourceModifiedError as error:
            # The SDK's retry policy (after a 5xx or a lost answer) and aiohttp (after a dropped connection) send
            # this PUT again; when the first one was applied, the second answers 412 to its own write. The guard
            # kept the row safe either way; tell the two apart by reading it: our row as written is our write.
            mine = await _written(self._targets, entity)
            if mine is None:
                raise _translate(error, f"target {target.key}") from error
            return mine
        except AzureError as error:
            raise _translate(error, f"target {target.key}") from error
        return _etag(meta)

    async def delete_target(self, tenant_id: str, app_id: str, etag: str | None = None) -> None:
        await self._ensure()
        try:
            if etag is None:
                await self._targets.delete_entity(tenant_id, app_id)
            else:
                await self._targets.delete_entity(
                    tenant_id, app_id, etag=etag, match_condition=MatchConditions.IfNotModified
                )
        except AzureError as error:
            raise _translate(error, f"target {tenant_id}/{app_id}") from error

    async def record(self, event: Event) -> None:
        await self._ensure()
        at = event.at or datetime.now(UTC)
        newest_first = _EPOCH_LIMIT_MS - int(at.timestamp() * 1000)
        entity = _drop_none(
            {
                "PartitionKey": f"{event.tenant_id}_{event.app_id}",
                "RowKey": f"{newest_first:013d}-{uuid.uuid4().hex[:8]}",
                "At": _iso(at),
                "TenantId": event.tenant_id,
                "AppId": event.app_id,
                "Step": event.step,
                "Outcome": event.outcome,
                "Actor": event.actor,
                "RotationId": event.rotation_id,
                "DurationMs": event.duration_ms,
                "ErrorCode": event.error_code,
                "Detail": event.detail,
            }
        )
        try:
            await self._events.create_entity(entity)
        except ResourceExistsError:
            # The row key is this record's own (a random suffix): the SDK's retry re-sent the insert after the
            # answer to the first was lost, and that one was written.
            return
        except AzureError as error:
            raise _translate(error, "event") from error

    async def events(self, tenant_id: str, app_id: str, limit: int = 50) -> list[Event]:
        await self._ensure()
        found: list[Event] = []
        try:
            query = self._events.query_entities(
                "PartitionKey eq @pk", parameters={"pk": f"{tenant_id}_{app_id}"}, results_per_page=limit
            )
            async for e in query:
                found.append(
                    Event(
                        tenant_id=e.get("TenantId", ""),
                        app_id=e.get("AppId", ""),
                        step=e.get("Step", ""),
                        outcome=e.get("Outcome", ""),
                        actor=e.get("Actor", ""),
                        rotation_id=e.get("RotationId", ""),
                        duration_ms=int(e.get("DurationMs", 0)),
                        error_code=e.get("ErrorCode", ""),
                        detail=e.get("Detail", ""),
                        at=_dt(e.get("At")),
                    )
                )
                if len(found) >= limit:
                    break
        except AzureError as error:
            raise _translate(error, "events") from error
        return found

    async def record_request(self, request: RotationRequest) -> None:
        await self._ensure()
        row = {"PartitionKey": request.rotation_id, "RowKey": "", "TenantId": request.tenant_id,
               "AppId": request.app_id, "Actor": request.actor, "At": _iso(request.at)}
        try:
            await self._requests.upsert_entity(row, mode=UpdateMode.REPLACE)
        except AzureError as error:
            raise _translate(error, f"rotation {request.rotation_id}") from error

    async def request(self, rotation_id: str) -> RotationRequest:
        await self._ensure()
        try:
            e = await self._requests.get_entity(rotation_id, "")
        except ResourceNotFoundError:
            raise NotFound(f"no rotation {rotation_id} was requested", code="RotationNotFound") from None
        except AzureError as error:
            raise _translate(error, f"rotation {rotation_id}") from error
        return RotationRequest(rotation_id, e["TenantId"], e["AppId"], e.get("Actor", ""),
                               _dt(e.get("At")) or datetime.now(UTC))

    async def event_seen(self, event_id: str, now: datetime) -> bool:
        """Whether an Event Grid event id was recorded (claim_event) and has not expired."""
        await self._ensure()
        try:
            existing = await self._seen.get_entity(_event_key(event_id), "")
        except ResourceNotFoundError:
            return False
        except AzureError as error:
            raise _translate(error, "event id") from error
        expires = _dt(existing.get("ExpiresAt"))
        return expires is not None and expires > now

    async def claim_event(self, event_id: str, now: datetime, keep: timedelta) -> bool:
        """Record an Event Grid event id as handled; False when it was seen within `keep` (a replay or a copy).

        The insert is the claim: of concurrent copies exactly one succeeds. Expired ids are replaced, and a few
        expired rows are removed on each call so the table stays small without a sweeper.
        """
        await self._ensure()
        key = _event_key(event_id)
        row = {"PartitionKey": key, "RowKey": "", "SeenAt": _iso(now), "ExpiresAt": _iso(now + keep),
               CLAIM: uuid.uuid4().hex}
        try:
            await self._seen.create_entity(row)
        except ResourceExistsError:
            try:
                existing = await self._seen.get_entity(key, "")
                if existing.get(CLAIM) == row[CLAIM]:
                    # Our own insert, re-sent by the SDK's retry after its answer was lost: the claim is ours.
                    await self._purge_seen(now)
                    return True
                expires = _dt(existing.get("ExpiresAt"))
                if expires is not None and expires > now:
                    return False
                await self._seen.update_entity(
                    row, mode=UpdateMode.REPLACE, etag=existing.metadata["etag"],
                    match_condition=MatchConditions.IfNotModified,
                )
            except (ResourceModifiedError, ResourceNotFoundError):
                return False  # another copy took it between our read and our write
            except AzureError as error:
                raise _translate(error, "event id") from error
        except AzureError as error:
            raise _translate(error, "event id") from error
        await self._purge_seen(now)
        return True

    async def _purge_seen(self, now: datetime, limit: int = 20) -> None:
        try:
            expired = self._seen.query_entities(
                "ExpiresAt lt @now", parameters={"now": _iso(now)}, results_per_page=limit
            )
            done = 0
            async for row in expired:
                await self._seen.delete_entity(row["PartitionKey"], row["RowKey"])
                done += 1
                if done >= limit:
                    break
        except AzureError:
            pass  # housekeeping only: the next event tries again

    async def all_rows(self) -> list[dict[str, Any]]:
        """Every row of the state tables, as stored: for tests that prove no secret is ever written."""
        await self._ensure()
        rows: list[dict[str, Any]] = []
        for table in (self._targets, self._events, self._requests):
            rows += [dict(e) async for e in table.list_entities()]
        return rows

    async def close(self) -> None:
        await self._service.close()


class TablesConsentStore:
    """ConsentStore on Azure Tables: one partition per tenant; row `consent` is its record, row `state-<nonce>`
    marks a consent link as answered (an insert, so a second answer with the same link fails atomically)."""

    def __init__(self, service: TableServiceClient, prefix: str = "") -> None:
        self._service = service
        self._table: TableClient = service.get_table_client(f"{prefix}consents")
        self._ready = False

    async def _ensure(self) -> None:
        if not self._ready:
            await _create_tables(self._service, (self._table,))
            self._ready = True

    async def use_state(self, tenant_id: str, nonce: str, expires: datetime) -> None:
        await self._ensure()
        await _use_once(self._table, tenant_id, f"state-{nonce}", expires, "consent link",
                        Conflict("this consent link was used already", code="StateReplayed"))

    async def finish_state(self, tenant_id: str, nonce: str) -> None:
        await self._ensure()
        try:  # a merge: the row's claim and expiry stay
            await self._table.update_entity({"PartitionKey": tenant_id, "RowKey": f"state-{nonce}",
                                             "Finished": True}, mode=UpdateMode.MERGE)
        except AzureError as error:
            raise _translate(error, "consent link") from error

    async def state_unfinished(self, tenant_id: str, nonce: str) -> bool:
        await self._ensure()
        try:
            row = await self._table.get_entity(tenant_id, f"state-{nonce}")
        except ResourceNotFoundError:
            return False
        except AzureError as error:
            raise _translate(error, "consent link") from error
        return not row.get("Finished", False)

    async def record_consent(self, consent: Consent) -> None:
        await self._ensure()
        entity = {
            "PartitionKey": consent.tenant_id,
            "RowKey": "consent",
            "ConsentedAt": _iso(consent.consented_at),
            "Scope": consent.scope,
            "Via": consent.via,
        }
        try:
            await self._table.upsert_entity(entity, mode=UpdateMode.REPLACE)
        except AzureError as error:
            raise _translate(error, f"consent of {consent.tenant_id}") from error

    async def consent(self, tenant_id: str) -> Consent | None:
        await self._ensure()
        try:
            e = await self._table.get_entity(tenant_id, "consent")
        except ResourceNotFoundError:
            return None
        except AzureError as error:
            raise _translate(error, f"consent of {tenant_id}") from error
        at = _dt(e.get("ConsentedAt"))
        if at is None:
            return None
        return Consent(tenant_id, at, str(e.get("Scope", "")), str(e.get("Via", "")))

    async def all_rows(self) -> list[dict[str, Any]]:
        """Every row as stored: for tests that prove nothing secret or unexpected is written."""
        await self._ensure()
        return [dict(e) async for e in self._table.list_entities()]


# The onboarding runs' index: one row per run in one partition, keyed newest first (RUN_INDEX_KEY), so a page of the
# run list is one range read whatever the history (Azure Tables returns a partition's rows in RowKey order: "Table
# storage design guidelines", log tail pattern, MicrosoftDocs/azure-databases-docs). Tables this process has
# indexed (rows written before the index existed copied into it once), by account and name.
RUN_INDEX = "index"
RUN_INDEX_DONE = ("layout", "index")  # the marker row: every run row written before the index is in it
_INDEXED: set[tuple[str, str]] = set()
_NEWEST = 10**15  # milliseconds since 1970 stay below it until the year 33658


def run_index_key(run_id: str, made_at: datetime) -> str:
    """A run's index RowKey: newer runs sort first (an inverted millisecond time), the run id breaks ties."""
    return f"{_NEWEST - int(made_at.timestamp() * 1000):015d}.{run_id}"


def index_time(key: str) -> str:
    """The RowKey prefix of runs made at `key`'s time: rows greater than it are older."""
    return key.split(".", 1)[0]


class TablesOnboardingRuns:
    """OnboardingRuns on Azure Tables: one partition per run; row `run` is the run, row `tenant-<id>` each tenant
    with its steps (a JSON property); a signed-in run's starts each under `<run>.<start>`. Partition `index` lists
    every run newest first (the run list reads a page of it). Every write is ETag-guarded; nothing secret is ever a
    property."""

    def __init__(self, service: TableServiceClient, prefix: str = "") -> None:
        self._service = service
        self._table: TableClient = service.get_table_client(f"{prefix}onboarding")
        self._ready = False

    async def _ensure(self) -> None:
        if not self._ready:
            await _create_tables(self._service, (self._table,))
            self._ready = True

    @staticmethod
    def _run_entity(run: Run) -> dict[str, Any]:
        return _drop_none({
            "PartitionKey": run.run_id, "RowKey": "run", "AdminUpn": run.admin_upn, "AdminName": run.admin_name,
            "Method": run.method.value, "PlanOnly": run.plan_only, "StartedAt": _iso(run.started_at),
            "State": run.state.value, "FinishedAt": _iso(run.finished_at), "KeepSession": run.keep_session,
            "StartId": run.start_id, "Counts": json.dumps(dict(run.counts)) if run.counts is not None else None,
        })

    @staticmethod
    def _run(e: Mapping[str, Any]) -> Run:
        return Run(e["PartitionKey"], e.get("AdminUpn", ""), e.get("AdminName", ""), InstallMethod(e["Method"]),
                   bool(e.get("PlanOnly", False)), _dt(e.get("StartedAt")) or datetime.now(UTC),
                   RunState(e.get("State", "running")), _dt(e.get("FinishedAt")), bool(e.get("KeepSession", False)),
                   str(e.get("StartId", "")), json.loads(e["Counts"]) if e.get("Counts") else None)

    @staticmethod
    def _tenant_entity(run_id: str, p: TenantProgress) -> dict[str, Any]:
        steps = {name: {"state": r.state, "at": _iso(r.at), "detail": r.detail, "code": r.code}
                 for name, r in p.steps.items()}
        return _drop_none({
            "PartitionKey": run_id, "RowKey": f"tenant-{p.tenant_id}", "TenantId": p.tenant_id,
            "Customer": p.customer, "State": p.state.value, "Steps": json.dumps(steps), "AppId": p.app_id,
            "AppObjectId": p.app_object_id, "ProofpointDomain": p.proofpoint_domain,
            "ServicePrincipalId": p.service_principal_id, "ErrorCode": p.error_code,
            "ErrorMessage": p.error_message, "Fix": p.fix, "UpdatedAt": _iso(p.updated_at), "Worker": p.worker,
            "ClaimedUntil": _iso(p.claimed_until),
        })

    @staticmethod
    def _tenant(e: Mapping[str, Any]) -> TenantProgress:
        steps = {name: StepRecord(d["state"], _dt(d.get("at")) or datetime.now(UTC), d.get("detail", ""),
                                  d.get("code", ""))
                 for name, d in json.loads(e.get("Steps") or "{}").items()}
        return TenantProgress(
            e["TenantId"], e.get("Customer", ""), TenantState(e.get("State", "pending")), steps, e.get("AppId", ""),
            e.get("AppObjectId", ""), e.get("ProofpointDomain", ""), e.get("ServicePrincipalId", ""),
            e.get("ErrorCode", ""), e.get("ErrorMessage", ""), e.get("Fix", ""), _dt(e.get("UpdatedAt")),
            e.get("Worker", ""), _dt(e.get("ClaimedUntil")))

    async def _insert(self, entity: dict[str, Any], what: str) -> str:
        await self._ensure()
        try:
            return _etag(await self._table.create_entity(entity))
        except ResourceExistsError as error:
            # The SDK re-sends an insert whose answer was lost: our own row as written is our write.
            mine = await _written(self._table, entity)
            if mine is not None:
                return mine
            raise Conflict(f"{what} exists already", code="EntityAlreadyExists") from error
        except AzureError as error:
            raise _translate(error, what) from error

    async def _replace(self, entity: dict[str, Any], etag: str, what: str) -> str:
        await self._ensure()
        try:
            return _etag(await self._table.update_entity(
                entity, mode=UpdateMode.REPLACE, etag=etag, match_condition=MatchConditions.IfNotModified))
        except ResourceModifiedError as error:
            mine = await _written(self._table, entity)  # a retried PUT whose first copy was applied
            if mine is None:
                raise Conflict(f"{what} was changed by another writer", code="UpdateConditionNotSatisfied") \
                    from error
            return mine
        except AzureError as error:
            raise _translate(error, what) from error

    async def _get(self, row: str, run_id: str, what: str, code: str) -> Any:
        await self._ensure()
        try:
            return await self._table.get_entity(run_id, row)
        except ResourceNotFoundError:
            raise NotFound(f"{what} not found", code=code) from None
        except AzureError as error:
            raise _translate(error, what) from error

    async def create_run(self, run: Run) -> str:
        # The index entry first: a run row is never missing from the list (an entry whose run never landed is
        # skipped by the list and removed by the prune).
        await self.index_run(run.run_id, run.started_at)
        return await self._insert(self._run_entity(run), f"onboarding run {run.run_id}")

    async def index_run(self, run_id: str, made_at: datetime) -> None:
        await self._ensure()
        entity = {"PartitionKey": RUN_INDEX, "RowKey": run_index_key(run_id, made_at), "RunId": run_id,
                  "MadeAt": _iso(made_at)}
        try:
            await self._table.upsert_entity(entity, mode=UpdateMode.REPLACE)  # idempotent: the same key each time
        except AzureError as error:
            raise _translate(error, f"the index entry of onboarding run {run_id}") from error

    async def _indexed(self) -> None:
        """Copy run rows written before the index existed into it, once per table (the marker row says so)."""
        await self._ensure()
        key = (self._service.url, self._table.table_name)
        if key in _INDEXED:
            return
        try:
            try:
                await self._table.get_entity(*RUN_INDEX_DONE)
            except ResourceNotFoundError:
                # Runs this code made are indexed already (at their making; a dashboard run's startedAt moves
                # when it is started): only the others are copied. Once per table, then never again.
                indexed = {e["RunId"] async for e in self._table.query_entities(
                    "PartitionKey eq @index", parameters={"index": RUN_INDEX}, select=["RunId"])}
                async for e in self._table.query_entities("RowKey eq 'run'", select=["PartitionKey", "StartedAt"]):
                    if e["PartitionKey"] not in indexed:
                        await self.index_run(e["PartitionKey"], _dt(e.get("StartedAt")) or datetime.now(UTC))
                await self._table.upsert_entity({"PartitionKey": RUN_INDEX_DONE[0], "RowKey": RUN_INDEX_DONE[1]})
        except AzureError as error:
            raise _translate(error, "the onboarding runs' index") from error
        _INDEXED.add(key)

    async def get_run(self, run_id: str) -> tuple[Run, str]:
        e = await self._get("run", run_id, f"onboarding run {run_id}", "RunNotFound")
        return self._run(e), _etag(e.metadata)

    async def replace_run(self, run: Run, etag: str) -> str:
        return await self._replace(self._run_entity(run), etag, f"onboarding run {run.run_id}")

    async def list_runs(self, limit: int = 20, cursor: str | None = None) -> tuple[list[Run], str | None]:
        await self._indexed()
        if cursor is not None and not RUN_CURSOR.fullmatch(cursor):
            raise ValueError("cursor is not one this store gave")
        entries: list[tuple[str, str]] = []
        try:
            query = self._table.query_entities("PartitionKey eq @index and RowKey gt @after",
                                               parameters={"index": RUN_INDEX, "after": cursor or ""},
                                               select=["RowKey", "RunId"], results_per_page=limit + 1)
            async for e in query:  # one page of the index: the SDK asks for the next page only if iterated on
                entries.append((e["RowKey"], e["RunId"]))
                if len(entries) > limit:
                    break
        except AzureError as error:
            raise _translate(error, "onboarding runs") from error
        page = entries[:limit]
        found = await asyncio.gather(*(self._run_or_none(run_id) for _, run_id in page))
        runs = [r for r in found if r is not None]  # an entry whose run row never landed (or was pruned) is skipped
        return runs, (page[-1][0] if len(entries) > limit else None)

    async def _run_or_none(self, run_id: str) -> Run | None:
        try:
            return (await self.get_run(run_id))[0]
        except NotFound:
            return None

    async def old_runs(self, before: datetime) -> list[tuple[str, datetime]]:
        await self._indexed()
        try:
            query = self._table.query_entities("PartitionKey eq @index and RowKey gt @at", select=["RunId", "MadeAt"],
                                               parameters={"index": RUN_INDEX,
                                                           "at": index_time(run_index_key("", before))})
            found = [(e["RunId"], _dt(e.get("MadeAt")) or before) async for e in query]
        except AzureError as error:
            raise _translate(error, "onboarding runs") from error
        return found[::-1]  # oldest first

    async def _delete_rows(self, filter_: str, parameters: dict[str, str], what: str) -> int:
        await self._ensure()
        try:
            keys = [(e["PartitionKey"], e["RowKey"]) async for e in self._table.query_entities(
                filter_, parameters=parameters, select=["PartitionKey", "RowKey"])]
            for partition, row in keys:
                await self._table.delete_entity(partition, row)  # succeeds when gone already
        except AzureError as error:
            raise _translate(error, what) from error
        return len(keys)

    async def delete_starts(self, run_id: str, keep: str) -> int:
        # Every start's rows are under `<run>.<start>` (tenants_key): the partitions between "<run>." and "<run>/".
        starts = "PartitionKey gt @low and PartitionKey lt @high and PartitionKey ne @keep"
        return await self._delete_rows(starts, {"low": f"{run_id}.", "high": f"{run_id}/", "keep": keep},
                                       f"the starts of onboarding run {run_id}")

    async def delete_run(self, run_id: str, made_at: datetime, etag: str | None = None) -> int:
        # The run row first, as the prune read it (a resume that reopened the run since changed its ETag: Conflict,
        # nothing deleted; a resume after it finds no run), its tenants next, its index entry last: a delete cut
        # short leaves the entry, so the next prune finds a run without its row and finishes the delete.
        await self._ensure()
        deleted = 0
        try:
            await self._table.get_entity(run_id, "run", select=["PartitionKey"])
            deleted = 1
            if etag is None:
                await self._table.delete_entity(run_id, "run")
            else:
                await self._table.delete_entity(run_id, "run", etag=etag, match_condition=MatchConditions.IfNotModified)
        except ResourceNotFoundError:
            deleted = 0  # gone already (a delete cut short, or its first copy applied before a retry)
        except AzureError as error:
            raise _translate(error, f"onboarding run {run_id}") from error
        deleted += await self.delete_starts(run_id, keep="")
        deleted += await self._delete_rows("PartitionKey eq @run", {"run": run_id},
                                           f"tenants of onboarding run {run_id}")
        try:
            await self._table.delete_entity(RUN_INDEX, run_index_key(run_id, made_at))
        except AzureError as error:
            raise _translate(error, f"the index entry of onboarding run {run_id}") from error
        return deleted

    async def create_tenant(self, run_id: str, progress: TenantProgress) -> str:
        return await self._insert(self._tenant_entity(run_id, progress),
                                  f"tenant {progress.tenant_id} of run {run_id}")

    async def get_tenant(self, run_id: str, tenant_id: str) -> tuple[TenantProgress, str]:
        e = await self._get(f"tenant-{tenant_id}", run_id, f"tenant {tenant_id} of run {run_id}", "TenantNotInRun")
        return self._tenant(e), _etag(e.metadata)

    async def replace_tenant(self, run_id: str, progress: TenantProgress, etag: str) -> str:
        return await self._replace(self._tenant_entity(run_id, progress), etag,
                                   f"tenant {progress.tenant_id} of run {run_id}")

    async def tenants(self, run_id: str) -> list[tuple[TenantProgress, str]]:
        await self._ensure()
        try:
            query = self._table.query_entities(
                "PartitionKey eq @run and RowKey ge 'tenant-' and RowKey lt 'tenant.'", parameters={"run": run_id})
            return [(self._tenant(e), _etag(e.metadata)) async for e in query]
        except AzureError as error:
            raise _translate(error, f"tenants of run {run_id}") from error

    async def all_rows(self) -> list[dict[str, Any]]:
        """Every row as stored: for tests that prove no token or secret is ever written."""
        await self._ensure()
        return [dict(e) async for e in self._table.list_entities()]
