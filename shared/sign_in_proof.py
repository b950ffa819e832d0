"""Retirement on Entra ID's own sign-in records: which credential of the app actually signed in, and when.

A destination's acknowledgement proves it stored the new key; Proofpoint's `last_successful_sync` proves a sync
worked, not with which key. Entra's sign-in log names the credential of every service-principal sign-in
(`servicePrincipalCredentialKeyId`), so where the tenant lets the rotator read it, a superseded key goes only once
the new key has signed in since the push and the old one has been quiet for the quiet period. Pure: plain data in,
a verdict out; the protocol step (shared/protocol/evidence.py) reads the log and acts on it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from shared.domain import CredentialSignIns, Policy, RotationState, SignInEvidence

OLD_KEY_STILL_USED = "old-key-still-used"  # a superseded key signed in since the push, after the grace period
NEW_KEY_UNUSED = "new-key-unused"  # no sign-in with the new key within the sync window after the push
EVIDENCE_UNAVAILABLE = "sign-in-evidence-unavailable"  # a notice: the tenant refuses the read (permission, licence)
HOLDS = (OLD_KEY_STILL_USED, NEW_KEY_UNUSED)
# The read failed outright (throttled, Graph down, a 400) on every pass for about a day: every superseded key is kept
# meanwhile, so without a human it would wait for ever. Resolvable: it clears with the next read that answers.
EVIDENCE_UNREADABLE = "sign-in-evidence-unreadable"
# "About a day": the daily pass after the first failure (the timer's runs are a day apart, give or take its jitter).
UNREADABLE_AFTER = timedelta(hours=20)


def unreadable(since: datetime | None, now: datetime) -> bool:
    """Whether the sign-in read has failed on every pass since `since` for long enough to need a human."""
    return since is not None and now - since >= UNREADABLE_AFTER

# The rotator signs in with the new key itself, before any push (the verify step's token probe), and Entra records
# that like any sign-in. The probe is known by its request id (shared/verify_probe.py: the read sets it aside). Only
# for a key whose probe id the row does not record (verified before probe ids were kept) a sign-in must be later
# than the push by this much to count as someone else's: it absorbs the skew between our clock and Entra's
# `createdDateTime` (the probe is seconds before the push), not a probe stamped later than that.
SELF_SIGN_IN_MARGIN = timedelta(minutes=5)
# Entra's sign-in log lags: a sign-in is listed about 2 minutes later (P95), up to 5 (P99; docs/evidence.md, the
# sources table). A read at `now` may miss the last LOG_DELAY, so the quiet period is judged over quiet + LOG_DELAY:
# a consumer that signs in once per quiet period, just before a read, still has its previous sign-in inside it.
LOG_DELAY = timedelta(minutes=5)
# Entra keeps sign-in logs 30 days (Microsoft Entra ID P1/P2; data retention docs): nothing older can be asked.
LOG_RETENTION = timedelta(days=30)
# The quiet period may not outlast what the log can show.
MAX_QUIET_HOURS = 30 * 24


def quiet_period(policy: Policy, default: timedelta) -> timedelta:
    """How long a superseded key must not have signed in before it may go: the target's override, else the setting."""
    return timedelta(hours=policy.retire_quiet_hours) if policy.retire_quiet_hours is not None else default


def pushed_at(state: RotationState, finished_at: datetime | None) -> datetime | None:
    """When the key in use was first handed to a destination (its earliest acknowledgement); the rotation's end
    when no destination acknowledged it (a target without destinations)."""
    times = [a.at for a in state.acks.values() if a.key_id == state.current_key_id]
    return min(times) if times else finished_at


def window_start(pushed: datetime, now: datetime, quiet: timedelta) -> datetime:
    """Where the sign-in read must start: early enough to see both the new key's first sign-in since the push and
    any sign-in of the old ones within the quiet period (widened by the log's delay); never before what the log
    keeps."""
    return max(min(pushed, now - quiet - LOG_DELAY), now - LOG_RETENTION)


