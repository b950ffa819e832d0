"""Stage idle, a superseded key waiting: what Entra ID's sign-in records say about retiring it (shared/sign_in_proof).

Read only while a superseded key of the app waits for retirement (the grace period and after): a healthy target
costs nothing. The evidence read is kept on the row (the status documents show it); a tenant that refuses the read
is told once (a notice) and the retirement falls back to the destinations' own proof, except for the keys an open
hold of the last readable log keeps (old-key-still-used: seen in use; new-key-unused: the new key unused): kept.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from shared import verify_probe
from shared.domain import Application, SignInEvidence
from shared.errors import RotationError
from shared.protocol.context import Advance
from shared.sign_in_proof import (
    EVIDENCE_UNAVAILABLE,
    EVIDENCE_UNREADABLE,
    HOLDS,
    REPORT_REREAD,
    EvidenceVerdict,
    fallback_basis,
    judge,
    pushed_at,
    quiet_period,
    report_verdict,
    unreadable,
    window_start,
)

NO_EVIDENCE = EvidenceVerdict(allows=True)
REFUSAL_REWRITTEN = timedelta(days=1)  # an unchanged refusal is written to the row at most this often


async def sign_in_proof(run: Advance, app: Application) -> EvidenceVerdict:
    """The sign-in evidence's verdict on this target's superseded keys (`allows` True with no evidence to wait for).

    A read that fails (throttled, Graph down) keeps every superseded key this pass and is recorded as an event; a
    verdict that holds the old key for a human (old-key-still-used, new-key-unused) is alerted on entering it,
    before the row records it, so a crash in between alerts again rather than never.
    """
    s, o = run.target.state, run.target.observed
    present = {c.key_id for c in app.credentials}
    waiting = [k for k in s.superseded if k in present]
    log = run.ports.sign_ins
    if not waiting:  # a healthy target (the daily scan's most): decided from the row, nothing read
        if o.evidence_hold or o.sign_ins_unreadable_since:  # the keys it held went (retired, removed by hand)
            await run.save(run.target.with_observed(evidence_hold="", evidence_kept=(), sign_ins_unreadable_since=None))
        return NO_EVIDENCE
    if not s.current_key_id or log is None:
        return replace(NO_EVIDENCE, basis=_fallback(run))
    now = run.now()
    quiet = quiet_period(run.target.policy, run.config.retire_quiet)
    finished = s.retire_after - run.config.retire_grace if s.retire_after else None
    pushed = pushed_at(s, finished) or now
    try:
        evidence = await log.credential_sign_ins(run.target.tenant_id, app.app_id, window_start(pushed, now, quiet),
                                                 verify_probe.recorded(s.probes))
    except RotationError as error:
        await run.event("sign-ins", "unreadable", error)
        since = o.sign_ins_unreadable_since or now
        if unreadable(since, now):
            # Every pass for about a day: every old key is kept meanwhile, so a human must look. Alerted on each such
            # pass (the alert book tells it once a day) before the row records it; resolved by the next read.
            await run.alert(EVIDENCE_UNREADABLE, f"the sign-in log of tenant {run.target.tenant_id} could not be "
                            f"read on any pass since {since.isoformat()} ({error.code}); the superseded key(s) "
                            f"{', '.join(waiting)} are kept until it can", code=error.code)
        if since != o.sign_ins_unreadable_since:
            await run.save(run.target.with_observed(sign_ins_unreadable_since=since))
        return EvidenceVerdict(allows=False)
    evidence = await _with_report(run, app, evidence, waiting)
    grace_over = s.retire_after is not None and now >= s.retire_after
    if not evidence.available:
        if o.sign_ins is None or o.sign_ins.available:
            # A notice, once: the tenant's answer is kept on the row, so the next read that is refused alike is quiet.
            await run.event("sign-ins", "unavailable", detail=f"{evidence.code}: {evidence.reason}")
            await run.alert(EVIDENCE_UNAVAILABLE, f"sign-in evidence is not available ({evidence.code}): "
                            f"{evidence.reason}; retirement relies on the destinations' own proof",
                            code=evidence.code)
        # An open hold is the last readable log's word against the destinations' own: old-key-still-used (these keys
        # were in use after the push) and new-key-unused (nothing signed in with the new key a day after the push, so
        # whatever syncs still uses an old one, whatever Proofpoint's last_successful_sync says). Losing the log
        # proves nothing about either: the keys it keeps (and its open alert) stay until a readable log shows them
        # quiet or the new key used, or a human removes them by hand. The credential activity report, where the
        # tenant gives it, may keep others; the rest fall back to the destinations' own proof.
        held = _held(o.evidence_hold, o.evidence_kept, waiting)
        by_report = report_verdict(evidence, [k for k in waiting if k not in held], pushed, now, quiet, grace_over)
        hold, kept = (o.evidence_hold, held) if held else (by_report.hold, by_report.held)
        await _entering(run, hold)
        # The same refusal as the row's, recorded less than a day ago, leaves the row as it is: a replaced key waits at
        # every pass (the resume timer's quarter hours), and rewriting the row for a new `readAt` each time costs a
        # write a pass for nothing a person reads differently. The log is still asked at every pass (a licence or
        # consent granted is seen at once); a different answer, or a day later, is written.
        alike = o.sign_ins is not None and not o.sign_ins.available and now - o.sign_ins.read_at < REFUSAL_REWRITTEN \
            and (o.sign_ins.code, o.sign_ins.reason, o.sign_ins.reported) == (evidence.code, evidence.reason,
                                                                              evidence.reported)
        updated = run.target.with_observed(sign_ins=o.sign_ins if alike else evidence, evidence_hold=hold,
                                           evidence_kept=tuple(sorted(kept)), sign_ins_unreadable_since=None)
        if updated.observed != o:
            await run.save(updated)
        return EvidenceVerdict(allows=True, keep=held | by_report.keep, hold=hold, basis=_fallback(run), held=kept)
    verdict = judge(evidence, s.current_key_id, waiting, pushed, now, quiet, run.config.sync_window, grace_over,
                    probe_known=s.current_key_id in s.probes)
    await _entering(run, verdict.hold)
    await run.save(run.target.with_observed(sign_ins=evidence, evidence_hold=verdict.hold,
                                            evidence_kept=tuple(sorted(verdict.held)),
                                            sign_ins_unreadable_since=None))
    return verdict


async def _entering(run: Advance, hold: str) -> None:
    """Alert a hold (old-key-still-used, new-key-unused) on entering it, not again while the row holds it."""
    condition = hold.split(":", 1)[0]
    if hold and not run.target.observed.evidence_hold.startswith(condition + ":"):
        await run.event("sign-ins", condition, detail=hold)
        await run.alert(condition, hold.split(": ", 1)[1])


async def _with_report(run: Advance, app: Application, evidence: SignInEvidence,
                       waiting: list[str]) -> SignInEvidence:
    """The evidence with Entra's credential activity report beside it, read only where the log is silent on an old
    key (refused, or no sign-in of it in the window). The report can only keep a key: a failed read is an event and
    the log's word stands."""
    log = run.ports.sign_ins
    kept = run.target.observed.sign_ins.reported if run.target.observed.sign_ins else None
    if log is None or (evidence.available and all(k in evidence.credentials for k in waiting)):
        # Not asked; the last one read stays beside the evidence (the customer view's last sign-ins beyond the log).
        return replace(evidence, reported=kept)
    if kept is not None and run.now() - kept.read_at < REPORT_REREAD:
        # A daily roll-up: read at most once a day; a refusal (a permission or a licence missing) alike, as a grant
        # is not awaited by the hour.
        return replace(evidence, reported=kept)
    try:
        report = await log.credential_report(run.target.tenant_id, app.app_id)
    except RotationError as error:
        await run.event("sign-ins", "report unreadable", error)
        return evidence
    return replace(evidence, reported=report)


def _held(hold: str, kept: tuple[str, ...], waiting: list[str]) -> frozenset[str]:
    """The superseded keys an open hold (old-key-still-used, new-key-unused) keeps (its structured field), still
    waiting."""
    if not hold.startswith(tuple(f"{condition}:" for condition in HOLDS)):
        return frozenset()
    return frozenset(k for k in waiting if k in kept)


def _fallback(run: Advance) -> str:
    """The audit sentence of a retirement the sign-in log did not decide: the destinations' syncs it relied on."""
    s = run.target.state
    synced: list[tuple[str, datetime]] = []
    for name, ack in s.acks.items():
        if ack.key_id == s.current_key_id and ack.synced_at is not None:
            synced.append((name, ack.synced_at))
    return fallback_basis(run.target.observed.sign_ins, synced)
