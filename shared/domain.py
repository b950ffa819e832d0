"""The domain: targets, credentials, rotation state, and the pure decisions over them.

Nothing here does I/O; every function takes plain data (and the time) and returns plain data.
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

from shared.change_control import ChangeControl

MAX_LIFETIME_DAYS = 730
# When a tenant's app-management policy refuses a lifetime, shorter ones are tried in this order...
LIFETIME_STEPS = (365, 180, 90, 60, 30, 14, 7)
# ...but never one that would leave less than this many days between a rotation and the next one being due.
LIFETIME_MARGIN_DAYS = 7
ROTATOR_MARK = "sync-secret-rotator"
# \A and \Z, not ^ and $: `$` also matches before a trailing newline, which let "<guid>\n" through.
GUID = re.compile(r"\A[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z")
ROTATION_ID = re.compile(r"\A[0-9a-fA-F]{32}\Z")  # what new_rotation_id makes: uuid4().hex
_ROTATION_IN_NAME = re.compile(r"\brotation ([0-9a-f]{32})\b")


class Secret:
    """A secret value that refuses to show itself in repr, str, logs or exceptions."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The value itself: only for the one call that must send or store it."""
        return self._value

    def __repr__(self) -> str:
        return "Secret(***)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class AssessmentStatus(str, Enum):
    """What a scan concludes about one target's sync secret."""

    HEALTHY = "healthy"
    DUE = "due"
    EXPIRED = "expired"
    MISSING = "missing"
    APP_NOT_FOUND = "app-not-found"
    UNREACHABLE = "unreachable"
    NOT_OWNER = "not-owner"  # Graph reads the app, but the rotator's service principal does not own it
    POLICY_BLOCKED = "policy-blocked"  # a tenant app-management policy forbids password credentials on the app
    FOREIGN_CREDENTIAL = "foreign-credential"  # someone else put a newer secret on the app; the rotator keeps out

    @property
    def needs_rotation(self) -> bool:
        return self in (AssessmentStatus.DUE, AssessmentStatus.EXPIRED, AssessmentStatus.MISSING)


class Stage(str, Enum):
    """The step of the crash-safe rotation protocol a target is in (DESIGN.md)."""

    IDLE = "idle"
    CREATING = "creating"
    PENDING = "pending"
    VERIFIED = "verified"
    PUSHED = "pushed"


# The token endpoint's answers to a new secret that mean "not propagated yet": a new secret takes seconds (observed
# 4-18 s, no SLA) to reach every replica of the identity platform, and until then Entra answers AADSTS7000215
# "Invalid client secret provided", the same code as a wrong secret (DESIGN.md). Every other refusal of a secret the
# rotator just made names a cause that waiting does not remove (Microsoft's AADSTS reference,
# MicrosoftDocs/entra-docs docs/identity-platform/reference-error-codes.md): AADSTS7000112 the application is
# disabled, AADSTS53003 blocked by Conditional Access, AADSTS700016 the application is not in the tenant (the app
# exists: the rotator just added a password to it), AADSTS7000222 the secret has expired, AADSTS90002 the tenant is
# not found, AADSTS7000218 no secret sent, AADSTS50034 no such account.
NOT_PROPAGATED = frozenset({"AADSTS7000215"})


@dataclass(frozen=True)
class TokenRefusal:
    """The identity platform's refusal of a client-credentials token: its AADSTS code ("" when it named none) and
    its first sentence (never the secret)."""

    code: str
    message: str

    @property
    def not_propagated(self) -> bool:
        """The refusal a secret gives until it has propagated: waiting may help; nothing else does."""
        return self.code in NOT_PROPAGATED


class VersionStage(str, Enum):
    """Where one stored version of a target's secret stands: written, in use, superseded, or dead."""

    PENDING = "pending"
    CURRENT = "current"
    PREVIOUS = "previous"
    RETIRED = "retired"


class Actor(str, Enum):
    """Who started a step: the timer, an operator, or an event."""

    TIMER = "timer"
    MANUAL = "manual"
    EVENT = "event"