def counts(moment: datetime | None, pushed: datetime, margin: timedelta = SELF_SIGN_IN_MARGIN) -> bool:
    """A sign-in that proves someone other than the rotator used a key after the push (the probe never does):
    `margin` 0 where the read already set the probe aside by its id."""
    return moment is not None and moment > pushed + margin


@dataclass(frozen=True)
class EvidenceVerdict:
    """What the sign-in evidence says about retiring the superseded keys now."""

    allows: bool  # the new key is proven in use (or there is no evidence to wait for: the fallback)
    keep: frozenset[str] = frozenset()  # superseded keys that signed in within the quiet period: kept
    hold: str = ""  # "<condition>: <message>" while the evidence holds the old key back for a human; else ""
    basis: str = ""  # the evidence behind a retirement, for its audit record
    held: frozenset[str] = frozenset()  # the superseded keys that hold keeps (structured: never read from its text)


def judge(
    evidence: SignInEvidence, new_key: str, superseded: Iterable[str], pushed: datetime, now: datetime,
    quiet: timedelta, window: timedelta, grace_over: bool, probe_known: bool = False,
) -> EvidenceVerdict:
    """Judge the superseded keys by what Entra recorded (evidence.available: the caller falls back otherwise).

    The new key must have signed in after the push (`counts`); each superseded key must not have signed in within
    `quiet` plus the log's delay of `now` (a sign-in the read cannot show yet is covered by the one before it).
    After the grace period, a superseded key that signed in since the push and is still within
    the quiet period raises old-key-still-used; a new key with no sign-in `window` after the push, new-key-unused.
    """
    new = evidence.credentials.get(new_key) or CredentialSignIns(new_key, None, None)
    # probe_known: the read set the new key's probe aside by its request id; else the time cut-off stands for it.
    # The report never proves the new key: it names a day, late.
    margin = timedelta(0) if probe_known else SELF_SIGN_IN_MARGIN
    new_used = counts(new.last_sign_in, pushed, margin)
    olds = [evidence.credentials.get(k) or CredentialSignIns(k, None, None) for k in superseded]
    recent = [c for c in olds if c.last_sign_in is not None and c.last_sign_in > now - quiet - LOG_DELAY]
    still_used = [c for c in recent if counts(c.last_sign_in, pushed)]
    # Where the log is silent on an old key but the credential activity report names a day inside the window the log
    # covers, the two disagree (a sign-in the log lost): the key is kept, strictly. A day that began before the window
    # proves nothing the log does not (a sign-in then is older than the quiet period): the log's word stands.
    inside = {k: day for k, day in reported_last(evidence).items() if day >= evidence.since}
    reported_keep, reported_used = report_keeps(inside, [c.key_id for c in olds if c not in recent], pushed, now,
                                                quiet, grace_over)
    hold = ""
    held: frozenset[str] = frozenset()
    if grace_over and (still_used or reported_used):
        hold = f"{OLD_KEY_STILL_USED}: " + "; ".join([_old_use(c, pushed, quiet) for c in still_used]
                                                     + [text for _, text in reported_used])
        held = frozenset(c.key_id for c in still_used) | frozenset(k for k, _ in reported_used)
    elif grace_over and not new_used and now >= pushed + window:
        held = frozenset(c.key_id for c in olds)
        hold = (f"{NEW_KEY_UNUSED}: Entra ID records no sign-in with the new key {new_key} since it was pushed at "
                f"{_at(pushed)} (log read at {_at(evidence.read_at)}); the old key is kept until it does")
    first = new.first_sign_in if counts(new.first_sign_in, pushed, margin) else new.last_sign_in
    quiet_olds = ", ".join(
        f"{c.key_id} last at {_at(c.last_sign_in)}" if c.last_sign_in else f"{c.key_id} none since "
        f"{_at(evidence.since)}" for c in olds if c not in recent and c.key_id not in reported_keep)
    basis = (f"sign-in evidence read at {_at(evidence.read_at)}: new key {new_key} signed in at {_at(first)} "
             f"(pushed at {_at(pushed)}); old key(s) quiet for {_hours(quiet)}: {quiet_olds or 'none'}")
    return EvidenceVerdict(new_used, frozenset(c.key_id for c in recent) | reported_keep, hold,
                           basis if new_used else "", held)


