"""In-memory fakes of the ports (cosmicpython style): the protocol's unit tests run on them in milliseconds and
assert on their state. The sandbox tests prove the real SDK paths; these prove the protocol's logic.

`Faults` injects an error before or after the work of any port call (`"secrets.promote"`, `"directory.add_password"`,
...), or a `Crash`: the process dies there as under SIGKILL (every later call of the dead process raises `Crash`
too, so not even its `finally` blocks reach a port).
"""

from __future__ import annotations

import asyncio
import secrets as random
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from shared import partner_roles
from shared.bulk_onboarding import Run, TenantProgress
from shared.change_control import ApprovalRequest
from shared.conditions import resolvable
from shared.domain import (
    Application,
    Credential,
    CredentialSignIns,
    DestinationConfig,
    Secret,
    SignInEvidence,
    Target,
    TokenRefusal,
    VersionStage,
)
from shared.errors import (
    AppNotFound,
    Conflict,
    NotFound,
    NotOwner,
    PartnerRefused,
    PolicyBlocked,
    PolicyLifetime,
    RotationError,
)
from shared.inventory import CredentialKind, InventoryCredential, InventoryQuery, ObjectKind, RoundEnd, StoredObject
from shared.ports import (
    Alert,
    Confirmation,
    Delivery,
    Event,
    GdapCustomer,
    Installed,
    InstallMethod,
    NewCredential,
    Ownership,
    PartnerAdmin,
    Principal,
    ProofpointOrg,
    ReportedSignIns,
    RotationRequest,
    StoredVersion,
)
from shared.protocol.context import EngineConfig
from shared.rotation import Engine
from shared.tickets.port import TicketDraft, TicketError, TicketRef, TicketRoute

# The calls that change something: a fault or crash "after" one strikes once the work is done.
WRITES = ("state.replace_target", "state.record", "directory.add_password", "directory.remove_password",
          "directory.remove_owner", "retention.retain", "retention.delete",
          "secrets.store_pending", "secrets.promote", "secrets.demote", "destination.")

START = datetime(2026, 11, 1, 6, 0, tzinfo=UTC)
# The rotator's own service principal in every fake tenant: who must own a target app to write it.
ROTATOR = Principal("5e1f0000-0000-4000-8000-000000000001", "c11e0000-0000-4000-8000-000000000001",
                    "Sync Secret Rotator")


class Crash(BaseException):
    """The rotating process died here (as SIGKILL): nothing after it runs, not even `finally` blocks' writes."""


@dataclass
class Rule:
    call: str
    when: str  # "before" (nothing done) | "after" (the work is done, the answer is lost)
    error: Callable[[], BaseException]
    nth: int  # the first matching call (1-based) it strikes
    times: int  # how many consecutive calls from there


@dataclass
class Hold:
    """A call kept waiting, as the sandbox's holds do: `reached` is set when it waits; set `released` to go on."""

    call: str
    when: str
    nth: int
    reached: asyncio.Event = field(default_factory=asyncio.Event)
    released: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class Faults:
    """Errors and crashes at chosen port calls; the log of every call made."""

    rules: list[Rule] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    log: list[str] = field(default_factory=list)
    dead: bool = False
    holds: list[Hold] = field(default_factory=list)

    def add(self, call: str, error: Callable[[], BaseException], *, when: str = "before", nth: int = 1,
            times: int = 1) -> None:
        self.rules.append(Rule(call, when, error, nth, times))

    def crash(self, call: str, *, when: str = "before", nth: int = 1) -> None:
        self.add(call, lambda: Crash(f"{when} {call} #{nth}"), when=when, nth=nth)

    def revive(self) -> None:
        """A new process: the dead one's crash rules are spent."""
        self.dead = False
        self.rules = [r for r in self.rules if not _crashes(r)]

    def hold(self, call: str, *, when: str = "before", nth: int = 1) -> Hold:
        """Make the nth call wait (before or after its work) until the test releases it."""
        hold = Hold(call, when, nth)
        self.holds.append(hold)
        return hold

    async def before(self, call: str) -> None:
        if self.dead:
            raise Crash("the process is dead")
        self.counts[call] += 1
        self.log.append(call)
        await self._wait(call, "before")
        self._strike(call, "before")

    async def after(self, call: str) -> None:
        await self._wait(call, "after")
        self._strike(call, "after")

    async def _wait(self, call: str, when: str) -> None:
        n = self.counts[call]  # this call's number: others of the same port may start while it is held
        for hold in self.holds:
            if hold.call == call and hold.when == when and hold.nth == n:
                hold.reached.set()
                await hold.released.wait()

    def _strike(self, call: str, when: str) -> None:
        n = self.counts[call]
        for rule in self.rules:
            if rule.call == call and rule.when == when and rule.nth <= n < rule.nth + rule.times:
                error = rule.error()
                if isinstance(error, Crash):
                    self.dead = True
                raise error


def _crashes(rule: Rule) -> bool:
    return isinstance(rule.error(), Crash)


@dataclass
class FakeClock:
    now_: datetime = START

    def now(self) -> datetime:
        return self.now_

    def advance(self, delta: timedelta) -> None:
        self.now_ += delta

    async def sleep(self, seconds: float) -> None:
        """The engine's sleep: time passes at once."""
        self.now_ += timedelta(seconds=seconds)


class FakeState:
    """The state store: one row per target with an ETag that changes on every write."""

    def __init__(self, faults: Faults) -> None:
        self.faults = faults
        self.rows: dict[tuple[str, str], tuple[Target, str]] = {}
        self.events_: list[Event] = []
        self.requests: dict[str, RotationRequest] = {}
        self.writes = 0
        self.watch: Callable[[], None] = lambda: None

    def target(self, tenant_id: str, app_id: str) -> Target:
        return self.rows[(tenant_id, app_id)][0]

    async def list_targets(self) -> list[tuple[Target, str]]:
        await self.faults.before("state.list_targets")
        return list(self.rows.values())

    async def get_target(self, tenant_id: str, app_id: str) -> tuple[Target, str]:
        await self.faults.before("state.get_target")
        row = self.rows.get((tenant_id, app_id))
        if row is None:
            raise NotFound(f"target {tenant_id}/{app_id} is not registered", code="TargetNotFound")
        await self.faults.after("state.get_target")
        return row

    async def create_target(self, target: Target) -> str:
        await self.faults.before("state.create_target")
        if (target.tenant_id, target.app_id) in self.rows:
            raise Conflict(f"target {target.key} is already registered", code="TargetExists")
        return self._write(target)

    async def replace_target(self, target: Target, etag: str) -> str:
        await self.faults.before("state.replace_target")
        row = self.rows.get((target.tenant_id, target.app_id))
        if row is None or row[1] != etag:
            raise Conflict(f"target {target.key} was changed by another writer", code="UpdateConditionNotSatisfied")
        new = self._write(target)
        await self.faults.after("state.replace_target")
        return new

    def _write(self, target: Target) -> str:
        self.writes += 1
        etag = f"W/{self.writes}"
        self.rows[(target.tenant_id, target.app_id)] = (target, etag)
        self.watch()
        return etag

    async def delete_target(self, tenant_id: str, app_id: str, etag: str | None = None) -> None:
        await self.faults.before("state.delete_target")
        row = self.rows.get((tenant_id, app_id))
        if row is None:
            raise NotFound(f"target {tenant_id}/{app_id} is not registered", code="TargetNotFound")
        if etag is not None and row[1] != etag:
            raise Conflict("changed by another writer", code="UpdateConditionNotSatisfied")
        del self.rows[(tenant_id, app_id)]

    async def record(self, event: Event) -> None:
        await self.faults.before("state.record")
        self.events_.append(event)
        await self.faults.after("state.record")

    async def events(self, tenant_id: str, app_id: str, limit: int = 50) -> list[Event]:
        await self.faults.before("state.events")
        mine = [e for e in self.events_ if (e.tenant_id, e.app_id) == (tenant_id, app_id)]
        return list(reversed(mine))[:limit]

    async def record_request(self, request: RotationRequest) -> None:
        await self.faults.before("state.record_request")
        self.requests[request.rotation_id] = request

    async def request(self, rotation_id: str) -> RotationRequest:
        found = self.requests.get(rotation_id)
        if found is None:
            raise NotFound(f"no rotation {rotation_id}", code="RotationNotFound")
        return found