def actor_of(kind: Actor | str, name: str = "") -> str:
    """The audit actor: the kind, and who when known (e.g. "manual:alice@msp.com")."""
    label = kind.value if isinstance(kind, Actor) else kind
    return f"{label}:{name}" if name else label


# Who an actor names (a caller's UPN, app:<client id>, oid:<object id>): as the HTTP API takes it from the platform's
# principal (shared/entrypoints/access.py), at most this long, one line, no control or format characters.
ACTOR_NAME_MAX = 256


def valid_actor(text: str) -> bool:
    """An audit actor as the rotator makes them: a kind ("timer", "event", "manual"), optionally ":" and a name by
    the rules of a signed-in caller's name. Anything else (from a queue message, say) is not an actor."""
    kind, colon, name = text.partition(":")
    if kind not in {a.value for a in Actor}:
        return False
    if not colon:
        return True
    return 0 < len(name) <= ACTOR_NAME_MAX and name == name.strip() and not any(map(unprintable, name))


def unprintable(c: str) -> bool:
    """A control, format (zero-width), private-use or unassigned character, or a line/paragraph separator: never
    part of a name shown in an audit row."""
    return unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")


# A destination's name: operators type it into acknowledgements, so letters, digits and inner spaces/./_/- only.
DESTINATION_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9 ._-]{0,62}[A-Za-z0-9])?")


@dataclass(frozen=True)
class Credential:
    """One password credential of an app registration, as Graph lists it (never with its value)."""

    key_id: str
    display_name: str
    start: datetime | None
    end: datetime
    hint: str = ""

    @property
    def rotation_id(self) -> str | None:
        """The rotation that created this credential, if the rotator did."""
        match = _ROTATION_IN_NAME.search(self.display_name or "")
        return match.group(1) if match else None

    def expired(self, now: datetime) -> bool:
        return self.end <= now


@dataclass(frozen=True)
class Application:
    """An app registration in a customer tenant: object id, client id, name, credentials."""

    object_id: str
    app_id: str
    display_name: str
    credentials: tuple[Credential, ...]


@dataclass(frozen=True)
class DestinationConfig:
    """Where a target's secret must be delivered; never holds a secret, only Key Vault secret names."""

    name: str
    kind: str  # "proofpoint" | "http" | "notify-only"
    options: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Policy:
    """Per-target overrides of the global rotation policy (None = the setting)."""

    renew_before_days: int | None = None
    lifetime_days: int | None = None
    retire_quiet_hours: int | None = None  # how long a superseded key must not have signed in before it goes
    change_control: ChangeControl | None = None  # when a due rotation may be reserved (None: auto)


@dataclass(frozen=True)
class Ack:
    """A destination's confirmation that it holds a given credential, and what it showed.

    `checks` names what the destination's read-back proved (e.g. "application-id", "ad-key-present").
    A destination that reports its own sync (Proofpoint) sets `sync_after`: the old secret may go only once
    that sync succeeded later than this (`synced_at`, Proofpoint's own timestamp).
    """

    key_id: str
    at: datetime
    checks: tuple[str, ...] = ()
    sync_after: datetime | None = None
    synced_at: datetime | None = None

    @property
    def awaiting_sync(self) -> bool:
        return self.sync_after is not None and self.synced_at is None


@dataclass(frozen=True)
class Baseline:
    """A destination's settings as first read for a key, before any push of it (no secret value in them)."""

    key_id: str
    settings: dict[str, Any]


class SyncVerdict(str, Enum):
    """Whether a destination's own sync has proved it uses the pushed secret."""

    NOT_REPORTED = "not-reported"  # the destination shows no sync: its acknowledgement is all the proof there is
    CONFIRMED = "confirmed"
    WAITING = "waiting"
    NOT_CONFIRMED = "not-confirmed"  # no successful sync within the window after the push: a human must look