# The credential activity report names the day of a key's last sign-in (every documented example is a midnight): the
# sign-in may have come as late as the day's end. Judged strictly both ways: the day's end for the quiet period (keep
# rather than retire), the day's start for "after the push" (alarm only on a day that began after it).
REPORT_DAY = timedelta(days=1)
# It is rolled up once a day (modelled so: its freshness is not documented): a target's passes read it once a day.
REPORT_REREAD = timedelta(hours=20)


def reported_last(evidence: SignInEvidence | None) -> Mapping[str, datetime]:
    """The credential activity report's last sign-in per key, where it was read (empty otherwise)."""
    report = evidence.reported if evidence is not None else None
    return report.last if report is not None and report.available else {}


def report_keeps(reported: Mapping[str, datetime], superseded: Iterable[str], pushed: datetime, now: datetime,
                 quiet: timedelta, grace_over: bool) -> tuple[frozenset[str], list[tuple[str, str]]]:
    """The superseded keys the report shows signed in within the quiet period (kept), and, after the grace, the
    old-key-still-used sentence of each whose reported day began after the push. It can only keep a key."""
    keep: set[str] = set()
    used: list[tuple[str, str]] = []
    for key_id in superseded:
        day = reported.get(key_id)
        if day is None or day + REPORT_DAY <= now - quiet - LOG_DELAY:
            continue
        keep.add(key_id)
        if grace_over and counts(day, pushed):
            used.append((key_id, f"the superseded key {key_id} signed in on {day.date().isoformat()} (Entra's "
                                 f"credential activity report), after the new key was pushed at {_at(pushed)}; it is "
                                 f"kept until it has been quiet for {_hours(quiet)}"))
    return frozenset(keep), used


def report_verdict(evidence: SignInEvidence, superseded: Iterable[str], pushed: datetime, now: datetime,
                   quiet: timedelta, grace_over: bool) -> EvidenceVerdict:
    """Where the tenant refuses the log but the report was read: the keys it keeps and the hold it raises; the
    retirement otherwise falls back to the destinations' own proof (`allows`)."""
    keep, used = report_keeps(reported_last(evidence), superseded, pushed, now, quiet, grace_over)
    hold = f"{OLD_KEY_STILL_USED}: " + "; ".join(text for _, text in used) if used else ""
    return EvidenceVerdict(True, keep, hold, held=frozenset(k for k, _ in used))


def fallback_basis(evidence: SignInEvidence | None, synced: Iterable[tuple[str, datetime]]) -> str:
    """The audit sentence of a retirement without sign-in evidence: why there is none, and the destinations' own
    syncs it relied on instead."""
    why = (f"the tenant refuses the sign-in log ({evidence.code})" if evidence is not None and not evidence.available
           else "sign-in logs are not read")
    syncs = ", ".join(f"{name} sync at {_at(at)}" for name, at in synced)
    proof = syncs or "every destination's acknowledgement"
    return f"no sign-in evidence: {why}; proof: {proof}"


def _old_use(c: CredentialSignIns, pushed: datetime, quiet: timedelta) -> str:
    where = ", ".join(p for p in (f"from {c.last_ip_address}" if c.last_ip_address else "",
                                  f"for {c.last_resource}" if c.last_resource else "") if p)
    return (f"the superseded key {c.key_id} signed in at {_at(c.last_sign_in)}{' ' + where if where else ''}, after "
            f"the new key was pushed at {_at(pushed)}; it is kept until it has been quiet for {_hours(quiet)}")


def _hours(span: timedelta) -> str:
    return f"{int(span.total_seconds() // 3600)} h"


def _at(moment: datetime | None) -> str:
    return moment.isoformat() if moment else "never"
