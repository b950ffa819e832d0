"""Drift between what Proofpoint says it uses and the app registration in Entra ID (pure).

Proofpoint's sync settings (GET /orgs/{domain}/settings/azure) show `application_id`, and community scripts read
`secret_expiry` and the sync state from the same answer. None of it is documented, so `secret_expiry` is read as an
set of windows of instants it may mean (`ReportedUse.expiry_windows` within `expiry_from`/`expiry_to`, made by the
adapter from the text: shared/destinations/proofpoint.py) and a credential matches when its end falls inside one:
a date with a time and an offset within a minute, a time without an offset in any zone from UTC-12 to UTC+14, a
date alone any time of that day, a slashed date read both ways (the strictest plausible reading: no format is
assumed, so no healthy target is flagged because of how a date is written).

Drift is what a human must look at: Proofpoint naming another application, an expiry matching no live credential
of the app (a key of another app pasted by hand, or a key since removed), or one matching only a credential the
rotator did not make while the rotator's own key is in use (a key pasted by hand, a portal FIX), or the key the last
rotation replaced still named after Proofpoint's own sync (pasted back, or a push that did not take: that key is
then in use, and the retire step keeps it), or several keys none of which is the rotator's (which one cannot be
told, but not the rotator's: a replaced key among them is kept). A newer credential the rotator did not make that
Proofpoint's expiry names is the one Proofpoint uses: adopted, as a foreign credential is (never removed; rotated
only when due), and not drift (where Entra's sign-in log can say, once it has signed in: shared/protocol/assess.py).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from shared.domain import Application, Credential, Target
from shared.ports import ReportedUse

# How often a healthy idle target's Proofpoint settings are read for drift: every 30 days, each target on its own
# day (a stable hash of its key), so a daily pass reads a thirtieth of the fleet. One read costs about as much CPU
# as the rest of a healthy target's assessment (a GET with its own TLS session, measured 2.2 against 2.3 ms per
# customer): every 14 days it added 7.8 % to the daily scan, which with the rest of issues 23-25 (+5.8 %) went over
# issue 24's budget of 10 %; every 30 days it adds 3.6 % (docs/benchmarks.md). A target is also read at its first
# assessment, daily while drift holds, at every push, and at every pass while a replaced key waits for retirement.
DRIFT_CHECK_DAYS = 30

SYNC_FAILING_AFTER = timedelta(hours=48)

# A destination's settings could not be read at any drift check for two days (its login refused, the org gone, the
# service failing): drift cannot be checked, and the next push would likely fail alike. Resolvable: it clears with the
# next check that reads them, or a push that does.
DRIFT_UNREADABLE = "drift-check-unreadable"
DRIFT_UNREADABLE_AFTER = timedelta(hours=44)  # the third daily check in a row (the timer's jitter allowed for)


def drift_unreadable(since: datetime | None, now: datetime) -> bool:
    """Whether the drift checks have failed to read the settings since `since` for long enough to need a human."""
    return since is not None and now - since >= DRIFT_UNREADABLE_AFTER


@dataclass(frozen=True)
class DriftFinding:
    """One destination's drift verdict: the credential it demonstrably uses (None when it cannot be told) and what
    differs (empty: no drift)."""

    destination: str
    uses: Credential | None
    problems: tuple[str, ...] = ()
    keeps: tuple[str, ...] = ()  # the superseded keys this finding keeps from retirement, by key id


def matching(credentials: tuple[Credential, ...], start: datetime, end: datetime) -> list[Credential]:
    """The credentials whose end falls inside [start, end] (expired ones too: Proofpoint may hold a dead key)."""
    return [c for c in credentials if start <= c.end <= end]


def named_by(report: ReportedUse, credentials: tuple[Credential, ...]) -> list[Credential]:
    """The credentials whose end the reported expiry may mean: inside any of its windows (a date read both ways
    names the keys of either reading, never those between them)."""
    assert report.expiry_from is not None and report.expiry_to is not None
    windows = report.expiry_windows or ((report.expiry_from, report.expiry_to),)
    return [c for c in credentials if any(start <= c.end <= end for start, end in windows)]


def _made_by_rotator(credential: Credential) -> bool:
    return credential.rotation_id is not None


def _issued(credential: Credential) -> datetime:
    return credential.start if credential.start is not None else credential.end


def find_drift(report: ReportedUse, target: Target, app: Application, now: datetime) -> DriftFinding:
    """Compare one destination's report with the app registration: which credential it uses, and any drift."""
    problems: list[str] = []
    if report.app_id is not None and report.app_id.strip().lower() != target.app_id.lower():
        shown = report.app_id.strip()
        problems.append(f"Proofpoint's sync uses application {shown!r}, not the registered app {target.app_id}"
                        if shown else f"Proofpoint's sync names no application (the registered app is {target.app_id})")
        # Its expiry then belongs to that other app's key: nothing on this app can match it.
        return DriftFinding(report.destination, None, tuple(problems))
    uses: Credential | None = None
    keeps: tuple[str, ...] = ()
    if report.expiry_shown is not None:
        if report.expiry_from is None or report.expiry_to is None:
            problems.append(f"Proofpoint's secret_expiry is {report.expiry_shown}")
        else:
            uses, problem = _expiry_match(report, target, app, now)
            if problem:
                problems.append(problem)
                # A superseded key the drift names (the one still used, or among several candidates) is kept.
                found = matching(app.credentials, report.expiry_from, report.expiry_to)
                keeps = tuple(sorted(c.key_id for c in found if c.key_id in target.state.superseded))
    if failing(report, now):
        last = report.last_sync.isoformat() if report.last_sync else "never"
        problems.append(f"Proofpoint's sync is failing (last status {report.sync_status}, last successful: {last})")
    return DriftFinding(report.destination, uses, tuple(problems), keeps)