@dataclass
class FakeCredential:
    credential: Credential
    secret: str
    working_from: datetime  # propagation: the secret gets a token only from this moment


class FakeDirectory:
    """Entra ID: apps by tenant, each with its password credentials and (unlike Graph) their values.

    As Graph with Application.ReadWrite.OwnedBy: every app is read, only apps the rotator owns are written (others
    answer NotOwner); a tenant's app-management policy may block password credentials on an app or cap their
    lifetime (PolicyBlocked / PolicyLifetime, nothing created).
    """

    def __init__(self, faults: Faults, clock: FakeClock) -> None:
        self.faults = faults
        self.clock = clock
        self.apps: dict[tuple[str, str], Application] = {}
        self.values: dict[str, FakeCredential] = {}
        self.removed: list[str] = []
        self.propagation = timedelta(0)
        self.watch: Callable[[], None] = lambda: None
        self.unowned: set[tuple[str, str]] = set()  # (tenant id, app id) the rotator does not own
        self.blocked: dict[tuple[str, str], str] = {}  # -> the policy's refusal message
        self.max_lifetime: dict[tuple[str, str], timedelta] = {}  # the policy's passwordLifetime

    def add_app(self, tenant_id: str, app_id: str, days_left: int | None) -> Application:
        app = Application(str(uuid.uuid4()), app_id, "Proofpoint Essentials", ())
        self.apps[(tenant_id, app_id)] = app
        if days_left is not None:
            self._add(tenant_id, app, "created by hand", self.clock.now() + timedelta(days=days_left),
                      start=self.clock.now() - timedelta(days=300))
        return self.apps[(tenant_id, app_id)]

    def app(self, tenant_id: str, app_id: str) -> Application:
        return self.apps[(tenant_id, app_id)]

    def live(self, tenant_id: str, app_id: str) -> list[Credential]:
        now = self.clock.now()
        return [c for c in self.app(tenant_id, app_id).credentials if not c.expired(now)]

    def _find(self, tenant_id: str, object_id: str) -> tuple[tuple[str, str], Application]:
        for key, app in self.apps.items():
            if key[0] == tenant_id and app.object_id == object_id:
                return key, app
        raise AppNotFound(f"no application {object_id} in tenant {tenant_id}", code="Request_ResourceNotFound")

    def _add(self, tenant_id: str, app: Application, display_name: str, end: datetime,
             start: datetime | None = None) -> NewCredential:
        value = random.token_urlsafe(30)
        # Graph's hint: the first three characters of the secret.
        credential = Credential(str(uuid.uuid4()), display_name, start or self.clock.now(), end, hint=value[:3])
        self.values[credential.key_id] = FakeCredential(credential, value, self.clock.now() + self.propagation)
        self.apps[(tenant_id, app.app_id)] = replace(app, credentials=(*app.credentials, credential))
        self.watch()
        return NewCredential(credential, Secret(value))

    async def get_application(self, tenant_id: str, app_id: str) -> Application:
        await self.faults.before("directory.get_application")
        app = self.apps.get((tenant_id, app_id))
        if app is None:
            raise AppNotFound(f"no app registration with appId {app_id} in tenant {tenant_id}", code="AppNotFound")
        return app

    def add_foreign(self, tenant_id: str, app_id: str, days_left: int) -> Credential:
        """A secret someone else made just now (the MSP portal's FIX, a person in the Entra portal)."""
        app = self.app(tenant_id, app_id)
        return self._add(tenant_id, app, "Vircom Portal FIX", self.clock.now() + timedelta(days=days_left)).credential

    async def ownership(self, tenant_id: str, app_id: str) -> Ownership:
        await self.faults.before("directory.ownership")
        key = (tenant_id, app_id)
        if key not in self.apps:
            raise AppNotFound(f"no app registration with appId {app_id} in tenant {tenant_id}", code="AppNotFound")
        return Ownership(key not in self.unowned, ROTATOR)

    async def add_password(self, tenant_id: str, object_id: str, display_name: str, end: datetime) -> NewCredential:
        await self.faults.before("directory.add_password")
        key, app = self._find(tenant_id, object_id)
        if key in self.unowned:
            raise NotOwner("Insufficient privileges to complete the operation.", code="NotOwner")
        if key in self.blocked:
            raise PolicyBlocked(self.blocked[key], code="CredentialTypeNotAllowedAsPerAppPolicy")
        cap = self.max_lifetime.get(key)
        if cap is not None and end - self.clock.now() > cap:
            raise PolicyLifetime(f"Credential lifetime exceeds the max value allowed as per assigned policy "
                                 f"({cap.days} days).", code="CredentialInvalidLifetimeAsPerAppPolicy")
        new = self._add(tenant_id, app, display_name, end)
        await self.faults.after("directory.add_password")
        return new

    async def remove_password(self, tenant_id: str, object_id: str, key_id: str) -> None:
        await self.faults.before("directory.remove_password")
        key, app = self._find(tenant_id, object_id)
        if key in self.unowned:
            raise NotOwner("Insufficient privileges to complete the operation.", code="NotOwner")
        if any(c.key_id == key_id for c in app.credentials):
            self.apps[key] = replace(app, credentials=tuple(c for c in app.credentials if c.key_id != key_id))
            self.removed.append(key_id)
            self.watch()
        await self.faults.after("directory.remove_password")

    async def find_applications(self, tenant_id: str, name_prefixes: Sequence[str]) -> list[Application]:
        await self.faults.before("directory.find_applications")
        return [a for (t, _), a in self.apps.items()
                if t == tenant_id and any(a.display_name.startswith(p) for p in name_prefixes)]

    async def remove_owner(self, tenant_id: str, object_id: str, principal_id: str) -> bool:
        """As Graph with OwnedBy: the rotator may remove itself from an app it owns; afterwards it owns it no more."""
        await self.faults.before("directory.remove_owner")
        key, _ = self._find(tenant_id, object_id)
        if principal_id != ROTATOR.object_id or key in self.unowned:
            return False
        self.unowned.add(key)
        await self.faults.after("directory.remove_owner")
        return True


