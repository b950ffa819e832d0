"""Staged expiry warnings (issue 25): per customer thresholds in days, exclusions and snoozes. Pure: plain data in,
verdicts and alert conditions out; the pass (shared/warning_pass.py) reads the stores and talks to the alert book.

A threshold is an alert condition per credential, `expiring-<days>d`, told through the alert book (one row per
condition and credential, so each threshold fires once per credential) and resolved once, with a note, when the
credential is renewed (its object holds a newer credential of the same kind that ends beyond the threshold) or
removed, or excluded for good (an exclusion without an end). Only the tightest threshold a credential has crossed
holds: when it crosses the next one, the looser warning is closed without a note (people were told; the tighter
warning carries on). An excluded or snoozed credential raises nothing new; a snoozed one keeps a warning it already
had open without a note (the snooze defers it: when it lapses, the warnings resume); an expired credential raises
nothing new either (the inventory shows it expired). A tenant that leaves the inventory (its last registered target
removed) has each of its open warnings resolved (shared/warning_pass.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum

from shared.conditions import STAGE_PREFIX, Condition
from shared.domain import GUID
from shared.inventory import CredentialKind, InventoryCredential, ObjectKind
from shared.ports import Alert

DEFAULT_THRESHOLDS: tuple[int, ...] = (60, 30, 14, 7, 1)
MAX_THRESHOLD_DAYS = 730  # Entra caps a client secret at two years: a warning further out warns of nothing yet
MAX_THRESHOLDS = 10
MAX_SNOOZE = timedelta(days=366)  # a snooze is a deferral, not a quiet exclusion: a year at most
MAX_REASON = 500
_CONDITION = re.compile(rf"^{STAGE_PREFIX}(\d+)d$")


class InvalidRule(ValueError):
    """A threshold list or an exclusion that cannot be kept; the message says what to send instead."""

    def __init__(self, message: str, code: str = "InvalidRequest") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def parse_thresholds(value: object) -> tuple[int, ...]:
    """A customer's thresholds: 1 to 10 distinct whole days between 1 and 730, loosest first."""
    if not isinstance(value, list) or not value:
        raise InvalidRule("days must be a non-empty list of whole days, e.g. [60, 30, 14, 7, 1]")
    if len(value) > MAX_THRESHOLDS:
        raise InvalidRule(f"days holds at most {MAX_THRESHOLDS} thresholds")
    for day in value:
        if isinstance(day, bool) or not isinstance(day, int) or not 1 <= day <= MAX_THRESHOLD_DAYS:
            raise InvalidRule(f"each threshold must be a whole number of days from 1 to {MAX_THRESHOLD_DAYS}")
    if len(set(value)) != len(value):
        raise InvalidRule("each threshold may appear only once")
    return tuple(sorted(value, reverse=True))


def condition_name(days: int) -> str:
    return f"{STAGE_PREFIX}{days}d"


def threshold_of(condition: str) -> int | None:
    """The days of a staged condition's name (None for any other condition)."""
    found = _CONDITION.match(condition)
    return int(found[1]) if found else None


def stage(days_left: int | None, thresholds: Sequence[int]) -> int | None:
    """The tightest threshold a credential with this many whole days left has crossed (None: none, or no end)."""
    if days_left is None:
        return None
    crossed = [t for t in thresholds if days_left <= t]
    return min(crossed) if crossed else None


class Scope(str, Enum):
    """What an exclusion covers: one credential, every credential of an app (application and its service
    principal share the appId), or a whole customer tenant."""

    CREDENTIAL = "credential"
    APP = "app"
    CUSTOMER = "customer"


@dataclass(frozen=True)
class Exclusion:
    """An exclusion (no end: until it is lifted) or a snooze (an end) from warnings, with who, why and when; a lifted
    one is kept, with who lifted it and when (its own record of what happened, whatever the audit log holds)."""

    exclusion_id: str
    tenant_id: str
    scope: Scope
    app_id: str
    key_id: str
    until: datetime | None
    by: str
    why: str
    at: datetime
    lifted_by: str = ""
    lifted_at: datetime | None = None

    @property
    def kind(self) -> str:
        return "exclusion" if self.until is None else "snooze"

    def active(self, now: datetime) -> bool:
        return self.lifted_at is None and (self.until is None or now < self.until)

    def covers(self, credential: InventoryCredential) -> bool:
        if credential.tenant_id != self.tenant_id:
            return False
        if self.scope is Scope.CUSTOMER:
            return True
        if self.scope is Scope.APP:
            return credential.app_id == self.app_id
        return credential.key_id == self.key_id