def sync_verdict(ack: Ack, last_sync: datetime | None, now: datetime, window: timedelta) -> SyncVerdict:
    """Judge a destination's last successful sync against the push it must follow."""
    if ack.sync_after is None:
        return SyncVerdict.NOT_REPORTED
    if ack.synced_at is not None or (last_sync is not None and last_sync > ack.sync_after):
        return SyncVerdict.CONFIRMED
    return SyncVerdict.NOT_CONFIRMED if now >= ack.at + window else SyncVerdict.WAITING


@dataclass(frozen=True)
class RotationState:
    """The protocol state of one target; stored in one row, changed only by ETag-guarded writes."""

    stage: Stage = Stage.IDLE
    rotation_id: str = ""
    actor: str = ""
    stage_since: datetime | None = None
    new_key_id: str = ""
    new_version: str = ""
    new_expires: datetime | None = None
    replaces: tuple[str, ...] = ()
    acks: dict[str, Ack] = field(default_factory=dict)
    push_failures: dict[str, int] = field(default_factory=dict)
    # Destinations held for a human after a push changed their other settings (drift): name -> the key id pushed.
    # A held destination is not pushed again for that key (a re-push would read the changed settings as the norm).
    held: dict[str, str] = field(default_factory=dict)
    # What each such destination showed before the first push of the key (written before that push).
    baselines: dict[str, Baseline] = field(default_factory=dict)
    current_key_id: str = ""
    current_version: str = ""
    superseded: tuple[str, ...] = ()
    retire_after: datetime | None = None
    # Credentials being removed (written before the first removePassword, cleared once their Key Vault versions are
    # tagged `retired`): a crash in between leaves it set, so the next pass reconciles the tags from Entra ID.
    retiring: tuple[str, ...] = ()
    # The request id the rotator's verify probe sent (shared/verify_probe.py), per key it probed: the key rolling out
    # and the one in use. The sign-in evidence sets those sign-ins aside by id; a key absent here (verified before
    # probe ids were recorded, or adopted from elsewhere) falls back to the time cut-off.
    probes: dict[str, str] = field(default_factory=dict)
    lease_owner: str = ""
    lease_until: datetime | None = None


@dataclass(frozen=True)
class CredentialSignIns:
    """What Entra recorded of one credential (by key id) signing in as the app's service principal."""

    key_id: str
    first_sign_in: datetime | None  # the earliest sign-in seen since the window's start (None: none seen)
    last_sign_in: datetime | None  # the latest sign-in seen (None: none seen)
    last_ip_address: str | None = None  # where the log has it (service-principal sign-ins carry ipAddress)
    last_resource: str | None = None  # the resource the token was for (e.g. "Microsoft Graph"), where the log has it
    # The earliest sign-in of the rotator's own verify probe, known by its recorded request id (Entra's correlationId);
    # such sign-ins are kept apart: first_sign_in and last_sign_in are everyone else's.
    probe_sign_in: datetime | None = None


@dataclass(frozen=True)
class ReportedSignIns:
    """Entra's credential activity report (beta `appCredentialSignInActivities`) for one app: per key id, the last
    sign-in it states. A supplement where the log is silent (older than its 30 days, or a tenant whose log is refused):
    it names a day at an undocumented freshness, so it can only keep a key, never prove the new one in use."""

    available: bool
    read_at: datetime
    last: Mapping[str, datetime] = field(default_factory=dict)
    code: str = ""  # Graph's code when the tenant refuses the report


@dataclass(frozen=True)
class SignInEvidence:
    """Sign-in evidence for one app of one tenant, or why the tenant cannot give it.

    `available` is False when the tenant does not allow the read (no permission, no licence, API refused); `code`
    is then the service's own error code and `reason` a sentence for a person; `credentials` is empty. Sign-in logs
    appear minutes after the sign-in: `read_at` is when Entra was asked, not when the last sign-in happened.
    """

    available: bool
    read_at: datetime
    since: datetime
    credentials: Mapping[str, CredentialSignIns] = field(default_factory=dict)
    code: str = ""
    reason: str = ""
    reported: ReportedSignIns | None = None  # the credential activity report, where it was read beside the log