INVALID_SECRET = TokenRefusal("AADSTS7000215", "AADSTS7000215: Invalid client secret provided.")


@dataclass(frozen=True)
class SignIn:
    """One service-principal sign-in as Entra's log records it (no secret: the credential's key id)."""

    tenant_id: str
    app_id: str
    key_id: str
    at: datetime
    ip: str = ""
    resource: str = "Microsoft Graph"
    correlation_id: str = ""  # the token request's client-request-id ("" : Entra makes one up)


class FakeSignInLog:
    """Entra's sign-in log: every token issued for a credential is recorded (the rotator's own probe too, as Entra
    does), visible `delay` after it happened; `refusal` (code, reason) answers a tenant that does not allow the read.
    Reading is the call "sign_ins.read" (read-only)."""

    def __init__(self, faults: Faults, clock: FakeClock) -> None:
        self.faults = faults
        self.clock = clock
        self.records: list[SignIn] = []
        self.delay = timedelta(0)
        self.refusal: tuple[str, str] | None = None
        self.reads: list[datetime] = []  # the `since` of every read
        # The credential activity report: the same sign-ins rolled up daily (a day's last sign-in, its midnight, once
        # the day is over and `delay` has passed), kept beyond the log's window; its own refusal (code) and reads.
        self.report_refusal: str | None = None
        self.report_reads = 0

    def sign_in(self, tenant_id: str, app_id: str, key_id: str, *, ip: str = "", at: datetime | None = None,
                resource: str = "Microsoft Graph", correlation_id: str = "") -> None:
        self.records.append(SignIn(tenant_id, app_id, key_id, at or self.clock.now(), ip, resource,
                                   correlation_id or str(uuid.uuid4())))

    async def credential_sign_ins(self, tenant_id: str, app_id: str, since: datetime,
                                  probes: frozenset[str] = frozenset()) -> SignInEvidence:
        await self.faults.before("sign_ins.read")
        now = self.clock.now()
        self.reads.append(since)
        if self.refusal is not None:
            return SignInEvidence(False, now, since, code=self.refusal[0], reason=self.refusal[1])
        seen: dict[str, CredentialSignIns] = {}
        for r in sorted(self.records, key=lambda r: r.at):
            if (r.tenant_id, r.app_id) != (tenant_id, app_id) or r.at < since or r.at > now - self.delay:
                continue
            had = seen.get(r.key_id) or CredentialSignIns(r.key_id, None, None)
            if r.correlation_id.lower() in probes:  # the rotator's own probe, by its request id
                seen[r.key_id] = replace(had, probe_sign_in=had.probe_sign_in or r.at)
                continue
            seen[r.key_id] = replace(had, first_sign_in=had.first_sign_in or r.at, last_sign_in=r.at,
                                     last_ip_address=r.ip or None, last_resource=r.resource or None)
        return SignInEvidence(True, now, since, seen)

    async def credential_report(self, tenant_id: str, app_id: str) -> ReportedSignIns:
        await self.faults.before("sign_ins.report")
        now = self.clock.now()
        self.report_reads += 1
        if self.report_refusal is not None:
            return ReportedSignIns(False, now, code=self.report_refusal)
        last: dict[str, datetime] = {}
        for r in self.records:
            day = r.at.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
            if (r.tenant_id, r.app_id) == (tenant_id, app_id) and day + timedelta(days=1) + self.delay <= now:
                last[r.key_id] = max(day, last.get(r.key_id, day))
        return ReportedSignIns(True, now, last)


class FakeProbe:
    """The token endpoint: a token for a live credential's value, once it has propagated; a refusal set in
    `refusals` (the app disabled, Conditional Access...) answers every request for that app first, as Entra does.
    A token issued is a sign-in in `log`, when one is given."""

    def __init__(self, faults: Faults, directory: FakeDirectory, log: FakeSignInLog | None = None) -> None:
        self.faults = faults
        self.directory = directory
        self.refusals: dict[tuple[str, str], TokenRefusal] = {}
        self.log = log
        self.request_ids: list[str] = []  # the request id of every token request, in order

    async def try_token(self, tenant_id: str, app_id: str, secret: Secret, request_id: str = "") -> TokenRefusal | None:
        await self.faults.before("probe.try_token")
        self.request_ids.append(request_id)
        refused = self.refusals.get((tenant_id, app_id))
        if refused is not None:
            return refused
        now = self.directory.clock.now()
        for c in self.directory.live(tenant_id, app_id):
            held = self.directory.values[c.key_id]
            if held.secret == secret.reveal():
                if now < held.working_from:
                    return INVALID_SECRET
                if self.log is not None:
                    self.log.sign_in(tenant_id, app_id, c.key_id, ip="198.51.100.1",  # the rotator's own address
                                     correlation_id=request_id)
                await self.faults.after("probe.try_token")  # issued (and logged), the answer not yet back
                return None
        return INVALID_SECRET


@dataclass
class FakeVersion:
    version: str
    value: str
    rotation_id: str
    key_id: str
    stage: VersionStage | None
    expires: datetime | None
    created: datetime
    author: str = ""

    def stored(self) -> StoredVersion:
        return StoredVersion(self.version, self.rotation_id, self.key_id, self.stage, self.expires, self.created,
                             author=self.author)


