"""Ports: the small interfaces the services need; adapters implement them with the real SDKs."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from shared.change_control import ApprovalRequest
from shared.domain import Application, Credential, DestinationConfig, Secret, Target, TokenRefusal, VersionStage
from shared.domain import CredentialSignIns as CredentialSignIns  # the row keeps the evidence: domain records
from shared.domain import ReportedSignIns as ReportedSignIns
from shared.domain import SignInEvidence as SignInEvidence
from shared.inventory import InventoryCredential, InventoryPage, InventoryQuery, ObjectKind, RoundEnd, StoredObject

if TYPE_CHECKING:  # the run state's records live with the engine that makes them
    from shared.bulk_onboarding import Run, TenantProgress
    from shared.conditions import Condition
    from shared.expiry_warnings import Exclusion


@dataclass(frozen=True)
class NewCredential:
    """What addPassword returned: the only moment the value exists outside Key Vault."""

    credential: Credential
    secret: Secret


@dataclass(frozen=True)
class StoredVersion:
    """One stored version of a target's secret: what the protocol knows of it, never its value.

    `labels` belongs to the store (its own bookkeeping, e.g. Key Vault tags): the protocol hands it back to
    promote/demote untouched and never reads it.
    """

    version: str
    rotation_id: str
    key_id: str
    stage: VersionStage | None  # None: a version the rotator did not write (or an unknown stage)
    expires: datetime | None
    created: datetime | None
    enabled: bool = True
    labels: Mapping[str, str] = field(default_factory=dict, compare=False)
    author: str = ""  # who wrote a version by hand, when they said so (its `author` tag); Key Vault records no writer


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
    # The destination's settings as first read for this key (BaselineDestination), kept in the state row so that a
    # push re-run after a crash compares its read-back with the settings before the first PUT, not after it.
    baseline: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Confirmation:
    """What a destination showed after taking a secret (never the secret itself).

    `checks` names what the read-back proved (e.g. "application-id", "ad-key-present"). When `sync_reported`,
    the destination reports its own sync (`sync_seen`: its last successful sync right after the push) and the
    strongest proof is that sync moving past the push: the engine retires the old secret only then.
    """

    checks: tuple[str, ...] = ()
    sync_reported: bool = False
    sync_seen: datetime | None = None


@dataclass(frozen=True)
class Alert:
    """A condition that needs a human."""

    condition: str
    tenant_id: str
    app_id: str
    message: str
    customer: str = ""
    details: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Principal:
    """A service principal of a tenant: who an admin must add as owner of an app."""

    object_id: str
    app_id: str
    display_name: str

    def describe(self) -> str:
        return f"service principal '{self.display_name}' (object id {self.object_id}, app id {self.app_id})"


@dataclass(frozen=True)
class Ownership:
    """Whether the rotator's own service principal owns an app registration, and which principal that is."""

    owned: bool
    principal: Principal | None  # None when the rotator cannot tell its own principal (no client id known)


class Directory(Protocol):
    """Entra ID app registrations through Microsoft Graph, per customer tenant.

    Errors: AppNotFound, Unreachable (consent, permission, unknown tenant), Throttled (nothing written; retry
    after a wait), Ambiguous (a write may have taken effect), RotationError (any other refusal). Writes also raise
    NotOwner (the rotator's service principal does not own the app), PolicyBlocked / PolicyLifetime (a tenant
    app-management policy refused addPassword; nothing was created).
    """

    async def get_application(self, tenant_id: str, app_id: str) -> Application:
        """The app registration with its password credentials (never their values). Read-only."""
        ...

    async def ownership(self, tenant_id: str, app_id: str) -> Ownership:
        """Whether the rotator's service principal is among the owners of the app with this appId (writes need
        it with OwnedBy). Read-only; addressed like get_application, so the two reads can go side by side."""
        ...

    async def add_password(self, tenant_id: str, object_id: str, display_name: str, end: datetime) -> NewCredential:
        """Create a password credential; the value is returned this once. Not idempotent: after Ambiguous the
        credential may exist, find it by its display name (which carries the rotation id), never retry blindly."""
        ...

    async def remove_password(self, tenant_id: str, object_id: str, key_id: str) -> None:
        """Remove a password credential. Idempotent: succeeds when it is already gone."""
        ...

    async def find_applications(self, tenant_id: str, name_prefixes: Sequence[str]) -> list[Application]:
        """App registrations whose display name starts with one of the prefixes. Read-only."""
        ...

    async def remove_owner(self, tenant_id: str, object_id: str, principal_id: str) -> bool:
        """Remove a service principal from the app's owners (DELETE /applications/{id}/owners/{id}/$ref; the
        application permission Application.ReadWrite.OwnedBy allows it on an owned app). False when it was not an
        owner (idempotent)."""
        ...