def new_exclusion(exclusion_id: str, tenant_id: str, scope: str, *, app_id: str = "", key_id: str = "",
                  snooze: bool, until: datetime | None, by: str, why: str, now: datetime) -> Exclusion:
    """A validated exclusion or snooze; InvalidRule names what is missing (a snooze needs an end date)."""
    try:
        kind = Scope(scope)
    except ValueError:
        raise InvalidRule("scope must be one of credential, app, customer") from None
    for name, value in (("tenantId", tenant_id), *((("appId", app_id),) if kind is Scope.APP else ()),
                        *((("keyId", key_id),) if kind is Scope.CREDENTIAL else ())):
        if not GUID.fullmatch(value):
            raise InvalidRule(f"{name} must be a GUID")
    if kind is not Scope.APP and app_id:
        raise InvalidRule("appId belongs to an app exclusion only")
    if kind is not Scope.CREDENTIAL and key_id:
        raise InvalidRule("keyId belongs to a credential exclusion only")
    why = why.strip()
    if not why or len(why) > MAX_REASON:
        raise InvalidRule(f"why must say, in 1 to {MAX_REASON} characters, why the warnings are not wanted")
    from shared.destinations.options import looks_like_secret  # lazy, as shared/registry.py does

    # The reason is stored, audited, listed and printed in reports: never a pasted secret, whichever door it came
    # through (the API, the command line). The message names the field, never the value.
    if looks_like_secret(why):
        raise InvalidRule("why looks like a secret value; say why in words, never paste a credential")
    if not by:
        raise InvalidRule("the exclusion needs the name of who made it")
    if snooze and until is None:
        raise InvalidRule("a snooze needs an end date (until); to silence for good, exclude instead",
                          code="SnoozeNeedsEnd")
    if until is not None:
        if until.tzinfo is None:
            raise InvalidRule("until must carry a time zone (e.g. 2027-01-31T00:00:00Z)")
        if until <= now:
            raise InvalidRule("until must be in the future")
        if until - now > MAX_SNOOZE:
            raise InvalidRule("until may be at most 366 days ahead; exclude for good instead")
    return Exclusion(exclusion_id, tenant_id.lower(), kind, app_id.lower(), key_id.lower(), until, by, why, now)


def covering(credential: InventoryCredential, exclusions: Iterable[Exclusion], now: datetime) -> Exclusion | None:
    """The active exclusion covering a credential: the narrowest one (credential, then app, then customer)."""
    order = {Scope.CREDENTIAL: 0, Scope.APP: 1, Scope.CUSTOMER: 2}
    found = [e for e in exclusions if e.active(now) and e.covers(credential)]
    return min(found, key=lambda e: (order[e.scope], e.at)) if found else None


def covering_certificate(credential: InventoryCredential, siblings: Iterable[InventoryCredential],
                         exclusions: Sequence[Exclusion], now: datetime) -> Exclusion | None:
    """The exclusion covering a credential or, for a certificate, any other credential of the same certificate on
    the same object (same thumbprint and end: one_per_certificate's companions). A SAML signing certificate is
    listed as three credentials with three key ids; excluding any of them (say the Verify row of the export) means
    that certificate, whose warning its Sign row tells. `siblings`: the object's credentials."""
    found = covering(credential, exclusions, now)
    if found is not None or not exclusions or not _THUMBPRINT.match(credential.hint):
        return found
    for other in siblings:
        if (other.key != credential.key and other.object_kind is credential.object_kind
                and other.object_id == credential.object_id and other.hint == credential.hint
                and other.end == credential.end):
            found = covering(other, exclusions, now)
            if found is not None:
                return found
    return None


def renewed(credential: InventoryCredential, siblings: Iterable[InventoryCredential], now: datetime,
            threshold: int) -> bool:
    """Another credential of the same object, kind and usage ends later and beyond the threshold: renewed."""
    for other in siblings:
        if (other.key_id != credential.key_id and other.object_kind is credential.object_kind
                and other.object_id == credential.object_id and other.credential_kind is credential.credential_kind
                and other.usage == credential.usage and other.saml == credential.saml
                and (other.end is None or (credential.end is not None and other.end > credential.end
                                           and (other.end - now).days > threshold))):
            return True
    return False


def slot(credential: InventoryCredential) -> str:
    """The credential's place in the alert book: its object kind and key id (the book's partition is the app)."""
    return f"{credential.object_kind.value}:{credential.key_id}"


@dataclass(frozen=True)
class Verdict:
    """What the warnings make of one credential now."""

    credential: InventoryCredential
    days_left: int | None
    stage: int | None  # the tightest threshold crossed, None when none
    exclusion: Exclusion | None
    renewed: bool

    @property
    def holding(self) -> Condition | None:
        """The staged condition that holds (a warning open for it stays open), None when none does."""
        if self.stage is None or self.renewed:
            return None
        if self.exclusion is not None and self.exclusion.until is None:
            return None  # excluded for good: the warning told is resolved, not left open for ever
        return condition_name(self.stage), slot(self.credential)

    @property
    def warns(self) -> bool:
        """A warning is due (the book tells it once): crossed, not renewed, not excluded, not yet expired."""
        return (self.holding is not None and self.exclusion is None and self.days_left is not None
                and self.days_left >= 0)


