"""The pure decisions of issue 9: a foreign credential is not fought; shorter lifetimes under a tenant policy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from shared.domain import (
    Application,
    AssessmentStatus,
    Credential,
    RotationState,
    assess,
    credential_display_name,
    retirement_plan,
    shorter_lifetimes,
)

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
MINE = credential_display_name("0123456789abcdef0123456789abcdef")


def cred(key: str, started_days_ago: float, days_left: float, name: str = "by hand") -> Credential:
    return Credential(key, name, NOW - timedelta(days=started_days_ago), NOW + timedelta(days=days_left))


def app(*credentials: Credential) -> Application:
    return Application("obj", "app", "Proofpoint Essentials", credentials)


def test_a_newer_credential_made_elsewhere_is_taken_as_the_one_in_use() -> None:
    ours = cred("ours", 100, 80, MINE)
    fix = cred("portal-fix", 2, 700, "Vircom FIX")
    result = assess(app(ours, fix), NOW, 30, known_key_id="ours")
    assert result.status is AssessmentStatus.FOREIGN_CREDENTIAL
    assert result.foreign == fix and result.current == fix and result.days_left == 700
    assert result.replaces == ("ours",)
    assert not result.status.needs_rotation


def test_a_foreign_credential_that_fixed_our_expired_one_stops_the_rotation() -> None:
    """The portal FIXed an expired secret: the rotator does not rotate over it."""
    ours = cred("ours", 200, -3, MINE)
    fix = cred("portal-fix", 1, 365, "")
    result = assess(app(ours, fix), NOW, 30, known_key_id="ours")
    assert result.status is AssessmentStatus.FOREIGN_CREDENTIAL and result.days_left == 365


def test_a_due_foreign_credential_is_rotated_but_never_superseded() -> None:
    ours = cred("ours", 300, -10, MINE)
    fix = cred("fix", 100, 12, "by a person")
    result = assess(app(ours, fix), NOW, 30, known_key_id="ours")
    assert result.status is AssessmentStatus.DUE and result.current == fix and result.days_left == 12
    assert result.replaces == ("ours",), "a rotation supersedes only the rotator's own credential"


def test_older_expired_or_rotator_made_credentials_are_not_foreign() -> None:
    ours = cred("ours", 10, 170, MINE)
    older = cred("older", 300, 400, "the original, still live")
    expired = cred("expired-new", 1, -1, "made and already expired")
    other_rotation = cred("other-rotation", 1, 180, credential_display_name("f" * 32))
    result = assess(app(ours, older, expired, other_rotation), NOW, 30, known_key_id="ours")
    assert result.status is AssessmentStatus.HEALTHY and result.current == ours and result.foreign is None


def test_no_foreign_detection_before_the_rotator_delivered_anything() -> None:
    first = cred("first", 300, 20, "by hand")
    second = cred("second", 1, 700, "by hand, newer")
    result = assess(app(first, second), NOW, 30)
    assert result.status is AssessmentStatus.HEALTHY and result.current == second and result.foreign is None


def test_the_foreign_credential_is_never_removed() -> None:
    ours = cred("ours", 100, 80, MINE)
    fix = cred("fix", 2, 700, "Vircom FIX")
    state = RotationState(current_key_id="ours", superseded=(), retire_after=NOW - timedelta(days=1))
    removals, others = retirement_plan((ours, fix), state, NOW, remove_other_expired=True)
    assert removals == [] and others == [fix]


def test_shorter_lifetimes_step_down_but_not_below_the_renew_window_and_margin() -> None:
    assert shorter_lifetimes(180, 30) == [90, 60]
    assert shorter_lifetimes(180, 20) == [90, 60, 30]
    assert shorter_lifetimes(730, 7) == [365, 180, 90, 60, 30, 14]
    assert shorter_lifetimes(90, 60) == []
    assert all(d >= 30 + 7 for d in shorter_lifetimes(400, 30))