class TokenProbe(Protocol):
    """Proves a secret works: a client-credentials token for the app in its tenant."""

    async def try_token(self, tenant_id: str, app_id: str, secret: Secret, request_id: str = "") -> TokenRefusal | None:
        """None when a token was issued; otherwise the identity platform's refusal (e.g. AADSTS7000215).

        `request_id` (a GUID) is sent as the token request's `client-request-id`, which Entra's sign-in log keeps
        as the sign-in's correlationId (shared/verify_probe.py); empty: Entra makes one up.

        Raises RotationError when the identity platform gave no answer about the secret (an outage, a dropped
        connection, a throttled or transient error): that says nothing about the secret."""
        ...


class SecretStore(Protocol):
    """Key Vault: one secret per target, a version per rotation marked with its stage; and named secrets.

    Errors: Throttled (nothing done; retry after a wait), Ambiguous (the request may have taken effect),
    Unreachable (access denied), NotFound, RotationError (any other refusal).
    """

    async def store_pending(self, target: Target, rotation_id: str, credential: Credential, secret: Secret) -> str:
        """Add a version holding `secret`, marked pending, carrying the rotation id and key id; its version id.

        Not idempotent: every call that takes effect adds a version. After Ambiguous (or any server error) the
        version may exist: look for it with find_by_rotation before writing again.
        """
        ...

    async def find_by_rotation(self, target: Target, rotation_id: str) -> StoredVersion | None:
        """The version stored for this rotation (the newest, if several), or None."""
        ...

    async def versions(self, target: Target) -> list[StoredVersion]:
        """Every version of the target's secret, oldest first; empty when the secret does not exist yet."""
        ...

    async def promote(self, target: Target, version: StoredVersion, key_id: str = "") -> None:
        """Mark the version `current`, and with `key_id` name the credential it holds (a version the rotator did
        not write carries none until then). Idempotent."""
        ...

    async def demote(self, target: Target, version: StoredVersion, stage: VersionStage) -> None:
        """Mark the version `previous` or `retired`. Idempotent."""
        ...

    async def value(self, target: Target, version: str) -> Secret:
        """The value of one version; NotFound when it does not exist."""
        ...

    async def get_named(self, name: str) -> Secret:
        """The latest value of a named secret (a destination's account, the alert webhook); NotFound if absent."""
        ...


class StateStore(Protocol):
    """The registry, the protocol state (one row per target, ETag-guarded) and the audit log.

    Errors: NotFound (no such target), Conflict (the ETag no longer matches, or the target exists already),
    RotationError (the store failed; a write may or may not have taken effect).
    """

    async def list_targets(self) -> list[tuple[Target, str]]:
        """Every target with its row's ETag."""
        ...

    async def get_target(self, tenant_id: str, app_id: str) -> tuple[Target, str]:
        """One target and its row's ETag; NotFound when it is not registered."""
        ...

    async def create_target(self, target: Target) -> str:
        """Insert a new target; its ETag. Conflict when it exists already."""
        ...

    async def replace_target(self, target: Target, etag: str) -> str:
        """Write the target's row if it still has `etag`; the new ETag. Conflict when another writer came first."""
        ...

    async def delete_target(self, tenant_id: str, app_id: str, etag: str | None = None) -> None:
        """Remove a target (only if it still has `etag`, when given)."""
        ...

    async def record(self, event: Event) -> None:
        """Append one audit event."""
        ...

    async def events(self, tenant_id: str, app_id: str, limit: int = 50) -> list[Event]:
        """A target's audit events, newest first."""
        ...

    async def record_request(self, request: RotationRequest) -> None:
        """Keep who asked for a rotation and of which target, by rotation id (what GET /api/rotations/{id} reads)."""
        ...

    async def request(self, rotation_id: str) -> RotationRequest:
        """The rotation request with this id; NotFound when there is none."""
        ...