@dataclass(frozen=True)
class Observation:
    """What the last look at a target found, and how its last rotation ended."""

    status: str = ""
    days_left: int | None = None
    expires: datetime | None = None
    checked_at: datetime | None = None
    error_code: str = ""
    error_message: str = ""
    last_rotation_at: datetime | None = None
    last_outcome: str = ""
    needs_human: str = ""
    other_credentials: int = 0  # live credentials on the app that the rotator neither made nor replaced
    lifetime_cap_days: int | None = None  # the lifetime a tenant policy accepted when it refused a longer one
    # The last sign-in evidence read for the target (only while a superseded key waits for retirement), kept for the
    # status documents and to tell a tenant's refusal once.
    sign_ins: SignInEvidence | None = None
    # What that evidence holds against retiring, while it does: "<condition>: <what a human must know>"
    # (old-key-still-used, new-key-unused); "" when nothing.
    evidence_hold: str = ""
    # The superseded keys that hold keeps (old-key-still-used: the keys seen in use; new-key-unused: every key that
    # waited), by key id: what the retire step keeps, never read back from the hold's text.
    evidence_kept: tuple[str, ...] = ()
    # When the sign-in read first failed outright (the first of the failures in a row); None once a read answers.
    sign_ins_unreadable_since: datetime | None = None
    # Drift between a destination's report and Entra ID (shared/drift.py): destination name -> what differs.
    drift: dict[str, str] = field(default_factory=dict)
    # The superseded keys a drift finding keeps from retirement (several keys match Proofpoint's expiry, a replaced
    # one among them; a replaced key still named after Proofpoint's sync), by key id.
    drift_kept: tuple[str, ...] = ()
    # The credential each destination demonstrably uses (its reported expiry names it): destination -> key id.
    uses: dict[str, str] = field(default_factory=dict)
    drift_checked_at: datetime | None = None  # when the destinations were last read for drift
    # When a drift check first failed to read a destination's settings (the first of the failures in a row); None
    # once a check reads them, or a push did.
    drift_unreadable_since: datetime | None = None
    # Change control (shared/change_control.py): what a due rotation waits for ("window", "approval", ""), when the
    # reservation looks again (a window's start, a postponement's end, the force day; None: only a decision), the
    # approval request of the key being replaced and its status, and whether `neverForce` lets the expiry come.
    waiting: str = ""
    waiting_until: datetime | None = None
    approval_id: str = ""
    approval_status: str = ""
    change_blocking: bool = False


@dataclass(frozen=True)
class Target:
    """A customer's Proofpoint sync app registration that the rotator looks after."""

    tenant_id: str
    app_id: str
    customer: str = ""
    enabled: bool = True
    policy: Policy = field(default_factory=Policy)
    destinations: tuple[DestinationConfig, ...] = ()
    state: RotationState = field(default_factory=RotationState)
    observed: Observation = field(default_factory=Observation)

    @property
    def key(self) -> str:
        return f"{self.tenant_id}/{self.app_id}"

    @property
    def secret_name(self) -> str:
        """The Key Vault secret holding this target's rotated values (one name per target)."""
        return f"ppsync-{self.tenant_id}-{self.app_id}".lower()

    def with_state(self, **changes: object) -> Target:
        return replace(self, state=replace(self.state, **changes))  # type: ignore[arg-type]

    def with_observed(self, **changes: object) -> Target:
        return replace(self, observed=replace(self.observed, **changes))  # type: ignore[arg-type]


@dataclass(frozen=True)
class Assessment:
    """A target's secret lifetime at one moment."""

    status: AssessmentStatus
    days_left: int | None = None
    current: Credential | None = None
    error_code: str = ""
    error_message: str = ""
    foreign: Credential | None = None  # a newer live credential the rotator did not make (then also `current`)
    replaces: tuple[str, ...] = ()  # what a rotation now would supersede: never a foreign credential