class FakeSecrets:
    """Key Vault: versions per secret name, oldest first, and named secrets."""

    def __init__(self, faults: Faults, clock: FakeClock) -> None:
        self.faults = faults
        self.clock = clock
        self.versions_: dict[str, list[FakeVersion]] = {}
        self.named: dict[str, str] = {}
        self.watch: Callable[[], None] = lambda: None

    def of(self, target: Target) -> list[FakeVersion]:
        return self.versions_.get(target.secret_name, [])

    def staged(self, target: Target, stage: VersionStage) -> list[FakeVersion]:
        return [v for v in self.of(target) if v.stage is stage]

    async def store_pending(self, target: Target, rotation_id: str, credential: Credential, secret: Secret) -> str:
        await self.faults.before("secrets.store_pending")
        version = uuid.uuid4().hex
        self.versions_.setdefault(target.secret_name, []).append(
            FakeVersion(version, secret.reveal(), rotation_id, credential.key_id, VersionStage.PENDING,
                        credential.end, self.clock.now())
        )
        self.watch()
        await self.faults.after("secrets.store_pending")
        return version

    async def find_by_rotation(self, target: Target, rotation_id: str) -> StoredVersion | None:
        await self.faults.before("secrets.find_by_rotation")
        found = [v for v in self.of(target) if v.rotation_id == rotation_id and v.key_id]
        return found[-1].stored() if found else None

    async def versions(self, target: Target) -> list[StoredVersion]:
        await self.faults.before("secrets.versions")
        return [v.stored() for v in self.of(target)]

    def write_by_hand(self, target: Target, value: str, *, author: str = "", expires: datetime | None = None) -> str:
        """A version a person wrote (the portal, `az keyvault secret set`): none of the rotator's tags."""
        version = uuid.uuid4().hex
        self.versions_.setdefault(target.secret_name, []).append(
            FakeVersion(version, value, "", "", None, expires, self.clock.now(), author))
        return version

    async def promote(self, target: Target, version: StoredVersion, key_id: str = "") -> None:
        await self.faults.before("secrets.promote")
        self._set(target, version.version, VersionStage.CURRENT)
        if key_id:
            next(v for v in self.of(target) if v.version == version.version).key_id = key_id
        await self.faults.after("secrets.promote")

    async def demote(self, target: Target, version: StoredVersion, stage: VersionStage) -> None:
        await self.faults.before("secrets.demote")
        assert stage in (VersionStage.PREVIOUS, VersionStage.RETIRED)
        self._set(target, version.version, stage)
        await self.faults.after("secrets.demote")

    def _set(self, target: Target, version: str, stage: VersionStage) -> None:
        for v in self.of(target):
            if v.version == version:
                v.stage = stage
                self.watch()
                return
        raise NotFound(f"{target.secret_name}/{version} does not exist", code="SecretNotFound")

    async def value(self, target: Target, version: str) -> Secret:
        await self.faults.before("secrets.value")
        for v in self.of(target):
            if v.version == version:
                return Secret(v.value)
        raise NotFound(f"{target.secret_name}/{version} does not exist", code="SecretNotFound")

    async def get_named(self, name: str) -> Secret:
        await self.faults.before("secrets.get_named")
        if name not in self.named:
            raise NotFound(f"{name} does not exist", code="SecretNotFound")
        return Secret(self.named[name])


class FakeDestination:
    """A destination that keeps what it was given, per destination name (Proofpoint, a portal).

    A name in `reports_sync` behaves like Proofpoint's settings: it reports its own last successful sync
    (`synced`, moved only by `FakeWorld.sync`, which signs in with the value held), and its read-back says so.
    Reading it is the call `"sync.<name>"` (read-only: not in WRITES).
    """

    def __init__(self, faults: Faults, kind: str = "fake") -> None:
        self.faults = faults
        self.kind = kind
        self.held: dict[str, str] = {}
        self.deliveries: list[tuple[str, str]] = []  # (destination name, key id)
        self.reports_sync: set[str] = set()
        self.synced: dict[str, datetime] = {}  # destination name -> its last successful sync

    async def deliver(self, config: DestinationConfig, delivery: Delivery) -> Confirmation | None:
        await self.faults.before(f"destination.{config.name}")
        self.held[config.name] = delivery.secret.reveal()
        self.deliveries.append((config.name, delivery.key_id))
        await self.faults.after(f"destination.{config.name}")
        if config.name not in self.reports_sync:
            return None
        return Confirmation(("read-back", "sync-reported"), sync_reported=True,
                            sync_seen=self.synced.get(config.name))

    async def last_sync(self, config: DestinationConfig) -> datetime | None:
        await self.faults.before(f"sync.{config.name}")
        await self.faults.after(f"sync.{config.name}")
        return self.synced.get(config.name) if config.name in self.reports_sync else None


class FakeAlerter:
    """Keeps every alert raised, the conditions open per target, and those resolved (the alert book's contract
    without its daily claim)."""

    def __init__(self) -> None:
        self.raised: list[Alert] = []
        self.open: dict[tuple[str, str], set[tuple[str, str]]] = {}
        self.resolved: list[tuple[str, str, str, str]] = []
        self.redelivered = 0  # passes that swept the book for refused posts

    async def raise_alert(self, alert: Alert) -> None:
        self.raised.append(alert)
        if resolvable(alert.condition):
            key = (alert.tenant_id, alert.app_id)
            self.open.setdefault(key, set()).add((alert.condition, alert.details.get("destination", "")))

    async def settle(self, tenant_id: str, app_id: str, holding: frozenset[tuple[str, str]]) -> None:
        still = self.open.get((tenant_id, app_id), set())
        for condition, destination in sorted(still - holding):
            self.resolved.append((tenant_id, app_id, condition, destination))
        self.open[(tenant_id, app_id)] = still & holding

    async def redeliver(self) -> None:
        self.redelivered += 1

    def resolved_conditions(self) -> list[str]:
        return [condition for _, _, condition, _ in self.resolved]

    def conditions(self) -> list[str]:
        return [a.condition for a in self.raised]


class FakeApprovals:
    """The approvals book: one request per target with an ETag that changes on every write; the used links."""

    def __init__(self, faults: Faults) -> None:
        self.faults = faults
        self.rows: dict[tuple[str, str], tuple[ApprovalRequest, str]] = {}
        self.links: set[str] = set()
        self.writes = 0

    async def get(self, tenant_id: str, app_id: str) -> tuple[ApprovalRequest, str] | None:
        await self.faults.before("approvals.get")
        return self.rows.get((tenant_id, app_id))

    async def put(self, request: ApprovalRequest, etag: str | None) -> str:
        await self.faults.before("approvals.put")
        held = self.rows.get((request.tenant_id, request.app_id))
        if (held is None) != (etag is None) or (held is not None and held[1] != etag):
            raise Conflict("the approval was changed by another writer", code="ApprovalChanged")
        self.writes += 1
        self.rows[(request.tenant_id, request.app_id)] = (request, f"A/{self.writes}")
        await self.faults.after("approvals.put")
        return f"A/{self.writes}"

    async def remove(self, tenant_id: str, app_id: str, etag: str) -> None:
        await self.faults.before("approvals.remove")
        held = self.rows.get((tenant_id, app_id))
        if held is None:
            return
        if held[1] != etag:
            raise Conflict("the approval was changed by another writer", code="ApprovalChanged")
        del self.rows[(tenant_id, app_id)]
        await self.faults.after("approvals.remove")

    async def list_requests(self) -> list[ApprovalRequest]:
        await self.faults.before("approvals.list_requests")
        return [r for r, _ in self.rows.values()]

    async def use_link(self, nonce: str, expires: datetime) -> None:
        if nonce in self.links:
            raise Conflict("this approval link was used already", code="LinkUsed")
        self.links.add(nonce)

    def request(self, target: Target) -> ApprovalRequest | None:
        held = self.rows.get((target.tenant_id, target.app_id))
        return held[0] if held else None


def rotation_error(code: str = "InternalServerError") -> Callable[[], RotationError]:
    return lambda: RotationError(f"the service failed ({code})", code=code)