@dataclass(frozen=True)
class RotationRequest:
    """An operator's request for a rotation, accepted and queued: the rotation id it was reserved under."""

    rotation_id: str
    tenant_id: str
    app_id: str
    actor: str
    at: datetime


@dataclass(frozen=True)
class Consent:
    """A customer tenant's admin consent to the MSP app, as the consent page received it."""

    tenant_id: str
    consented_at: datetime
    scope: str = ""
    via: str = "consent-page"


class ConsentKeys(Protocol):
    """The key that signs consent links' `state` (kept in Key Vault; the rotator makes it on first use).

    Errors: RotationError (the vault failed)."""

    async def signing_key(self) -> tuple[str, bytes]:
        """The current key: its version and its bytes."""
        ...

    async def key(self, version: str) -> bytes | None:
        """The key of one version (a link signed before a new key was made); None when no such version exists."""
        ...


class ConsentStore(Protocol):
    """Consent records per tenant, and the consent links already answered (each link is good once).

    Errors: Conflict (the state was used already), RotationError (the store failed)."""

    async def use_state(self, tenant_id: str, nonce: str, expires: datetime) -> None:
        """Mark a consent link's state as used; Conflict when it was used before. Atomic (an insert)."""
        ...

    async def finish_state(self, tenant_id: str, nonce: str) -> None:
        """Record that what a used state started has finished (its answer was given): see `state_unfinished`."""
        ...

    async def state_unfinished(self, tenant_id: str, nonce: str) -> bool:
        """Whether the state was used and what it started never finished (the process died on the way)."""
        ...

    async def record_consent(self, consent: Consent) -> None:
        """Record (or renew) a tenant's consent."""
        ...

    async def consent(self, tenant_id: str) -> Consent | None:
        """The tenant's consent record, if any."""
        ...


class Approvals(Protocol):
    """The approvals book (change control's approval mode): one request per target, for the key being replaced,
    changed only by ETag-guarded writes; and the signed approval links already used (each is good once).

    Errors: Conflict (another writer first; a link used before), RotationError (the store failed)."""

    async def get(self, tenant_id: str, app_id: str) -> tuple[ApprovalRequest, str] | None:
        """The target's request and its ETag, None when it has none."""
        ...

    async def put(self, request: ApprovalRequest, etag: str | None) -> str:
        """Write the target's request: insert when `etag` is None, else replace that version (Conflict otherwise)."""
        ...

    async def remove(self, tenant_id: str, app_id: str, etag: str) -> None:
        """Delete the target's request if still that version (Conflict otherwise; nothing when gone)."""
        ...

    async def list_requests(self) -> list[ApprovalRequest]:
        """Every target's request."""
        ...

    async def use_link(self, nonce: str, expires: datetime) -> None:
        """Mark a signed approval link as used; Conflict when it was used before. Atomic (an insert)."""
        ...


class ApprovalLinks(Protocol):
    """Signed links that take a person from an alert (or a ticket) to the confirmation of one decision on one
    approval request (shared/approval_links.py)."""

    async def links(self, request: ApprovalRequest) -> dict[str, str]:
        """Action ("approve", "postpone", "reject") -> link; empty when links cannot be made (no public address)."""
        ...


class Destination(Protocol):
    """A consumer of the secret (Proofpoint, the MSP portal, a human)."""

    async def deliver(self, config: DestinationConfig, delivery: Delivery) -> Confirmation | None:
        """Return once the destination confirmed it holds the secret (with what it showed, when it shows
        anything); raise RotationError otherwise. Idempotent: delivering the same secret again is harmless."""
        ...