_GUID_LOWER = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_SECRET_NAME = re.compile(rf"\Appsync-({_GUID_LOWER})-({_GUID_LOWER})\Z")


def target_of_secret(name: str) -> tuple[str, str] | None:
    """The (tenant id, app id) whose Key Vault secret this is, or None for any other secret."""
    match = _SECRET_NAME.match(name.lower())
    return (match.group(1), match.group(2)) if match else None


def new_rotation_id() -> str:
    return uuid.uuid4().hex


def credential_display_name(rotation_id: str) -> str:
    """The displayName carrying the rotation id: how a crashed `creating` step finds its credential."""
    return f"{ROTATOR_MARK} rotation {rotation_id}"


def in_use(credentials: tuple[Credential, ...], now: datetime, known_key_id: str = "") -> Credential | None:
    """The credential the destinations are taken to use: the one we last delivered, else the longest-lived live one."""
    if known_key_id:
        for credential in credentials:
            if credential.key_id == known_key_id:
                return credential
    live = [c for c in credentials if not c.expired(now)]
    if live:
        return max(live, key=lambda c: c.end)
    return max(credentials, key=lambda c: c.end) if credentials else None


def days_until(end: datetime, now: datetime) -> int:
    """Whole days from now to end (negative once past)."""
    return int((end - now).total_seconds() // 86400)


def days_left(credential: Credential, now: datetime) -> int:
    return days_until(credential.end, now)


def _issued(credential: Credential) -> datetime:
    return credential.start if credential.start is not None else credential.end


def foreign_credential(credentials: tuple[Credential, ...], known: Credential, now: datetime) -> Credential | None:
    """The newest live credential the rotator did not make that is newer than the one it delivered, if any.

    Someone else rotated (the MSP portal's FIX, a person in the Entra portal): the rotator must not fight it.
    """
    newer = [
        c for c in credentials
        if c.rotation_id is None and c.key_id != known.key_id and not c.expired(now) and _issued(c) > _issued(known)
    ]
    return max(newer, key=_issued) if newer else None


def credential_of(credentials: tuple[Credential, ...], value: Secret, now: datetime) -> Credential | None:
    """The live credential a secret value belongs to, as far as Graph lets anyone tell: Graph never returns a value,
    only its `hint` (the first three characters); the one live credential with that hint, else None (unknown)."""
    matches = [c for c in credentials if not c.expired(now) and c.hint and value.reveal().startswith(c.hint)]
    return matches[0] if len(matches) == 1 else None


def assess(
    app: Application, now: datetime, renew_before_days: int, known_key_id: str = "", used_key_id: str = ""
) -> Assessment:
    """Classify an app's sync secret as healthy, due, expired, missing, or taken over by a foreign credential.

    A foreign credential (newer, live, not made by the rotator, found once the rotator has delivered one) is taken
    as the one in use: its expiry decides when to rotate, and a rotation never supersedes it. `used_key_id`, the
    credential a destination demonstrably uses (its reported expiry names it), overrides that guess: the foreign
    credential is the one it names, or none when it names the rotator's own.
    """
    current = in_use(app.credentials, now, known_key_id)
    if current is None:
        return Assessment(AssessmentStatus.MISSING)
    replaces = (current.key_id,)
    foreign = foreign_credential(app.credentials, current, now) if current.key_id == known_key_id else None
    used = next((c for c in app.credentials if c.key_id == used_key_id), None) if used_key_id else None
    if used is not None and current.key_id == known_key_id:
        newer = used.rotation_id is None and used.key_id != known_key_id and not used.expired(now) \
            and _issued(used) > _issued(current)
        foreign = used if newer else None
    if foreign is not None:
        current = foreign
    left = days_left(current, now)
    if current.expired(now):
        return Assessment(AssessmentStatus.EXPIRED, left, current, replaces=replaces)
    if current.end - now <= timedelta(days=renew_before_days):
        return Assessment(AssessmentStatus.DUE, left, current, foreign=foreign, replaces=replaces)
    if foreign is not None:
        return Assessment(AssessmentStatus.FOREIGN_CREDENTIAL, left, current, foreign=foreign, replaces=replaces)
    return Assessment(AssessmentStatus.HEALTHY, left, current, replaces=replaces)


def shorter_lifetimes(refused_days: int, renew_before_days: int) -> list[int]:
    """Lifetimes to try, longest first, after a tenant policy refused `refused_days`.

    None below the renew window plus a margin: such a secret would be due (almost) as soon as it is made.
    """
    floor = renew_before_days + LIFETIME_MARGIN_DAYS
    return [days for days in LIFETIME_STEPS if days < refused_days and days >= floor]


def lifetime_days(policy: Policy, default_days: int) -> int:
    days = policy.lifetime_days if policy.lifetime_days is not None else default_days
    return max(1, min(days, MAX_LIFETIME_DAYS))


def renew_before(policy: Policy, default_days: int) -> int:
    return policy.renew_before_days if policy.renew_before_days is not None else default_days


def renewal_problem(renew_before_days: int, lifetime: int) -> str:
    """Why a renewal window does not fit a lifetime ("" when it does): renewing with more than half the lifetime
    left would rotate again on every pass, or nearly."""
    if renew_before_days * 2 > lifetime:
        return (f"renew-before ({renew_before_days} days) must be at most half the secret lifetime ({lifetime} days): "
                "a new secret would be due again at once")
    return ""


def all_acknowledged(target: Target) -> bool:
    """Every destination confirmed the credential now being rolled out."""
    key_id = target.state.new_key_id
    return all(
        (ack := target.state.acks.get(d.name)) is not None and ack.key_id == key_id for d in target.destinations
    )


@dataclass(frozen=True)
class Removal:
    """A credential retirement decided by the rules, with the reason."""

    key_id: str
    reason: str  # "superseded" | "expired" | "orphaned"


def retirement_plan(
    credentials: tuple[Credential, ...],
    state: RotationState,
    now: datetime,
    remove_other_expired: bool,
    sync_proven: bool = True,
    keep: frozenset[str] = frozenset(),
) -> tuple[list[Removal], list[Credential]]:
    """Which credentials to remove now, and which other live ones to report and leave alone.

    Never the credential in use or one being rolled out. Superseded credentials only after the grace
    period and once every destination that reports its own sync has synced with the new secret, and the sign-in
    evidence (where there is some) allows it (`sync_proven`), never one in `keep` (a superseded key that still
    signs in); expired ones created by the rotator always, others only when configured.
    """
    in_use_now = in_use(credentials, now, state.current_key_id)
    protected = {k for k in (state.current_key_id, state.new_key_id, in_use_now.key_id if in_use_now else "") if k}
    grace_over = sync_proven and state.retire_after is not None and now >= state.retire_after
    removals: list[Removal] = []
    others: list[Credential] = []
    for credential in credentials:
        if credential.key_id in protected:
            continue
        if credential.key_id in state.superseded:
            if grace_over and credential.key_id not in keep:
                removals.append(Removal(credential.key_id, "superseded"))
        elif credential.expired(now) and (credential.rotation_id or remove_other_expired):
            removals.append(Removal(credential.key_id, "expired"))
        elif credential.rotation_id and state.current_key_id and state.stage is Stage.IDLE:
            # A rotator-made credential that is neither current nor superseded: left by a rotation
            # that was abandoned after its value was safe; no destination was ever given it.
            removals.append(Removal(credential.key_id, "orphaned"))
        elif not credential.expired(now):
            others.append(credential)
    return removals, others


def retirement_due(target: Target, now: datetime) -> bool:
    """An idle target with superseded credentials whose grace period is over, or whose last retirement stopped
    between a removal and its Key Vault tags (the row still lists what it was removing): the one piece of work on an
    idle target that a queue message may carry (the timer decided it; a worker does it, never starting a rotation)."""
    s = target.state
    return s.stage is Stage.IDLE and (
        bool(s.retiring) or (bool(s.superseded) and (s.retire_after is None or s.retire_after <= now)))