class FakeWorld:
    """Every port faked, sharing one clock and one set of faults; watches the invariants at every write."""

    def __init__(self, *, evidence: bool = False, **config: object) -> None:
        self.faults = Faults()
        self.clock = FakeClock()
        self.state = FakeState(self.faults)
        self.directory = FakeDirectory(self.faults, self.clock)
        self.secrets = FakeSecrets(self.faults, self.clock)
        self.sign_ins = FakeSignInLog(self.faults, self.clock)  # records every sign-in; read only with `evidence`
        self.evidence = evidence
        self.probe = FakeProbe(self.faults, self.directory, self.sign_ins)
        self.destination = FakeDestination(self.faults)
        self.alerter = FakeAlerter()
        self.approvals = FakeApprovals(self.faults)
        self.config = EngineConfig(**config)  # type: ignore[arg-type]
        self.violations: list[str] = []
        self.secrets.watch = self._watch
        self.directory.watch = self._watch

    def engine(self) -> Engine:
        """A rotator process (a new lease owner each time)."""
        return Engine(state=self.state, directory=self.directory, secrets=self.secrets, probe=self.probe,
                      destinations={"fake": self.destination}, alerter=self.alerter, clock=self.clock,
                      config=self.config, sleep=self.clock.sleep, sign_ins=self.sign_ins if self.evidence else None,
                      approvals=self.approvals)

    def restart(self) -> Engine:
        """After a crash: a new process, once the dead one's lease has run out."""
        self.faults.revive()
        self.clock.advance(self.config.lease + timedelta(seconds=1))
        return self.engine()

    def seed(self, days_left: int | None = 10, destinations: Sequence[str] = ("proofpoint", "portal")) -> Target:
        """A registered customer whose app has one hand-made secret, which every destination holds."""
        tenant_id, app_id = str(uuid.uuid4()), str(uuid.uuid4())
        self.directory.add_app(tenant_id, app_id, days_left)
        target = Target(tenant_id, app_id, "Contoso",
                        destinations=tuple(DestinationConfig(n, "fake") for n in destinations))
        self.state._write(target)
        for credential in self.directory.app(tenant_id, app_id).credentials:
            for name in destinations:
                self.destination.held[name] = self.directory.values[credential.key_id].secret
        return target

    def sync(self, target: Target, name: str, ip: str = "203.0.113.10") -> bool:
        """The destination's own scheduled sync, now: it signs in with the value it holds (a sign-in in Entra's log,
        from `ip`); True when that worked."""
        held = self.destination.held.get(name)
        key_id = next((k for k, v in self.live_values(target).items() if v == held), None)
        if key_id is None:
            return False
        self.destination.synced[name] = self.clock.now()
        self.sign_ins.sign_in(target.tenant_id, target.app_id, key_id, ip=ip)
        return True

    def row(self, target: Target) -> Target:
        return self.state.target(target.tenant_id, target.app_id)

    def live_values(self, target: Target) -> dict[str, str]:
        """key id -> value of every live credential of the target's app."""
        return {c.key_id: self.directory.values[c.key_id].secret
                for c in self.directory.live(target.tenant_id, target.app_id)}

    def _watch(self) -> None:
        """The invariants that hold at every instant, checked after every write to Key Vault or Entra ID."""
        for (tenant_id, app_id), _ in self.directory.apps.items():
            row = self.state.rows.get((tenant_id, app_id))
            if row is None:
                continue  # being seeded
            target = row[0]
            live = self.live_values(target)
            versions = self.secrets.of(target)
            if any(v.stage is not VersionStage.PENDING for v in versions) and not any(
                v.stage is VersionStage.CURRENT for v in versions
            ):
                self.violations.append(f"no current version ({[v.stage for v in versions]})")
            for v in versions:
                if v.stage is VersionStage.RETIRED and v.key_id in live:
                    self.violations.append(f"version of live credential {v.key_id} tagged retired")
            for name, value in self.destination.held.items():
                if target.destinations and value not in live.values():
                    self.violations.append(f"{name} uses a credential that was removed")

    def converged(self, target: Target) -> list[str]:
        """What is wrong once the rotation is done (empty: all invariants hold)."""
        problems = list(self.violations)
        row = self.row(target)
        live = self.live_values(target)
        versions = self.secrets.of(target)
        stored = {v.key_id: v.value for v in versions}
        for c in self.directory.live(target.tenant_id, target.app_id):
            if c.rotation_id and stored.get(c.key_id) != live[c.key_id]:
                problems.append(f"live rotator credential {c.key_id} has no value in Key Vault")
        current = [v for v in versions if v.stage is VersionStage.CURRENT]
        if len(current) != 1:
            problems.append(f"{len(current)} current versions")
        else:
            if current[0].key_id not in live or live[current[0].key_id] != current[0].value:
                problems.append("the current version is not a live credential's value")
            if row.state.current_version != current[0].version:
                problems.append("the row's current version is not Key Vault's current")
            for d in row.destinations:
                if self.destination.held.get(d.name) != current[0].value:
                    problems.append(f"{d.name} does not hold the current value")
        for v in versions:
            if v.stage is VersionStage.RETIRED and v.key_id in live:
                problems.append(f"version of live credential {v.key_id} tagged retired")
        for v in versions:
            # Tags follow what Entra ID holds: a version whose credential is gone (or expired) is `retired`.
            if v.stage is not VersionStage.RETIRED and v.key_id not in live:
                problems.append(f"dead version {v.version} of gone credential {v.key_id} tagged {v.stage}")
        values = [v.value for v in versions]
        if len(values) != len(set(values)):
            problems.append("one value stored in two Key Vault versions")
        if row.state.stage.value != "idle":
            problems.append(f"stage {row.state.stage.value}")
        made = [c for c in self.directory.live(target.tenant_id, target.app_id) if c.rotation_id]
        unused = [c for c in made if c.key_id not in (row.state.current_key_id, *row.state.superseded)]
        if unused:
            problems.append(f"{len(unused)} live rotator credential(s) neither current nor superseded")
        return problems