def failing(report: ReportedUse, now: datetime) -> bool:
    """Proofpoint's sync has not succeeded for two days: one failed sync (an outage) is not yet drift."""
    if report.sync_status is None or report.sync_status.strip().lower() in ("success", "succeeded", "ok"):
        return False
    return report.last_sync is None or now - report.last_sync > SYNC_FAILING_AFTER


def _expiry_match(
    report: ReportedUse, target: Target, app: Application, now: datetime
) -> tuple[Credential | None, str]:
    """The credential the reported expiry names, and the drift it shows ("" for none)."""
    found = named_by(report, app.credentials)
    shown = report.expiry_shown
    if not found:
        return None, (f"Proofpoint's secret expires {shown}, which matches no credential of app {target.app_id} "
                      "(a key of another app pasted by hand, or a key since removed)")
    current = target.state.current_key_id
    mine = next((c for c in found if c.key_id == current), None)
    if mine is not None:
        return (mine if len(found) == 1 else None), ""
    if not current:
        # The rotator has delivered nothing yet: whichever key Proofpoint holds is the starting one (one it can tell).
        return (found[0] if len(found) == 1 else None), ""
    if len(found) > 1:
        return None, _ambiguous(found, target, report, current)
    used = found[0]
    if used.key_id in target.state.superseded and not synced_since_push(target, report):
        # The key the last rotation replaced, shown until Proofpoint's own sync runs with the new one (its
        # secret_expiry moves with its sync): expected, not drift, and no proof of use (retirement must not wait on
        # it: its own sync proof decides). After that sync it is drift, and a key in use.
        return None, ""
    known = next((c for c in app.credentials if c.key_id == current), None)
    if used.key_id in target.state.superseded:
        return used, (f"Proofpoint's secret expires {shown}: key {used.key_id} that the last rotation replaced, still "
                      f"used after Proofpoint's sync (pasted back by hand, or the push did not take), not key "
                      f"{current}; it is kept until Proofpoint uses the new one")
    if _made_by_rotator(used):
        return used, (f"Proofpoint's secret expires {shown}: key {used.key_id} that the rotator replaced, not key "
                      f"{current} it delivered last")
    if known is not None and not used.expired(now) and _issued(used) > _issued(known):
        return used, ""  # a newer key someone else made, and Proofpoint uses it: adopted (foreign-credential)
    return used, (f"Proofpoint's secret expires {shown}: key {used.key_id} ('{used.display_name}'), which the "
                  f"rotator did not make (pasted by hand, or a portal FIX), not key {current} it delivered")


def _ambiguous(found: list[Credential], target: Target, report: ReportedUse, current: str) -> str:
    """Several credentials end within the expiry's reach and none is the rotator's key: which one Proofpoint uses
    cannot be told, but it is not the rotator's, so that is drift naming every candidate (a superseded one among them
    is then kept from retirement: shared/protocol/finish.py keeps a superseded key the drift names). Before
    Proofpoint's own sync since the push, a superseded key among them is the expected old one: not drift yet."""
    superseded = [c for c in found if c.key_id in target.state.superseded]
    if superseded and not synced_since_push(target, report):
        return ""
    names = ", ".join(f"{c.key_id} ('{c.display_name}')" for c in found)
    return (f"Proofpoint's secret expires {report.expiry_shown}, which matches keys {names} of app {target.app_id}, "
            f"none of them key {current} the rotator delivered; which one it uses cannot be told"
            + ("; the superseded one(s) among them are kept until this is resolved" if superseded else ""))


def synced_since_push(target: Target, report: ReportedUse) -> bool:
    """The destination's own sync has run since it was given the key in use: its acknowledgement says so, or the
    report itself shows a successful sync later than the moment the acknowledgement waits for (the retire step that
    records it may come later in the same pass)."""
    ack = target.state.acks.get(report.destination)
    if ack is None or ack.key_id != target.state.current_key_id:
        return False
    return ack.synced_at is not None or (
        ack.sync_after is not None and report.last_sync is not None and report.last_sync > ack.sync_after)


def drift_check_due(target: Target, now: datetime, every_days: int = DRIFT_CHECK_DAYS) -> bool:
    """Whether this idle target's destinations are read for drift in this pass: at its first assessment (a customer
    just onboarded is checked at once), then on its own day of the period (a stable hash of its key, so a daily pass
    reads one period's share of the fleet), or whenever the last check is older than the period and a day (a missed
    day)."""
    last = target.observed.drift_checked_at
    if last is None or now - last >= timedelta(days=every_days + 1):
        return True
    return now - last >= timedelta(hours=12) and \
        zlib.crc32(target.key.lower().encode()) % every_days == now.date().toordinal() % every_days


def drift_message(findings: dict[str, str]) -> str:
    """The alert's and status's sentence for a target's drift (destination: what differs)."""
    return "; ".join(f"{name}: {text}" for name, text in sorted(findings.items()))