@dataclass(frozen=True)
class DestinationCheck:
    """What a live, read-only check of a destination's registration found; `problems` empty when it works."""

    destination: str
    findings: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems


@runtime_checkable
class CheckableDestination(Protocol):
    """A destination that can test its registration without changing anything (the dry run asks it)."""

    async def check(self, config: DestinationConfig) -> DestinationCheck:
        """Never raises for the destination's own answers: they become `problems`."""
        ...


@runtime_checkable
class BaselineDestination(Protocol):
    """A destination whose push must keep its other settings: their state before the first push is recorded."""

    async def baseline(self, config: DestinationConfig) -> dict[str, Any]:
        """The settings a push must keep, JSON, with no secret value in it (it is stored); read-only."""
        ...


@runtime_checkable
class PreviewableDestination(Protocol):
    """A destination that can show what a push would send, changing nothing (the Proofpoint check)."""

    async def preview(self, config: DestinationConfig, app_id: str) -> dict[str, Any]:
        """What the destination shows now and what a push would send, secrets hidden; RotationError on failure."""
        ...


@dataclass(frozen=True)
class ReportedUse:
    """What a destination reports of the app and secret it uses (no secret): its application id (None when not
    shown), the expiry as shown and the instants it may mean, and its own sync state."""

    destination: str
    app_id: str | None = None
    expiry_shown: str | None = None  # None: not reported (absent or null)
    expiry_from: datetime | None = None  # None with a shown expiry: unreadable
    expiry_to: datetime | None = None
    # The windows the expiry may mean, within [expiry_from, expiry_to] (a slashed date read both ways gives two);
    # empty: the whole span is one window.
    expiry_windows: tuple[tuple[datetime, datetime], ...] = ()
    sync_status: str | None = None
    last_sync: datetime | None = None


@runtime_checkable
class UsageReporter(Protocol):
    """A destination that reports which app and secret it uses (Proofpoint's sync settings), read for drift."""

    async def reported_use(self, config: DestinationConfig) -> ReportedUse:
        """What the destination shows of the app and secret it uses, changing nothing (RotationError when it
        cannot be read)."""
        ...


@runtime_checkable
class SyncReporter(Protocol):
    """A destination that reports its own sync with the secret (Proofpoint's last_successful_sync)."""

    async def last_sync(self, config: DestinationConfig) -> datetime | None:
        """Its last successful sync, or None when it does not say; read-only; RotationError when unreachable."""
        ...


class Clock(Protocol):
    """The time, timezone-aware UTC."""

    def now(self) -> datetime: ...


class Alerter(Protocol):
    """Tells a human about a condition, and that it cleared; never raises (an alert that cannot be sent is logged)."""

    async def raise_alert(self, alert: Alert) -> None: ...

    async def settle(self, tenant_id: str, app_id: str, holding: frozenset[tuple[str, str]]) -> None:
        """Resolve the target's open conditions not in `holding` ((condition, destination) pairs), once each."""
        ...

    async def redeliver(self) -> None:
        """Post again what the channel refused or never got: today's alerts, resolved notes (each pass calls it)."""
        ...


class WorkReason(str, Enum):
    """Why a message was sent. Each names work already decided: a rotation reserved (DUE by the timer, MANUAL by an
    operator) or in flight (IN_FLIGHT, BUSY_RETRY), or a retirement whose grace is over (RETIRE). None starts one.
    INVENTORY is no rotation work: the tenant's credential inventory now (read-only), sent when onboarding registers
    a customer so its first inventory does not wait for the daily pass."""

    DUE = "due"
    MANUAL = "manual"
    IN_FLIGHT = "in-flight"
    BUSY_RETRY = "busy-retry"
    RETIRE = "retire"
    INVENTORY = "inventory"


@dataclass(frozen=True)
class Work:
    """One customer with work for a queue worker: advance this target (at-least-once; the lease and ETags make a
    second delivery harmless). Carries ids and who asked, never a secret."""

    tenant_id: str
    app_id: str
    actor: str
    reason: WorkReason