class FakeInventory:
    """The inventory store: rows by (tenant, object kind, object id, key id), delta links by (tenant, kind)."""

    def __init__(self, faults: Faults | None = None) -> None:
        self.faults = faults or Faults()
        self.rows: dict[tuple[str, str, str, str], InventoryCredential] = {}
        self.links: dict[tuple[str, str], str] = {}
        self.listed: dict[tuple[str, str], dict[str, tuple[str, ...]]] = {}  # a kind's last listing, objects w/o rows
        self.writes = 0

    async def list_credentials(self, query: InventoryQuery | None = None) -> list[InventoryCredential]:
        await self.faults.before("inventory.list_credentials")
        wanted = query or InventoryQuery()
        return [self.rows[key] for key in sorted(self.rows) if wanted.matches(self.rows[key])]

    async def stream(self, tenant_id: str = "") -> AsyncIterator[InventoryCredential]:
        for key in sorted(self.rows):
            if not tenant_id or key[0] == tenant_id:
                yield self.rows[key]

    async def objects_credentials(self, tenant_id: str, object_kind: ObjectKind, object_ids: Sequence[str]
                                  ) -> dict[str, list[InventoryCredential]]:
        await self.faults.before("inventory.objects_credentials")
        found: dict[str, list[InventoryCredential]] = {}
        for key, row in sorted(self.rows.items()):
            if key[:2] == (tenant_id, object_kind.value) and key[2] in object_ids:
                found.setdefault(key[2], []).append(row)
        return found

    async def objects_known(self, tenant_id: str, object_kind: ObjectKind, object_ids: Sequence[str]
                            ) -> dict[str, StoredObject | None]:
        await self.faults.before("inventory.objects_known")
        rows: dict[str, list[InventoryCredential]] = {}
        for key, row in sorted(self.rows.items()):
            if key[:2] == (tenant_id, object_kind.value) and key[2] in object_ids:
                rows.setdefault(key[2], []).append(row)
        known: dict[str, StoredObject | None] = {}
        for object_id, mine in rows.items():
            first = mine[0]
            keys = {kind: frozenset(r.key_id for r in mine if r.credential_kind is kind) for kind in CredentialKind}
            known[object_id] = StoredObject(first.app_id, first.display_name, first.customer, first.first_party,
                                            first.managed, keys[CredentialKind.PASSWORD],
                                            keys[CredentialKind.CERTIFICATE],
                                            frozenset(r.key_id for r in mine if r.saml), first.owners)
        return known

    async def put_objects(self, tenant_id: str, object_kind: ObjectKind,
                          objects: Mapping[str, Sequence[InventoryCredential]], *,
                          stored: Mapping[str, Sequence[str]] | None = None, delta_link: str | None = None) -> None:
        await self.faults.before("inventory.put_objects")
        self._put(tenant_id, object_kind, objects, stored)
        if delta_link is not None:
            self.links[(tenant_id, object_kind.value)] = delta_link
        self.writes += 1
        await self.faults.after("inventory.put_objects")

    async def put_rounds(self, tenant_id: str, ends: Mapping[ObjectKind, RoundEnd]) -> None:
        await self.faults.before("inventory.put_rounds")
        for kind, end in ends.items():
            self._put(tenant_id, kind, end.objects, end.stored)
            if end.delta_link is not None:
                self.links[(tenant_id, kind.value)] = end.delta_link
            if end.listed is not None:
                held = await self.object_ids(tenant_id, kind)
                self.listed[(tenant_id, kind.value)] = {o: owners for o, owners in end.listed.items() if o not in held}
        if any(end.objects for end in ends.values()):  # `writes` counts writes of rows (a link alone is not one)
            self.writes += 1
        await self.faults.after("inventory.put_rounds")

    async def remove_objects(self, tenant_id: str, object_kind: ObjectKind, object_ids: Sequence[str]) -> None:
        await self.faults.before("inventory.remove_objects")
        for object_id in object_ids:
            self._drop(tenant_id, object_kind, object_id)
        self.writes += 1

    def _put(self, tenant_id: str, kind: ObjectKind, objects: Mapping[str, Sequence[InventoryCredential]],
             stored: Mapping[str, Sequence[str]] | None) -> None:
        for object_id, credentials in objects.items():
            if stored is not None and object_id in stored:  # only the named rows are replaced, the others kept
                for key_id in stored[object_id]:
                    self.rows.pop((tenant_id, kind.value, object_id, key_id), None)
            else:
                self._drop(tenant_id, kind, object_id)
            for credential in credentials:
                self.rows[credential.key] = credential

    def _drop(self, tenant_id: str, object_kind: ObjectKind, object_id: str) -> None:
        for key in [k for k in self.rows if k[:3] == (tenant_id, object_kind.value, object_id)]:
            del self.rows[key]

    async def object_ids(self, tenant_id: str, object_kind: ObjectKind) -> set[str]:
        return {k[2] for k in self.rows if k[:2] == (tenant_id, object_kind.value)}

    async def owners_listed(self, tenant_id: str, object_kind: ObjectKind, object_ids: Sequence[str]
                            ) -> dict[str, tuple[str, ...]]:
        await self.faults.before("inventory.owners_listed")
        listed = self.listed.get((tenant_id, object_kind.value), {})
        return {o: listed[o] for o in object_ids if o in listed}

    async def delta_links(self, tenant_id: str) -> dict[ObjectKind, str]:
        return {ObjectKind(k[1]): link for k, link in self.links.items() if k[0] == tenant_id}

    async def save_delta_links(self, tenant_id: str, links: Mapping[ObjectKind, str | None]) -> None:
        await self.faults.before("inventory.save_delta_links")
        for kind, link in links.items():
            if link is None:
                self.links.pop((tenant_id, kind.value), None)
            else:
                self.links[(tenant_id, kind.value)] = link

    async def remove_tenant(self, tenant_id: str) -> None:
        for key in [k for k in self.rows if k[0] == tenant_id]:
            del self.rows[key]
        for link in [k for k in self.links if k[0] == tenant_id]:
            del self.links[link]
        for kind in [k for k in self.listed if k[0] == tenant_id]:
            del self.listed[kind]

# --- Bulk onboarding (issue 23): the partner admin's delegated session, Proofpoint's org list, the run state -------

PARTNER_TENANT = "5a1d0000-0000-4000-8000-000000000001"
PARTNER_ADMIN = PartnerAdmin(PARTNER_TENANT, "5a1d0000-0000-4000-8000-000000000040", "partner-admin@msp.example",
                             "Partner Admin")
# What the services themselves demand of the signed-in admin's roles (Graph's and Entra's documented roles per call,
# modelled here independently of the engine's own table): creating a service principal and adding an owner need an
# application administrator; granting one of Microsoft Graph's application permissions needs Privileged Role
# Administrator; Global Administrator may do everything.
_APP_ADMINS = {partner_roles.APPLICATION_ADMINISTRATOR, partner_roles.CLOUD_APPLICATION_ADMINISTRATOR,
               partner_roles.GLOBAL_ADMINISTRATOR}
_GRANTERS = {partner_roles.PRIVILEGED_ROLE_ADMINISTRATOR, partner_roles.GLOBAL_ADMINISTRATOR}
ALL_ROLES = frozenset({partner_roles.CLOUD_APPLICATION_ADMINISTRATOR, partner_roles.PRIVILEGED_ROLE_ADMINISTRATOR})


@dataclass
class FakeCustomerTenant:
    customer: GdapCustomer
    domains: list[str]
    service_principal: str = ""
    granted: set[str] = field(default_factory=set)
    owners: dict[str, set[str]] = field(default_factory=dict)  # application object id -> owner principal ids


