"""Retirement on Entra's sign-in records, on plain data: each rule of shared/sign_in_proof.py and its edges."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from shared.domain import Ack, CredentialSignIns, Policy, RotationState, SignInEvidence
from shared.sign_in_proof import (
    LOG_DELAY,
    LOG_RETENTION,
    NEW_KEY_UNUSED,
    OLD_KEY_STILL_USED,
    SELF_SIGN_IN_MARGIN,
    EvidenceVerdict,
    fallback_basis,
    judge,
    pushed_at,
    quiet_period,
    window_start,
)

PUSH = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
NEW, OLD, OLDER = "11111111-1111-1111-1111-111111111111", "22222222-2222-2222-2222-222222222222", \
    "33333333-3333-3333-3333-333333333333"
HOUR, DAY = timedelta(hours=1), timedelta(hours=24)
QUIET, WINDOW = DAY, DAY


def evidence(*records: CredentialSignIns, read_at: datetime = PUSH + 2 * DAY) -> SignInEvidence:
    return SignInEvidence(True, read_at, PUSH - DAY, {r.key_id: r for r in records})


def signed(key: str, first: datetime | None, last: datetime | None = None, ip: str | None = None,
           resource: str | None = None) -> CredentialSignIns:
    return CredentialSignIns(key, first, last or first, ip, resource)


def verdict(*records: CredentialSignIns, now: datetime = PUSH + 2 * DAY, olds: tuple[str, ...] = (OLD,),
            quiet: timedelta = QUIET, grace_over: bool = True) -> EvidenceVerdict:
    return judge(evidence(*records, read_at=now), NEW, olds, PUSH, now, quiet, WINDOW, grace_over)


def test_the_new_key_counts_only_once_it_signed_in_after_the_push_and_the_margin() -> None:
    # The verify probe signs in with the new key before the push: recorded, never proof.
    assert not verdict(signed(NEW, PUSH - timedelta(seconds=20))).allows
    # Exactly at the push, and exactly at the margin's end (Entra's clock may run ahead of ours): not yet.
    assert not verdict(signed(NEW, PUSH)).allows
    assert not verdict(signed(NEW, PUSH + SELF_SIGN_IN_MARGIN)).allows
    assert verdict(signed(NEW, PUSH + SELF_SIGN_IN_MARGIN + timedelta(seconds=1))).allows
    # The probe first, Proofpoint's sync later: the later sign-in proves it, and the audit names it.
    both = verdict(signed(NEW, PUSH - timedelta(seconds=20), PUSH + 3 * HOUR))
    assert both.allows and (PUSH + 3 * HOUR).isoformat() in both.basis


def test_a_probe_stamped_after_the_push_by_entras_skewed_clock_is_not_proof() -> None:
    skewed_probe = PUSH + timedelta(minutes=3)  # our probe, seconds before the push, in a clock 3 minutes ahead
    assert not verdict(signed(NEW, skewed_probe)).allows


def test_no_sign_in_ever_keeps_the_old_key_and_says_so_only_after_the_window_and_the_grace() -> None:
    inside = verdict(now=PUSH + 3 * HOUR)
    assert not inside.allows and inside.hold == "" and inside.basis == ""
    before_grace = verdict(now=PUSH + 2 * DAY, grace_over=False)
    assert not before_grace.allows and before_grace.hold == ""
    late = verdict(now=PUSH + WINDOW)
    assert not late.allows and late.hold.startswith(f"{NEW_KEY_UNUSED}: ") and NEW in late.hold


def test_a_sign_in_still_inside_the_log_delay_is_simply_not_there_yet() -> None:
    # Proofpoint synced ten minutes ago; the log shows it minutes later: the read sees nothing, so nothing goes.
    seen = verdict(now=PUSH + 2 * HOUR)
    assert not seen.allows and not seen.hold
    assert verdict(signed(NEW, PUSH + HOUR + 50 * timedelta(minutes=1)), now=PUSH + 2 * HOUR).allows


def test_an_old_key_that_signed_in_within_the_quiet_period_is_kept() -> None:
    now = PUSH + 30 * HOUR
    recent = verdict(signed(NEW, PUSH + HOUR), signed(OLD, PUSH - 10 * HOUR, now - 2 * HOUR), now=now)
    assert recent.allows and recent.keep == {OLD}
    # The log lags up to LOG_DELAY: a sign-in just over one quiet period ago may be the one before a use the read
    # cannot show yet (a daily job, a minute before the timer), so it still keeps the key.
    for late in (QUIET, QUIET + LOG_DELAY - timedelta(seconds=1)):
        inside = verdict(signed(NEW, PUSH + HOUR), signed(OLD, PUSH - DAY, now - late), now=now)
        assert inside.keep == {OLD}, late
    # Its last sign-in one quiet period plus the log's delay ago: quiet.
    edge = verdict(signed(NEW, PUSH + HOUR), signed(OLD, PUSH - DAY, now - QUIET - LOG_DELAY), now=now)
    assert edge.keep == frozenset() and edge.allows
    assert f"{OLD} last at {(now - QUIET - LOG_DELAY).isoformat()}" in edge.basis


def test_an_old_key_used_since_the_push_after_the_grace_raises_old_key_still_used_naming_ip_and_resource() -> None:
    now = PUSH + 30 * HOUR
    used = verdict(signed(NEW, PUSH + HOUR), signed(OLD, PUSH - DAY, now - HOUR, "203.0.113.7", "Microsoft Graph"),
                   now=now)
    assert used.keep == {OLD} and used.hold.startswith(f"{OLD_KEY_STILL_USED}: ")
    assert "203.0.113.7" in used.hold and "Microsoft Graph" in used.hold and OLD in used.hold
    # In the grace period the same use keeps the key without an alarm (the grace is for stragglers).
    assert verdict(signed(OLD, PUSH - DAY, now - HOUR), now=now, grace_over=False).hold == ""
    # Without an address or resource in the log the message still names the key and the time.
    bare = verdict(signed(OLD, PUSH - DAY, now - HOUR), now=now)
    assert bare.hold.startswith(OLD_KEY_STILL_USED) and (now - HOUR).isoformat() in bare.hold
    # Old-key-still-used takes precedence over new-key-unused (the new key never signed in here): it is the cause.
    assert verdict(now=now).hold.startswith(NEW_KEY_UNUSED) and NEW_KEY_UNUSED not in bare.hold


def test_an_old_key_used_just_before_the_push_waits_quietly_when_the_quiet_period_is_longer_than_the_grace() -> None:
    now = PUSH + 30 * HOUR
    waiting = verdict(signed(NEW, PUSH + HOUR), signed(OLD, PUSH - HOUR), now=now, quiet=48 * HOUR)
    assert waiting.keep == {OLD} and waiting.hold == ""
    # A straggler inside the margin right after the push (a sync that was running) is not "still used" either.
    straggler = verdict(signed(NEW, PUSH + HOUR), signed(OLD, PUSH + timedelta(minutes=2)), now=now, quiet=48 * HOUR)
    assert straggler.keep == {OLD} and straggler.hold == ""


def test_each_superseded_key_is_judged_on_its_own() -> None:
    now = PUSH + 30 * HOUR
    mixed = verdict(signed(NEW, PUSH + HOUR), signed(OLD, now - HOUR), signed(OLDER, PUSH - 5 * DAY),
                    now=now, olds=(OLD, OLDER))
    assert mixed.keep == {OLD} and mixed.allows
    assert OLD in mixed.hold and OLDER not in mixed.hold and f"{OLDER} last at" in mixed.basis


def test_where_the_read_starts_and_when_the_push_was() -> None:
    now = PUSH + 2 * DAY
    assert window_start(PUSH, now, QUIET) == PUSH
    assert window_start(PUSH, now, 72 * HOUR) == now - 72 * HOUR - LOG_DELAY
    assert window_start(PUSH - 60 * DAY, now, QUIET) == now - LOG_RETENTION
    state = RotationState(current_key_id=NEW, acks={
        "proofpoint": Ack(NEW, PUSH + timedelta(seconds=2)), "portal": Ack(NEW, PUSH),
        "old": Ack(OLD, PUSH - 90 * DAY)})
    assert pushed_at(state, PUSH + HOUR) == PUSH
    assert pushed_at(RotationState(current_key_id=NEW), PUSH + HOUR) == PUSH + HOUR
    assert quiet_period(Policy(), DAY) == DAY and quiet_period(Policy(retire_quiet_hours=72), DAY) == 72 * HOUR


def test_the_audit_names_the_fallback_and_what_it_relied_on() -> None:
    refused = SignInEvidence(False, PUSH, PUSH, code="Authentication_RequestFromNonPremiumTenantOrB2CTenant",
                             reason="no licence")
    text = fallback_basis(refused, [("proofpoint", PUSH + HOUR)])
    assert "Authentication_RequestFromNonPremiumTenantOrB2CTenant" in text
    assert f"proofpoint sync at {(PUSH + HOUR).isoformat()}" in text
    assert fallback_basis(None, []).endswith("every destination's acknowledgement")