class WorkQueue(Protocol):
    """The queue the timers fan work out on; a queue-triggered function advances one target per message."""

    async def enqueue(self, work: Work, delay_seconds: int = 0) -> None:
        """Add one message, visible after `delay_seconds`; RotationError (Unreachable) when the queue cannot be
        written."""
        ...


# --- Partner relationship (issue 23): a signed-in partner admin's delegated access through GDAP ------------------


@dataclass(frozen=True)
class PartnerAdmin:
    """The account of the partner (MSP) tenant that signed in for an onboarding run; named in the audit trail."""

    tenant_id: str
    object_id: str
    user_principal_name: str
    display_name: str


@dataclass(frozen=True)
class GdapCustomer:
    """A customer tenant the partner has an active GDAP relationship with, and what the signed-in admin may do there.

    `roles` are Entra built-in role template ids (shared.partner_roles) the admin holds in that tenant through the
    active relationships' access assignments (the relationship grants a role and assigns it to a partner security
    group the admin is a member of); an empty set means a relationship without any role usable by this admin.
    """

    tenant_id: str
    display_name: str
    relationship_ids: tuple[str, ...]
    roles: frozenset[str]


class InstallMethod(str, Enum):
    """How the MSP app is put into a customer tenant with its Graph application permissions."""

    PARTNER_CENTER = "partner-center"  # Partner Center's application-consent API (as CIPP's Set-CIPPCPVConsent)
    GRAPH = "graph"  # Graph under GDAP: create the service principal, then app role assignments


@dataclass(frozen=True)
class Installed:
    """The MSP app's service principal in a customer tenant after install_app."""

    service_principal_id: str
    created: bool  # False when the service principal was there already
    roles_granted: tuple[str, ...]  # Graph app role values newly assigned by this call (empty when all were there)


class PartnerSession(Protocol):
    """One signed-in partner admin's delegated access (GDAP) to customer tenants; changes are made as that admin.

    Idempotent: each call succeeds when what it asks is there already (and says so). Errors: PartnerRefused (the
    service refused: a missing GDAP role, consent refused, relationship not active; `code` and `fix` say which),
    Throttled (nothing happened; retry after a wait), Ambiguous (may have taken effect: check, then retry),
    RotationError (anything else). Never holds or exposes a token outside itself.
    """

    admin: PartnerAdmin

    async def customers(self) -> list[GdapCustomer]:
        """Customer tenants with an active GDAP relationship, with the roles this admin holds in each."""
        ...

    async def domains(self, tenant_id: str) -> list[str]:
        """The customer tenant's verified domain names (to find its Proofpoint org), default domain first."""
        ...

    async def install_app(self, tenant_id: str, graph_roles: Sequence[str], method: InstallMethod) -> Installed:
        """Put the MSP app's service principal into the tenant with these Graph application permissions (values such
        as `Application.ReadWrite.OwnedBy`)."""
        ...

    async def add_owner(self, tenant_id: str, application_object_id: str, principal_id: str) -> bool:
        """Add a service principal as owner of an app registration; False when it was an owner already."""
        ...

    async def remove_owner(self, tenant_id: str, application_object_id: str, principal_id: str) -> bool:
        """Remove a service principal from an app's owners; False when it was not an owner."""
        ...

    async def remove_app(self, tenant_id: str) -> bool:
        """Delete the MSP app's service principal from the tenant (offboarding); False when it was not there."""
        ...

    async def close(self) -> None:
        """Forget every token this session holds."""
        ...


# --- Sign-in evidence (issue 24): which credential of an app signed in, from Entra's own records ------------------
# CredentialSignIns and SignInEvidence are domain records (shared/domain.py: a target's row keeps the last evidence).