class FakePartnerSession:
    """A partner admin's delegated GDAP session: customers, their domains, the MSP app's install, owners.

    Each call refuses as the service does when the admin's roles in the tenant lack what it needs (PartnerRefused
    with the role), and is idempotent (it says when what it asks was there already). `refresh_token` stands for the
    token the real session holds: it must never reach a log, a row or a response."""

    def __init__(self, faults: Faults, directory: FakeDirectory | None = None) -> None:
        self.faults = faults
        self.directory = directory
        self.admin = PARTNER_ADMIN
        self.tenants: dict[str, FakeCustomerTenant] = {}
        self.closed = False
        self.refresh_token = Secret("0.AXoA" + random.token_urlsafe(60))

    def add_customer(self, name: str, roles: frozenset[str] = ALL_ROLES, domains: Sequence[str] = (),
                     tenant_id: str = "") -> FakeCustomerTenant:
        tenant_id = tenant_id or str(uuid.uuid4())
        customer = GdapCustomer(tenant_id, name, (str(uuid.uuid4()),), roles)
        domain = name.lower().replace(" ", "") + ".example"
        self.tenants[tenant_id] = FakeCustomerTenant(customer, list(domains) or [domain])
        return self.tenants[tenant_id]

    def _tenant(self, tenant_id: str) -> FakeCustomerTenant:
        tenant = self.tenants.get(tenant_id)
        if tenant is None:
            raise PartnerRefused(f"no active GDAP relationship with {tenant_id}", code="Authorization_RequestDenied",
                                 fix="renew the relationship")
        return tenant

    @staticmethod
    def _needs(tenant: FakeCustomerTenant, roles: set[str], what: str) -> None:
        if not roles & tenant.customer.roles:
            raise PartnerRefused(f"Insufficient privileges to complete the operation ({what}).",
                                 code="Authorization_RequestDenied", fix=f"a role that may {what}")

    async def customers(self) -> list[GdapCustomer]:
        await self.faults.before("partner.customers")
        return [t.customer for t in self.tenants.values()]

    async def domains(self, tenant_id: str) -> list[str]:
        await self.faults.before("partner.domains")
        return list(self._tenant(tenant_id).domains)

    async def install_app(self, tenant_id: str, graph_roles: Sequence[str], method: InstallMethod) -> Installed:
        await self.faults.before("partner.install_app")
        tenant = self._tenant(tenant_id)
        self._needs(tenant, _APP_ADMINS, "create service principals")
        created = not tenant.service_principal
        missing = [r for r in graph_roles if r not in tenant.granted]
        if missing:
            self._needs(tenant, _GRANTERS, "grant Microsoft Graph application permissions")
        if created:
            tenant.service_principal = ROTATOR.object_id
        tenant.granted.update(missing)
        await self.faults.after("partner.install_app")
        return Installed(tenant.service_principal, created, tuple(missing))

    async def add_owner(self, tenant_id: str, application_object_id: str, principal_id: str) -> bool:
        await self.faults.before("partner.add_owner")
        tenant = self._tenant(tenant_id)
        self._needs(tenant, _APP_ADMINS, "manage application owners")
        owners = tenant.owners.setdefault(application_object_id, set())
        added = principal_id not in owners
        owners.add(principal_id)
        if self.directory is not None:
            key, _ = self.directory._find(tenant_id, application_object_id)
            self.directory.unowned.discard(key)
        await self.faults.after("partner.add_owner")
        return added

    async def remove_owner(self, tenant_id: str, application_object_id: str, principal_id: str) -> bool:
        await self.faults.before("partner.remove_owner")
        owners = self._tenant(tenant_id).owners.get(application_object_id, set())
        present = principal_id in owners
        owners.discard(principal_id)
        return present

    async def remove_app(self, tenant_id: str) -> bool:
        await self.faults.before("partner.remove_app")
        tenant = self._tenant(tenant_id)
        present = bool(tenant.service_principal)
        tenant.service_principal, tenant.granted = "", set()
        return present

    async def close(self) -> None:
        self.closed = True


class FakeProofpointOrgs:
    """Proofpoint's child orgs of the MSP's channel org."""

    def __init__(self, faults: Faults) -> None:
        self.faults = faults
        self.orgs: list[ProofpointOrg] = []

    async def child_orgs(self) -> list[ProofpointOrg]:
        await self.faults.before("proofpoint.child_orgs")
        return list(self.orgs)


class FakeRuns:
    """The onboarding run state: a run row and a row per tenant, each with an ETag changed by every write."""

    def __init__(self, faults: Faults) -> None:
        self.faults = faults
        self.runs_: dict[str, tuple[Run, str]] = {}
        self.rows: dict[tuple[str, str], tuple[TenantProgress, str]] = {}
        self.made: dict[str, datetime] = {}  # the run list's index: when each run was made
        self.writes = 0

    def _etag(self) -> str:
        self.writes += 1
        return f"W/{self.writes}"

    async def create_run(self, run: Run) -> str:
        await self.faults.before("runs.create_run")
        if run.run_id in self.runs_:
            raise Conflict("run exists", code="RunExists")
        etag = self._etag()
        self.made.setdefault(run.run_id, run.started_at)
        self.runs_[run.run_id] = (run, etag)
        return etag

    async def get_run(self, run_id: str) -> tuple[Run, str]:
        await self.faults.before("runs.get_run")
        if run_id not in self.runs_:
            raise NotFound(f"no onboarding run {run_id}", code="RunNotFound")
        return self.runs_[run_id]

    async def replace_run(self, run: Run, etag: str) -> str:
        await self.faults.before("runs.replace_run")
        if self.runs_[run.run_id][1] != etag:
            raise Conflict("run changed", code="UpdateConditionNotSatisfied")
        new = self._etag()
        self.runs_[run.run_id] = (run, new)
        await self.faults.after("runs.replace_run")
        return new

    @staticmethod
    def _key(run_id: str, made: datetime) -> str:
        return f"{10**15 - int(made.timestamp() * 1000):015d}.{run_id}"  # newest first, as the Tables index

    async def list_runs(self, limit: int = 20, cursor: str | None = None) -> tuple[list[Run], str | None]:
        keys = sorted(k for k in (self._key(r, m) for r, m in self.made.items()) if k > (cursor or ""))
        page = keys[:limit]
        runs = [self.runs_[k.split(".")[1]][0] for k in page if k.split(".")[1] in self.runs_]
        return runs, (page[-1] if len(keys) > limit else None)

    async def index_run(self, run_id: str, made_at: datetime) -> None:
        self.made.setdefault(run_id, made_at)

    async def old_runs(self, before: datetime) -> list[tuple[str, datetime]]:
        return sorted(((r, m) for r, m in self.made.items() if m <= before), key=lambda rm: rm[1])

    async def delete_run(self, run_id: str, made_at: datetime, etag: str | None = None) -> int:
        if etag is not None and run_id in self.runs_ and self.runs_[run_id][1] != etag:
            raise Conflict("run changed", code="UpdateConditionNotSatisfied")  # reopened by a resume: nothing deleted
        deleted = await self.delete_starts(run_id, keep="")
        deleted += len([k for k in self.rows if k[0] == run_id]) + (run_id in self.runs_)
        self.rows = {k: v for k, v in self.rows.items() if k[0] != run_id}
        self.runs_.pop(run_id, None)
        self.made.pop(run_id, None)
        return deleted

    async def delete_starts(self, run_id: str, keep: str) -> int:
        gone = [k for k in self.rows if k[0].startswith(f"{run_id}.") and k[0] != keep]
        for k in gone:
            del self.rows[k]
        return len(gone)

    async def create_tenant(self, run_id: str, progress: TenantProgress) -> str:
        await self.faults.before("runs.create_tenant")
        key = (run_id, progress.tenant_id)
        if key in self.rows:
            raise Conflict("tenant row exists", code="EntityAlreadyExists")
        etag = self._etag()
        self.rows[key] = (progress, etag)
        return etag

    async def get_tenant(self, run_id: str, tenant_id: str) -> tuple[TenantProgress, str]:
        await self.faults.before("runs.get_tenant")
        if (run_id, tenant_id) not in self.rows:
            raise NotFound(f"no tenant {tenant_id} in run {run_id}", code="TenantNotInRun")
        return self.rows[(run_id, tenant_id)]

    async def replace_tenant(self, run_id: str, progress: TenantProgress, etag: str) -> str:
        await self.faults.before("runs.replace_tenant")
        key = (run_id, progress.tenant_id)
        if self.rows[key][1] != etag:
            raise Conflict("tenant row changed", code="UpdateConditionNotSatisfied")
        new = self._etag()
        self.rows[key] = (progress, new)
        await self.faults.after("runs.replace_tenant")
        return new

    async def tenants(self, run_id: str) -> list[tuple[TenantProgress, str]]:
        await self.faults.before("runs.tenants")
        return [row for (r, _), row in self.rows.items() if r == run_id]


