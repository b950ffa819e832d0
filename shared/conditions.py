"""Which alert conditions a target's row says hold now: the alert book resolves the open ones that no longer do.

Pure: a function of the row and the time. A condition is named as the engine names it in its alerts, with the
destination it concerns ("" when it concerns the whole target). Conditions that are one-off notices of an event
(`lifetime-capped`, `poison-message`) are not states: they are told once a day and never resolved.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from shared.domain import Stage, Target
from shared.drift import DRIFT_UNREADABLE, drift_unreadable
from shared.sign_in_proof import EVIDENCE_UNAVAILABLE, EVIDENCE_UNREADABLE, HOLDS, unreadable
from shared.sync_proof import SYNC_NOT_CONFIRMED

Condition = tuple[str, str]  # (condition, destination or "")

# Statuses that are themselves a condition (the assessment alerts on each and records it as the status).
STATUS_CONDITIONS = frozenset(
    {"expired", "unreachable", "app-not-found", "not-owner", "policy-blocked", "foreign-credential"}
)
# Every condition that holds while the row says so, and so clears: the alert book resolves these.
# The verify step's flags (shared/protocol/verify.py, which imports this module's users: named here, tested equal).
VERIFY_FLAGS = ("verify-refused", "verify-timeout")
RESOLVABLE = STATUS_CONDITIONS | {"stuck", "destination-failing", "notify-only-waiting", SYNC_NOT_CONFIRMED,
                                  "rotation-failed", *VERIFY_FLAGS, *HOLDS, EVIDENCE_UNREADABLE, DRIFT_UNREADABLE}
# Change control (shared/protocol/change.py): a rotation waiting for a person's decision (told daily while pending),
# and one that `neverForce` keeps waiting past its force day (told daily while it does); a forced rotation is a notice.
APPROVAL_REQUESTED = "approval-requested"
CHANGE_BLOCKING = "change-control-blocking-expiry"
ROTATION_FORCED = "rotation-forced"
RESOLVABLE = RESOLVABLE | {APPROVAL_REQUESTED, CHANGE_BLOCKING}
# A destination whose push changed its other settings is held for a human: "<kind>-drift" (proofpoint-drift).
DRIFT_SUFFIX = "-drift"


# Staged expiry warnings (shared/expiry_warnings.py): `expiring-<days>d` per credential, told once (never again
# daily), resolved once when the credential is renewed or removed; settled by the warnings pass, not by a target's.
STAGE_PREFIX = "expiring-"


def staged(condition: str) -> bool:
    """A staged expiry warning: told once per credential and threshold, not once a day."""
    return condition.startswith(STAGE_PREFIX)


def resolvable(condition: str) -> bool:
    """A condition the row shows while it holds (so the alert book resolves it), not a one-off notice."""
    return condition in RESOLVABLE or condition.endswith(DRIFT_SUFFIX) or staged(condition)


# One-off notices of an event (a capped lifetime, a poisoned message, an audit record not written, a version written
# by hand into Key Vault that gets no token or cannot be adopted now): told at most once a day, never resolved.
# A tenant refusing the sign-in log is told once when first seen (sign-in-evidence-unavailable), never as an alarm.
# The PSA refusing a ticket step for a reason a person must fix (bad credentials, an unknown board): `ticket-refused`
# (shared/tickets/book.py), told at most once a day per customer while it goes on; never itself a ticket.
TICKET_REFUSED = "ticket-refused"
NOTICES = frozenset({"lifetime-capped", "poison-message", "audit-unwritten", "hand-written-unverified",
                     "hand-written-not-adopted", EVIDENCE_UNAVAILABLE, ROTATION_FORCED, TICKET_REFUSED})


def holding(target: Target, now: datetime, stuck_after: timedelta) -> frozenset[Condition]:
    """The resolvable conditions of this target that hold now, by its row."""
    s, o = target.state, target.observed
    held: set[Condition] = set()
    if o.status in STATUS_CONDITIONS:
        held.add((o.status, ""))
    if s.stage is not Stage.IDLE and s.stage_since is not None and now - s.stage_since > stuck_after:
        held.add(("stuck", ""))
    held |= {("destination-failing", name) for name, count in s.push_failures.items() if count > 0}
    kinds = {d.name: d.kind for d in target.destinations}
    held |= {(f"{kinds.get(name, 'destination')}{DRIFT_SUFFIX}", name) for name, key_id in s.held.items()
             if s.new_key_id and key_id == s.new_key_id}
    # Drift an assessment found between a destination's report and Entra ID (shared/drift.py), until a check no
    # longer finds it or a rotation pushed the key again.
    held |= {(f"{kinds.get(name, 'destination')}{DRIFT_SUFFIX}", name) for name in o.drift}
    if s.stage is Stage.VERIFIED:
        held |= {("notify-only-waiting", d.name) for d in target.destinations
                 if d.kind == "notify-only" and not acknowledged(target, d.name)}
    if o.needs_human.startswith(SYNC_NOT_CONFIRMED):
        held.add((SYNC_NOT_CONFIRMED, ""))
    if s.stage is Stage.PENDING:
        # The new secret was refused, or never started working: the flag goes when it is verified.
        held |= {(flag, "") for flag in VERIFY_FLAGS if o.needs_human.startswith(flag)}
    if o.evidence_hold:
        # The sign-in evidence keeps a superseded key (old-key-still-used, new-key-unused) while the row says so.
        held.add((o.evidence_hold.split(":", 1)[0], ""))
    if unreadable(o.sign_ins_unreadable_since, now):
        held.add((EVIDENCE_UNREADABLE, ""))  # until a sign-in read answers again
    if drift_unreadable(o.drift_unreadable_since, now):
        held.add((DRIFT_UNREADABLE, ""))  # until a drift check or a push reads the settings again
    if s.stage is Stage.IDLE and o.waiting == "approval" and o.approval_status == "pending":
        held.add((APPROVAL_REQUESTED, ""))
    if s.stage is Stage.IDLE and o.change_blocking:
        held.add((CHANGE_BLOCKING, ""))
    if o.last_outcome.startswith("failed"):
        # An abandoned rotation; the next one that finishes records "rotated".
        held.add(("rotation-failed", ""))
    return frozenset(held)


def acknowledged(target: Target, destination: str) -> bool:
    """The destination confirmed the secret being rolled out."""
    ack = target.state.acks.get(destination)
    return ack is not None and ack.key_id == target.state.new_key_id


def may_hold_any(target: Target, now: datetime, stuck_after: timedelta) -> bool:
    """Whether this row could carry an open condition: an idle row with none holding (a healthy target, the most
    of a daily pass) needs no look into the alert book."""
    return target.state.stage is not Stage.IDLE or bool(holding(target, now, stuck_after))