class SignInLog(Protocol):
    """Entra ID's records of an app's service-principal sign-ins per credential (Graph sign-in logs / reports)."""

    async def credential_sign_ins(self, tenant_id: str, app_id: str, since: datetime,
                                  probes: frozenset[str] = frozenset()) -> SignInEvidence:
        """Per credential key id, the first and last sign-in since `since`. A sign-in whose correlationId is one
        of `probes` (the rotator's own verify probes, lower case) is not counted there, only in `probe_sign_in`.
        A tenant that refuses the read (no permission, no licence) gives `available=False` with the code, never an
        exception; Throttled and RotationError for a service that gave no answer."""
        ...

    async def credential_report(self, tenant_id: str, app_id: str) -> ReportedSignIns:
        """Per credential key id of the app, the last sign-in Entra's credential activity report states. A tenant
        that refuses it gives `available=False` with the code; Throttled and RotationError as above."""
        ...


# --- Credential inventory (issue 25): every credential of every consented tenant, detect only --------------------


class InventoryStore(Protocol):
    """The inventory: one row per credential (shared.inventory.InventoryCredential), and per tenant and object kind
    the delta link the next pass resumes from. Holds no secret value (Graph never lists one).

    Errors: RotationError (the store failed; a write may or may not have taken effect: every write is idempotent,
    so the pass repeats it).
    """

    async def list_credentials(self, query: InventoryQuery | None = None) -> list[InventoryCredential]:
        """The credentials matching `query` (all without one), ordered by tenant, object kind, object, key id."""
        ...

    def stream(self, tenant_id: str = "") -> AsyncIterator[InventoryCredential]:
        """Every credential (of one tenant, when given) page by page, never the whole fleet in memory."""
        ...

    async def objects_credentials(self, tenant_id: str, object_kind: ObjectKind, object_ids: Sequence[str]
                                  ) -> dict[str, list[InventoryCredential]]:
        """The stored credentials of these objects, by object id (objects without rows left out)."""
        ...

    async def objects_known(self, tenant_id: str, object_kind: ObjectKind, object_ids: Sequence[str]
                            ) -> dict[str, StoredObject | None]:
        """The objects among these that hold rows, with what the store knows of each without reading its rows (None:
        only its rows tell, objects_credentials)."""
        ...

    async def owners_listed(self, tenant_id: str, object_kind: ObjectKind, object_ids: Sequence[str]
                            ) -> dict[str, tuple[str, ...]]:
        """The owners the kind's last full listing (RoundEnd.listed) gave of these objects while they held no rows;
        objects it did not give left out (created since, or cut: read them from Graph)."""
        ...

    async def put_objects(self, tenant_id: str, object_kind: ObjectKind,
                          objects: Mapping[str, Sequence[InventoryCredential]], *,
                          stored: Mapping[str, Sequence[str]] | None = None, delta_link: str | None = None) -> None:
        """Each object's credentials become exactly the given ones (an empty list removes its rows); batched.
        Idempotent. `stored`: for the objects it names, the key ids of their rows to replace (no lookup for those
        objects; rows it does not name are kept: a partial delta object's other collection).
        `delta_link`: also keep it as the kind's delta link, saved with the write's last rows, never before them
        (a round's last write: one request instead of a separate save_delta_links)."""
        ...

    async def put_rounds(self, tenant_id: str, ends: Mapping[ObjectKind, RoundEnd]) -> None:
        """The last writes of one tenant's rounds, every kind's in one go (one partition: as few writes as fit, one
        for a daily pass): per kind as put_objects, each delta link saved with the last rows, never before them; a
        kind's `listed` owners replace those kept of objects without rows (owners_listed)."""
        ...

    async def remove_objects(self, tenant_id: str, object_kind: ObjectKind, object_ids: Sequence[str]) -> None:
        """Remove every row of objects that left the tenant. Idempotent: succeeds when already gone."""
        ...

    async def object_ids(self, tenant_id: str, object_kind: ObjectKind) -> set[str]:
        """The ids of the tenant's objects of this kind that hold at least one stored credential."""
        ...

    async def delta_links(self, tenant_id: str) -> dict[ObjectKind, str]:
        """Where the tenant's next delta rounds start, per object kind (a kind without one reads everything)."""
        ...

    async def save_delta_links(self, tenant_id: str, links: Mapping[ObjectKind, str | None]) -> None:
        """Keep the delta links finished rounds ended with (None forgets a kind's; kinds not named are kept)."""
        ...

    async def remove_tenant(self, tenant_id: str) -> None:
        """Forget a tenant's credentials and delta links (offboarding). Idempotent."""
        ...