class FakePartnerSessions:
    """Partner sessions kept by name, as the delegated adapter keeps their refresh tokens in Key Vault: `vault`
    holds what would be stored (the token), by secret name."""

    def __init__(self) -> None:
        self.vault: dict[str, Secret] = {}
        self.sessions: dict[str, FakePartnerSession] = {}
        self.expires: dict[str, datetime] = {}
        self.opened = 0

    async def keep(self, name: str, session: FakePartnerSession,  # type: ignore[override]
                   expires_on: datetime) -> None:
        self.vault[name] = session.refresh_token
        self.sessions[name] = session
        self.expires[name] = expires_on

    async def expired(self, now: datetime) -> list[str]:
        return [n for n in self.vault if self.expires[n] <= now]

    async def open(self, name: str) -> FakePartnerSession:
        if name not in self.vault:
            raise NotFound(f"no partner session kept as {name}", code="PartnerSessionNotFound")
        self.opened += 1
        return self.sessions[name]

    async def forget(self, name: str) -> None:
        self.vault.pop(name, None)
        self.sessions.pop(name, None)
        self.expires.pop(name, None)


class FakeRetention:
    """Key Vault's retention of an offboarded target's versions: `until` per secret name (its latest version's tag);
    deleted names move to `deleted` (soft-deleted)."""

    def __init__(self, faults: Faults, secrets: FakeSecrets) -> None:
        self.faults = faults
        self.secrets = secrets
        self.until: dict[str, datetime] = {}
        self.deleted: list[str] = []

    async def retain(self, target: Target, until: datetime) -> int:
        await self.faults.before("retention.retain")
        versions = self.secrets.of(target)
        if versions:
            self.until[target.secret_name] = until
        await self.faults.after("retention.retain")
        return len(versions)

    async def due(self, now: datetime) -> list[str]:
        return sorted(n for n, until in self.until.items() if until <= now and n not in self.deleted)

    async def delete(self, name: str) -> bool:
        await self.faults.before("retention.delete")
        if name in self.deleted or name not in self.until:
            return False
        self.deleted.append(name)
        await self.faults.after("retention.delete")
        return True


@dataclass
class FakeTicket:
    """One ticket as the fake PSA holds it."""

    id: str
    key: str
    title: str
    body: str
    route: TicketRoute
    notes: list[str] = field(default_factory=list)
    status: str = "New"
    closed: bool = False


class FakeDesk:
    """A PSA (the TicketDesk port) in memory: tickets by id, each with its notes and status. `faults` makes any call
    (`desk.find_open`, `desk.open`, `desk.add_note`, `desk.close`, `desk.check`) fail or crash before or after its
    work, as the other fakes do; `down(n)` answers TicketSystemUnreachable to the next n calls, then recovers."""

    kind = "fake"

    def __init__(self, faults: Faults | None = None) -> None:
        self.faults = faults or Faults()
        self.tickets: dict[str, FakeTicket] = {}
        self._down = 0
        self.refused_while_down = 0

    def down(self, calls: int, code: str = "TicketSystemUnreachable") -> None:
        self._down = calls
        self._down_code = code

    async def _call(self, name: str) -> None:
        await self.faults.before(f"desk.{name}")
        if self._down > 0:
            self._down -= 1
            self.refused_while_down += 1
            raise TicketError("the PSA is unreachable: ClientConnectorError", code=self._down_code,
                              retry_after=30 if self._down_code == "TicketThrottled" else None)

    async def find_open(self, draft: TicketDraft) -> TicketRef | None:
        await self._call("find_open")
        found = next((t for t in self.tickets.values() if t.key == draft.key and not t.closed), None)
        await self.faults.after("desk.find_open")
        return TicketRef(found.id, f"T{found.id}", f"https://psa.example/tickets/{found.id}") if found else None

    async def open(self, draft: TicketDraft) -> TicketRef:
        await self._call("open")
        number = str(1000 + len(self.tickets))
        self.tickets[number] = FakeTicket(number, draft.key, draft.title, draft.body, draft.route,
                                          status=draft.route.status or "New")
        await self.faults.after("desk.open")
        return TicketRef(number, f"T{number}", f"https://psa.example/tickets/{number}")

    async def add_note(self, ticket: TicketRef, text: str) -> None:
        await self._call("add_note")
        if ticket.id not in self.tickets:
            raise TicketError(f"ticket {ticket.id} not found", code="TicketNotFound", status=404)
        self.tickets[ticket.id].notes.append(text)
        await self.faults.after("desk.add_note")

    async def close(self, ticket: TicketRef, text: str, route: TicketRoute) -> None:
        await self._call("close")
        if ticket.id not in self.tickets:
            raise TicketError(f"ticket {ticket.id} not found", code="TicketNotFound", status=404)
        t = self.tickets[ticket.id]
        t.notes.append(text)
        t.closed, t.status = True, route.closed_status or "Closed"
        await self.faults.after("desk.close")

    async def check(self, route: TicketRoute) -> None:
        await self._call("check")

    def open_for(self, key: str) -> list[FakeTicket]:
        return [t for t in self.tickets.values() if t.key == key and not t.closed]

    def of(self, key: str) -> list[FakeTicket]:
        return [t for t in self.tickets.values() if t.key == key]
