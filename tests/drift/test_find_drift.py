"""Drift between Proofpoint's report and the app registration (shared/drift.py, the adapter's reading of
`secret_expiry`): each case of drift, the adoption of a newer key Proofpoint uses, and no false drift on a healthy
target however the expiry is written."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared.destinations.proofpoint import expiry_window, reported_use
from shared.domain import Ack, Application, AssessmentStatus, Credential, RotationState, Target, assess
from shared.drift import DRIFT_CHECK_DAYS, drift_check_due, find_drift

NOW = datetime(2026, 12, 6, 9, 30, tzinfo=UTC)
TENANT, APP = "11111111-1111-1111-1111-111111111111", "22222222-2222-2222-2222-222222222222"
OTHER_APP = "33333333-3333-3333-3333-333333333333"
ROTATION = "0123456789abcdef0123456789abcdef"
# The rotator's key (made 30 days ago), and an older hand-made one still live.
MINE = Credential("k-mine", f"sync-secret-rotator rotation {ROTATION}", NOW - timedelta(days=30),
                  datetime(2027, 5, 5, 17, 42, 11, 123000, tzinfo=UTC))
HAND_OLD = Credential("k-hand", "created by hand", NOW - timedelta(days=300),
                      datetime(2027, 2, 1, 8, 0, tzinfo=UTC))


def target(current: str = "k-mine") -> Target:
    return Target(TENANT, APP, "Contoso", state=RotationState(current_key_id=current))


def app(*credentials: Credential) -> Application:
    return Application("obj", APP, "Proofpoint Essentials", credentials)


def settings(expiry: object = None, app_id: object = APP, **more: object) -> dict[str, object]:
    out: dict[str, object] = {"primary_domain": "contoso.com", "application_id": app_id, "ad_key": "********",
                              "last_successful_sync": (NOW - timedelta(hours=3)).isoformat(),
                              "last_sync_status": "success", **more}
    if expiry is not None:
        out["secret_expiry"] = expiry
    return out


def drift_of(raw: dict[str, object], *credentials: Credential, current: str = "k-mine") -> tuple[str | None, str]:
    finding = find_drift(reported_use("proofpoint", raw), target(current), app(*credentials), NOW)
    return (finding.uses.key_id if finding.uses else None), "; ".join(finding.problems)


# How Proofpoint may write the rotator's key's expiry (2027-05-05T17:42:11.123Z): none of them is drift.
HEALTHY_FORMATS = [
    "2027-05-05T17:42:11.123Z", "2027-05-05T17:42:11Z", "2027-05-05T17:42:11+00:00", "2027-05-05T17:42Z",
    "2027-05-05T13:42:11-04:00", "2027-05-06T03:12:11+09:30",  # the same instant in other zones
    "2027-05-05", "2027-05-06",  # the date in UTC, and in a zone east of UTC (Sydney: already the 6th)
    "2027-05-05T17:42:11", "2027-05-05T09:42:11", "2027-05-06T07:42:11",  # local times without an offset
]


@pytest.mark.parametrize("shown", HEALTHY_FORMATS)
def test_the_rotators_key_however_written_is_no_drift(shown: str) -> None:
    used, problems = drift_of(settings(shown), MINE, HAND_OLD)
    assert problems == ""
    assert used == "k-mine"


def test_an_expiry_one_day_off_is_not_the_key_when_an_offset_says_so() -> None:
    # With an offset the instant is known: a day later is another key's (here: none).
    _, problems = drift_of(settings("2027-05-06T17:42:11Z"), MINE, HAND_OLD)
    assert "matches no credential" in problems


def test_proofpoint_using_another_application_is_drift() -> None:
    used, problems = drift_of(settings("2027-05-05", app_id=OTHER_APP), MINE, HAND_OLD)
    assert used is None
    assert OTHER_APP in problems and APP in problems


def test_no_application_in_proofpoint_is_drift() -> None:
    used, problems = drift_of(settings("2027-05-05", app_id=""), MINE)
    assert used is None and "names no application" in problems and APP in problems


def test_the_same_application_in_another_case_is_no_drift() -> None:
    assert drift_of(settings("2027-05-05", app_id=f" {APP.upper()} "), MINE) == ("k-mine", "")


def test_an_application_id_that_is_not_a_guid_is_named_never_shown() -> None:
    pasted = "Xy7~Q.aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789"
    _, problems = drift_of(settings("2027-05-05", app_id=pasted), MINE)
    assert "not an application id" in problems and pasted not in problems


def test_an_unknown_secret_matching_no_credential_is_drift() -> None:
    # A key of another app pasted by hand, or a key since removed: its expiry is nobody's on this app.
    used, problems = drift_of(settings("2026-11-30T10:00:00Z"), MINE, HAND_OLD)
    assert used is None
    assert "2026-11-30T10:00:00Z" in problems and "matches no credential" in problems


def test_a_hand_pasted_older_key_is_drift() -> None:
    used, problems = drift_of(settings("2027-02-01T08:00:00Z"), MINE, HAND_OLD)
    assert used == "k-hand"
    assert "k-hand" in problems and "did not make" in problems


def test_a_key_the_rotator_replaced_still_in_proofpoint_is_drift() -> None:
    old = Credential("k-old-mine", "sync-secret-rotator rotation " + "f" * 32, NOW - timedelta(days=200),
                     NOW + timedelta(days=10))
    used, problems = drift_of(settings((NOW + timedelta(days=10)).isoformat()), MINE, old)
    assert used == "k-old-mine" and "replaced" in problems


def test_the_replaced_key_until_proofpoints_sync_is_not_drift_after_it_is() -> None:
    # Pushed, not yet synced: Proofpoint's secret_expiry still names the key the rotation replaced (HAND_OLD).
    waiting = target().with_state(superseded=("k-hand",), acks={"proofpoint": Ack("k-mine", NOW - timedelta(hours=2),
                                                                               sync_after=NOW - timedelta(hours=2))})
    report = reported_use("proofpoint", settings("2027-02-01T08:00:00Z"))
    before = find_drift(report, waiting, app(MINE, HAND_OLD), NOW)
    assert before.problems == () and before.uses is None, "expected, and no proof of use: retirement does not wait"
    synced = waiting.with_state(acks={"proofpoint": Ack("k-mine", NOW - timedelta(hours=2),
                                                        sync_after=NOW - timedelta(hours=2),
                                                        synced_at=NOW - timedelta(hours=1))})
    after = find_drift(report, synced, app(MINE, HAND_OLD), NOW)
    [problem] = after.problems
    assert "k-hand" in problem and after.uses == HAND_OLD, "in use: retirement keeps it"
    # The report itself shows a sync after the push (the retire step has not recorded it yet): the same verdict.
    shown = reported_use("proofpoint", settings("2027-02-01T08:00:00Z",
                                                last_successful_sync=(NOW - timedelta(minutes=30)).isoformat()))
    assert find_drift(shown, waiting, app(MINE, HAND_OLD), NOW).uses == HAND_OLD


def test_a_newer_key_proofpoint_uses_is_adopted_not_drift() -> None:
    fix = Credential("k-fix", "Vircom Portal FIX", NOW - timedelta(days=2), datetime(2028, 12, 1, tzinfo=UTC))
    used, problems = drift_of(settings("2028-12-01"), MINE, fix)
    assert (used, problems) == ("k-fix", "")
    found = assess(app(MINE, fix), NOW, 30, "k-mine", used_key_id=used or "")
    assert found.status is AssessmentStatus.FOREIGN_CREDENTIAL and found.foreign == fix
    assert found.replaces == ("k-mine",)


def test_a_newer_key_proofpoint_does_not_use_is_not_adopted() -> None:
    # Someone made a key for another integration; Proofpoint's expiry names the rotator's: the rotator's decides.
    other = Credential("k-other", "Backup tool", NOW - timedelta(days=2), datetime(2028, 12, 1, tzinfo=UTC))
    assert assess(app(MINE, other), NOW, 30, "k-mine").status is AssessmentStatus.FOREIGN_CREDENTIAL
    used, problems = drift_of(settings("2027-05-05"), MINE, other)
    assert (used, problems) == ("k-mine", "")
    found = assess(app(MINE, other), NOW, 30, "k-mine", used_key_id="k-mine")
    assert found.status is AssessmentStatus.HEALTHY and found.foreign is None and found.current == MINE


def test_before_the_first_rotation_any_live_key_proofpoint_uses_is_no_drift() -> None:
    assert drift_of(settings("2027-02-01"), HAND_OLD, current="") == ("k-hand", "")


def test_two_keys_within_the_expirys_reach_cannot_be_told_apart_and_are_not_drift() -> None:
    twin = Credential("k-twin", "created by hand", NOW - timedelta(days=1), MINE.end + timedelta(hours=5))
    assert drift_of(settings("2027-05-05"), MINE, twin) == (None, "")
    # Before the first rotation, either may be the starting key: no drift.
    assert drift_of(settings("2027-05-05"), MINE, twin, current="") == (None, "")


def test_several_matching_keys_none_the_rotators_is_drift_naming_each() -> None:
    one = Credential("k-a", "created by hand", NOW - timedelta(days=300), datetime(2027, 2, 1, 8, tzinfo=UTC))
    two = Credential("k-b", "Vircom Portal FIX", NOW - timedelta(days=2), datetime(2027, 2, 1, 20, tzinfo=UTC))
    three = Credential("k-c", "created by hand", NOW - timedelta(days=100), datetime(2027, 2, 1, 23, tzinfo=UTC))
    for keys in ((one, two), (one, two, three), (two, three)):
        used, problems = drift_of(settings("2027-02-01"), MINE, *keys)
        assert used is None and "cannot be told" in problems and "k-mine" in problems
        assert all(k.key_id in problems for k in keys)


def test_several_matching_keys_with_a_superseded_one_are_drift_after_the_sync_only() -> None:
    one = Credential("k-a", "created by hand", NOW - timedelta(days=300), datetime(2027, 2, 1, 8, tzinfo=UTC))
    two = Credential("k-b", "created by hand", NOW - timedelta(days=200), datetime(2027, 2, 1, 20, tzinfo=UTC))
    ack = Ack("k-mine", NOW - timedelta(hours=2), sync_after=NOW - timedelta(hours=2))
    waiting = target().with_state(superseded=("k-a",), acks={"proofpoint": ack})
    report = reported_use("proofpoint", settings("2027-02-01"))
    assert find_drift(report, waiting, app(MINE, one, two), NOW).problems == (), "the old key until the sync"
    synced = waiting.with_state(acks={"proofpoint": Ack("k-mine", ack.at, sync_after=ack.sync_after,
                                                        synced_at=NOW - timedelta(hours=1))})
    [problem] = find_drift(report, synced, app(MINE, one, two), NOW).problems
    assert "k-a" in problem and "k-b" in problem and "kept" in problem


def test_a_failing_sync_for_two_days_is_drift_one_failure_is_not() -> None:
    recent = settings("2027-05-05", last_sync_status="failed",
                      last_successful_sync=(NOW - timedelta(hours=30)).isoformat())
    assert drift_of(recent, MINE)[1] == ""
    stale = settings("2027-05-05", last_sync_status="failed",
                     last_successful_sync=(NOW - timedelta(days=3)).isoformat())
    assert "sync is failing" in drift_of(stale, MINE)[1]


def test_no_expiry_and_no_app_id_shown_is_no_drift_and_no_proof() -> None:
    raw: dict[str, object] = {"primary_domain": "contoso.com", "ad_key": "********"}
    assert drift_of(raw, MINE) == (None, "")


def test_an_expiry_that_is_not_a_date_is_named_never_shown() -> None:
    used, problems = drift_of(settings("soon-ish secret 8Q~abc"), MINE)
    assert used is None and "not a date" in problems and "8Q~" not in problems


@pytest.mark.parametrize(("shown", "inside", "outside"), [
    ("2027-05-05", datetime(2027, 5, 4, 10, 1, tzinfo=UTC), datetime(2027, 5, 6, 12, 1, tzinfo=UTC)),
    ("2027-05-05T12:00:00", datetime(2027, 5, 4, 22, 0, tzinfo=UTC), datetime(2027, 5, 6, 0, 2, tzinfo=UTC)),
    ("2027-05-05T12:00:00+02:00", datetime(2027, 5, 5, 10, 0, 30, tzinfo=UTC),
     datetime(2027, 5, 5, 12, 0, tzinfo=UTC)),
])
def test_the_expiry_window_of_each_format(shown: str, inside: datetime, outside: datetime) -> None:
    window = expiry_window(shown)
    assert window is not None
    assert window[0] <= inside <= window[1]
    assert not window[0] <= outside <= window[1]
    assert window[0].tzinfo is not None and window[0].utcoffset() == window[1].utcoffset() == timedelta(0)


def test_each_target_is_checked_at_once_then_once_a_period_on_its_own_day() -> None:
    fresh = [Target(f"{i:08d}-0000-0000-0000-000000000000", APP) for i in range(700)]
    assert all(drift_check_due(t, NOW) for t in fresh), "a customer never checked is checked at its first pass"
    targets = [t.with_observed(drift_checked_at=NOW - timedelta(days=1)) for t in fresh]
    days = [NOW + timedelta(days=d) for d in range(DRIFT_CHECK_DAYS)]
    per_day = [sum(drift_check_due(t, day) for t in targets) for day in days]
    assert sum(per_day) == len(targets), "each target exactly once in a period"
    assert max(per_day) < 2 * len(targets) / DRIFT_CHECK_DAYS, "spread over the period"
    target = targets[0]
    [own_day] = [day for day in days if drift_check_due(target, day)]
    checked = target.with_observed(drift_checked_at=own_day)
    first_again = next(d for d in range(1, 3 * DRIFT_CHECK_DAYS)
                       if drift_check_due(checked, own_day + timedelta(days=d)))
    assert first_again == DRIFT_CHECK_DAYS, "a period later, on its own day again"
    assert not drift_check_due(checked, own_day + timedelta(hours=2)), "not twice on its day"
    missed = target.with_observed(drift_checked_at=own_day - timedelta(days=DRIFT_CHECK_DAYS + 1))
    assert drift_check_due(missed, own_day + timedelta(days=1)), "a missed day is caught up"