class InventorySource(Protocol):
    """Graph's applications and servicePrincipals of a tenant, read page by page (delta queries), read-only.

    Errors: StaleDeltaLink (restart with a full read), Unreachable (consent, permission, unknown tenant),
    Throttled (after the adapter's own waits ran out), RotationError (anything else).
    """

    def read(self, tenant_id: str, object_kind: ObjectKind, delta_link: str | None) -> AsyncIterator[InventoryPage]:
        """The pages of a full read (no delta link) or of the changes since `delta_link`; the last page carries
        the next delta link."""

    async def owners(self, tenant_id: str, object_kind: ObjectKind, object_id: str) -> tuple[str, ...]:
        """The owners of one application or service principal (users by principal name, service principals by
        display name), sorted; () when it has none or is gone."""

    async def owners_of(self, tenant_id: str, object_kind: ObjectKind, object_ids: Sequence[str]
                        ) -> dict[str, tuple[str, ...] | None]:
        """The owners of several objects in as few requests as Graph allows: object id -> owners (sorted), None
        where the answer may have cut them (read those with `owners`), () for one gone."""

    def owner_listing(self, tenant_id: str, object_kind: ObjectKind
                      ) -> AsyncIterator[dict[str, tuple[str, ...] | None]]:
        """Every object of the kind with its owners, page by page (for a full read): object id -> owners, or None
        when the listing may have cut them (read those with `owners`)."""

# --- Bulk onboarding (issue 23): Proofpoint's org list, and the state of onboarding runs ----------------------------


@dataclass(frozen=True)
class ProofpointOrg:
    """A customer org under the MSP's Proofpoint Essentials channel org (GET /orgs/{channel domain}/orgs)."""

    name: str
    primary_domain: str
    domains: tuple[str, ...] = ()
    stack: str = ""


class ProofpointOrgs(Protocol):
    """The orgs the MSP's Proofpoint account sees. Errors: Throttled, Unreachable (the account is refused),
    RotationError."""

    async def child_orgs(self) -> list[ProofpointOrg]:
        """Every customer org under the channel org."""
        ...


class OnboardingRuns(Protocol):
    """Bulk-onboarding runs: a run row and a row per tenant, each ETag-guarded. Never holds a token or a secret.

    Errors: NotFound (no such run or tenant), Conflict (the ETag no longer matches; the row exists already),
    RotationError (the store failed)."""

    async def create_run(self, run: Run) -> str:
        """Insert a run; its ETag."""
        ...

    async def get_run(self, run_id: str) -> tuple[Run, str]:
        """The run and its ETag."""
        ...

    async def replace_run(self, run: Run, etag: str) -> str:
        """Write the run if it still has `etag`; the new ETag."""
        ...

    async def list_runs(self, limit: int = 20, cursor: str | None = None) -> tuple[list[Run], str | None]:
        """A page of runs, newest first (by when each was made), after `cursor`; the next page's cursor (None on
        the last). Its cost is one page, whatever the history."""
        ...

    async def index_run(self, run_id: str, made_at: datetime) -> None:
        """Give the run its place in the list (create_run does too; idempotent): before its rows, so rows a crash
        left before the run's row are found by the prune."""
        ...

    async def old_runs(self, before: datetime) -> list[tuple[str, datetime]]:
        """(run id, when it was made) of every run made at or before `before`, oldest first."""
        ...

    async def delete_run(self, run_id: str, made_at: datetime, etag: str | None = None) -> int:
        """Delete the run: its row first (with `etag`, only as read: Conflict when a resume reopened it meanwhile,
        and nothing is deleted), then its tenants' rows, every start's rows, its place in the list; rows deleted.
        Succeeds when gone already."""
        ...

    async def delete_starts(self, run_id: str, keep: str) -> int:
        """Delete the tenant rows of the run's starts (bulk_onboarding.tenants_key) other than `keep`; rows
        deleted."""
        ...

    async def create_tenant(self, run_id: str, progress: TenantProgress) -> str:
        """Insert a tenant's row; its ETag. Conflict when it exists."""
        ...

    async def get_tenant(self, run_id: str, tenant_id: str) -> tuple[TenantProgress, str]:
        """One tenant's row and its ETag."""
        ...

    async def replace_tenant(self, run_id: str, progress: TenantProgress, etag: str) -> str:
        """Write a tenant's row if it still has `etag`; the new ETag."""
        ...

    async def tenants(self, run_id: str) -> list[tuple[TenantProgress, str]]:
        """Every tenant row of the run with its ETag."""
        ...