def judge(credentials: Sequence[InventoryCredential], thresholds: Sequence[int], exclusions: Iterable[Exclusion],
          now: datetime, renew_before: Mapping[str, int] | None = None) -> list[Verdict]:
    """A verdict per credential of one tenant (pure). `renew_before`: per registered app, the days before expiry
    at which the rotator renews its secret; a managed credential is warned of only at thresholds tighter than that
    (a warning then says the rotator has not renewed it in time), not at every looser one of each cycle."""
    renew_before = renew_before or {}
    exclusions = list(exclusions)
    by_object: dict[tuple[ObjectKind, str], list[InventoryCredential]] = {}
    for c in credentials:
        by_object.setdefault((c.object_kind, c.object_id), []).append(c)
    verdicts = []
    companions = {c.key for c in credentials} - {c.key for c in one_per_certificate(credentials)}
    for c in credentials:
        days = c.days_left(now)
        own = thresholds
        if c.key in companions:
            own = []  # the same certificate's other half (Verify, or a SAML key's password): told once, by its Sign
        elif c.first_party:
            own = []  # Microsoft's own service principals: Microsoft renews their credentials; listed, never warned
        elif c.managed and c.app_id in renew_before:
            own = [t for t in thresholds if t < renew_before[c.app_id]]
        crossed = stage(days, own)
        verdicts.append(Verdict(
            c, days, crossed, covering_certificate(c, by_object[(c.object_kind, c.object_id)], exclusions, now),
            crossed is not None and renewed(c, by_object[(c.object_kind, c.object_id)], now, crossed)))
    return verdicts


_THUMBPRINT = re.compile(r"^[0-9A-F]{40}$")


def one_per_certificate(credentials: Iterable[InventoryCredential]) -> list[InventoryCredential]:
    """The credentials with one certificate's companions left out: an object lists one certificate as several
    credentials with its thumbprint and end (a SAML signing certificate as keyCredentials Sign and Verify and a
    passwordCredential for its private key: servicePrincipal addTokenSigningCertificate), one warning is enough. The
    one kept: Sign, then Verify, then the password; the lowest key id among equals."""
    rank = {"Sign": 0, "Verify": 1}
    kept: dict[tuple[object, ...], InventoryCredential] = {}
    for c in credentials:
        group: tuple[object, ...] = ((c.object_kind, c.object_id, c.hint, c.end) if _THUMBPRINT.match(c.hint)
                                     else c.key)
        best = kept.get(group)
        order = (rank.get(c.usage, 2) if c.credential_kind is CredentialKind.CERTIFICATE else 3, c.key_id)
        if best is None or order < (rank.get(best.usage, 2) if best.credential_kind is CredentialKind.CERTIFICATE
                                    else 3, best.key_id):
            kept[group] = c
    return list(kept.values())


def holding_by_app(verdicts: Iterable[Verdict]) -> dict[str, frozenset[Condition]]:
    """Per app id (the book's partition within the tenant), the staged conditions that hold."""
    held: dict[str, set[Condition]] = {}
    for v in verdicts:
        if v.holding is not None:
            held.setdefault(v.credential.app_id, set()).add(v.holding)
    return {app: frozenset(conditions) for app, conditions in held.items()}


def alert_of(verdict: Verdict) -> Alert:
    """The alert a due warning sends: which credential of which app, its hint and end; never a value."""
    c = verdict.credential
    name, place = verdict.holding or ("", "")
    what = "client secret" if c.credential_kind is CredentialKind.PASSWORD else "certificate"
    if c.saml:
        what = "SAML signing certificate"
    where = "app registration" if c.object_kind is ObjectKind.APPLICATION else "enterprise app"
    end = c.end.date().isoformat() if c.end else ""
    left = verdict.days_left if verdict.days_left is not None else 0
    # Who to ask: the app's owners in the customer's tenant (none: say so, an ownerless app is the MSP's to chase).
    owners = ", ".join(c.owners) if c.owners else "none in the tenant"
    message = (f"{what} {c.hint or c.key_id[:8]} of {where} '{c.display_name}' expires in {left} day"
               f"{'' if left == 1 else 's'} ({end}); warning at {verdict.stage} days; owners: {owners}")
    details = {"destination": place, "threshold": str(verdict.stage), "days_left": str(left),
               "ends": end, "object_kind": c.object_kind.value, "object_id": c.object_id, "key_id": c.key_id,
               "credential_kind": c.credential_kind.value, "display_name": c.display_name,
               "managed": str(c.managed).lower(), "owners": ", ".join(c.owners)}
    return Alert(name, c.tenant_id, c.app_id, message, c.customer, details)


def exclusion_document(e: Exclusion, now: datetime) -> dict[str, object]:
    return {"id": e.exclusion_id, "tenantId": e.tenant_id, "scope": e.scope.value, "appId": e.app_id or None,
            "keyId": e.key_id or None, "kind": e.kind, "until": e.until.isoformat() if e.until else None,
            "by": e.by, "why": e.why, "at": e.at.isoformat(), "active": e.active(now),
            "liftedBy": e.lifted_by or None, "liftedAt": e.lifted_at.isoformat() if e.lifted_at else None}


def thresholds_for(tenant_id: str, chosen: Mapping[str, tuple[int, ...]]) -> tuple[int, ...]:
    return chosen.get(tenant_id, DEFAULT_THRESHOLDS)