class PartnerSessions(Protocol):
    """Partner sessions kept between invocations (a web-started onboarding run): the session's refresh token in Key
    Vault under a name, never anywhere else. Errors: NotFound (no such session kept), RotationError."""

    async def keep(self, name: str, session: PartnerSession, expires_on: datetime) -> None:
        """Store what reopens the session (its refresh token) as the Key Vault secret `name` (replaced if there),
        expiring at `expires_on` (the secret's `exp`: not opened after it, and swept)."""
        ...

    async def open(self, name: str) -> PartnerSession:
        """The session kept under `name`; the caller closes it."""
        ...

    async def forget(self, name: str) -> None:
        """Delete the kept session; succeeds when it is gone already."""
        ...

    async def expired(self, now: datetime) -> list[str]:
        """The names of the kept sessions whose expiry has passed (or, written without one, older than a day)."""
        ...


# --- Offboarding (issue 23): what is kept of a customer that left ------------------------------------------------


class SecretRetention(Protocol):
    """The retention of an offboarded customer's stored secret versions (Key Vault): kept, tagged with the date
    after which they go, then deleted (soft-delete: recoverable for the vault's own retention)."""

    async def retain(self, target: Target, until: datetime) -> int:
        """Tag every stored version of the target's secret with `until`; how many versions were tagged."""
        ...

    async def due(self, now: datetime) -> list[str]:
        """Names of secrets whose latest version's retention has passed."""
        ...

    async def delete(self, name: str) -> bool:
        """Delete the secret (every version; soft-deleted); False when it was gone already."""
        ...


class WarningRules(Protocol):
    """Per customer warning thresholds and the exclusions and snoozes from warnings (who, why, until), kept apart
    from the inventory so a full re-read never loses them.

    Errors: NotFound (no such exclusion), RotationError (the store failed).
    """

    async def thresholds(self) -> dict[str, tuple[int, ...]]:
        """The thresholds each customer tenant chose (tenants not listed use the defaults)."""
        ...

    async def put_thresholds(self, tenant_id: str, days: tuple[int, ...], by: str, at: datetime) -> None: ...

    async def exclusions(self, tenant_id: str = "") -> list[Exclusion]:
        """Every exclusion and snooze (of one tenant when given), lapsed snoozes included, oldest first."""
        ...

    async def add_exclusion(self, exclusion: Exclusion) -> None: ...

    async def lift_exclusion(self, exclusion_id: str, by: str, at: datetime) -> Exclusion:
        """Lift an exclusion (kept, marked lifted by whom and when); NotFound when there is none of that id,
        Conflict (AlreadyLifted) when it was lifted before."""
        ...

    async def prune_exclusions(self, now: datetime, keep_lifted: timedelta) -> list[Exclusion]:
        """Remove the records that no longer apply: snoozes past their end (returned, for the audit log) and
        exclusions lifted more than `keep_lifted` ago (audited when lifted). An exclusion without an end stays."""
        ...


class WarningBook(Protocol):
    """The alert book's side the staged warnings use (shared.alerts.book.AlertBook)."""

    async def raise_alert(self, alert: Alert) -> None: ...

    async def settle_stages(self, tenant_id: str, app_id: str, holding: frozenset[Condition]) -> None: ...

    async def staged_apps(self, tenant_id: str) -> set[str]: ...

    async def staged_tenants(self) -> set[str]:
        """The tenants with staged warnings in the book (open or owing a note): a tenant whose registered targets
        are all gone is settled too, so no warning told stays open for ever."""
        ...
