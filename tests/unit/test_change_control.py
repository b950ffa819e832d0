"""Change control's pure decision (shared/change_control.py) on plain data: windows in several time zones, the
daylight-saving gap and overlap, a window across midnight and across a DST change, the force day, never force, the
approval states; and the policy document's validation."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.change_control import (
    Approval,
    ApprovalStatus,
    ChangeControl,
    InvalidChangeControl,
    Mode,
    Verdict,
    Window,
    decide,
    document,
    force_problem,
    in_window,
    next_window,
    parse,
)

BERLIN = "Europe/Berlin"  # CET/CEST: spring forward 2026-03-29 02:00 -> 03:00, fall back 2026-10-25 03:00 -> 02:00
NEW_YORK = "America/New_York"  # EST/EDT: spring forward 2026-03-08 02:00 -> 03:00, fall back 2026-11-01 02:00 -> 01:00
EVERY_DAY = frozenset(range(7))
FAR = datetime(2027, 6, 1, tzinfo=UTC)  # an expiry far away: never forced in these tests


def window(zone: str, start: str, end: str, days: frozenset[int] = EVERY_DAY, **extra: object) -> ChangeControl:
    h1, m1 = map(int, start.split(":"))
    h2, m2 = map(int, end.split(":"))
    return ChangeControl(Mode.WINDOW, zone, (Window(days, time(h1, m1), time(h2, m2)),), **extra)  # type: ignore[arg-type]


def local(zone: str, *parts: int, fold: int = 0) -> datetime:
    return datetime(*parts, tzinfo=ZoneInfo(zone), fold=fold)  # type: ignore[misc]


def test_auto_and_no_policy_allow_at_once() -> None:
    now = datetime(2026, 12, 6, 12, tzinfo=UTC)
    assert decide(None, now, FAR).verdict is Verdict.ALLOWED
    assert decide(ChangeControl(Mode.AUTO), now, FAR).verdict is Verdict.ALLOWED


@pytest.mark.parametrize(("zone", "inside", "outside"), [
    # 22:00-02:00 local in three zones: the same UTC instant is inside for one, outside for another.
    (BERLIN, datetime(2026, 12, 7, 0, 30, tzinfo=UTC), datetime(2026, 12, 7, 2, 30, tzinfo=UTC)),
    (NEW_YORK, datetime(2026, 12, 7, 5, 30, tzinfo=UTC), datetime(2026, 12, 7, 0, 30, tzinfo=UTC)),
    ("Australia/Sydney", datetime(2026, 12, 7, 12, 30, tzinfo=UTC), datetime(2026, 12, 7, 5, 30, tzinfo=UTC)),
])
def test_a_window_is_read_on_the_customers_wall_clock(zone: str, inside: datetime, outside: datetime) -> None:
    control = window(zone, "22:00", "02:00")
    assert decide(control, inside, FAR).verdict is Verdict.ALLOWED
    waiting = decide(control, outside, FAR)
    assert waiting.verdict is Verdict.WAITING and waiting.waiting_for == "window"
    assert waiting.next_window is not None
    assert waiting.next_window.local.time() == time(22, 0)
    assert waiting.next_window.start > outside
    assert waiting.look_again == waiting.next_window.start  # the force day is far


def test_a_window_across_midnight_belongs_to_the_day_it_starts() -> None:
    # Friday 22:00 to Saturday 02:00 (days: fri only): Saturday 01:00 is inside, Saturday 23:00 is not.
    control = window(BERLIN, "22:00", "02:00", frozenset({4}))
    assert in_window(control, local(BERLIN, 2026, 12, 12, 1, 0))  # Saturday 01:00
    assert not in_window(control, local(BERLIN, 2026, 12, 12, 23, 0))  # Saturday 23:00
    assert not in_window(control, local(BERLIN, 2026, 12, 12, 2, 0))  # the end is not inside
    assert in_window(control, local(BERLIN, 2026, 12, 11, 22, 0))  # Friday 22:00: the start is
    coming = next_window(control, local(BERLIN, 2026, 12, 12, 3, 0))
    assert coming is not None and coming.local == local(BERLIN, 2026, 12, 18, 22, 0)  # next Friday


def test_start_equal_to_end_is_a_whole_day() -> None:
    control = window(BERLIN, "06:00", "06:00", frozenset({0}))  # Monday 06:00 to Tuesday 06:00
    assert in_window(control, local(BERLIN, 2026, 12, 7, 6, 0))
    assert in_window(control, local(BERLIN, 2026, 12, 8, 5, 59))
    assert not in_window(control, local(BERLIN, 2026, 12, 8, 6, 0))


def test_spring_forward_gap_a_window_starting_in_the_gap_opens_when_the_clocks_jump() -> None:
    # 2026-03-29 in Berlin: 02:00 CET becomes 03:00 CEST; 02:30 never happens.
    control = window(BERLIN, "02:30", "04:00")
    coming = next_window(control, local(BERLIN, 2026, 3, 29, 0, 0))
    assert coming is not None
    assert coming.start == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)  # the jump: 03:00 CEST
    assert coming.local.hour == 3 and coming.local.minute == 0
    assert in_window(control, coming.start)
    assert not in_window(control, coming.start - timedelta(seconds=1))  # 01:59:59 CET is before the window
    # The window is an hour long that night (03:00-04:00 CEST), 90 minutes the night after.
    assert not in_window(control, datetime(2026, 3, 29, 2, 0, tzinfo=UTC))  # 04:00 CEST
    after = next_window(control, datetime(2026, 3, 29, 2, 0, tzinfo=UTC))
    assert after is not None and after.start == datetime(2026, 3, 30, 0, 30, tzinfo=UTC)  # 02:30 CEST


def test_spring_forward_gap_a_window_wholly_inside_the_gap_does_not_open_that_day() -> None:
    control = window(NEW_YORK, "02:10", "02:40")  # 2026-03-08: 02:00 EST -> 03:00 EDT
    coming = next_window(control, local(NEW_YORK, 2026, 3, 8, 0, 0))
    assert coming is not None
    assert coming.local.date().isoformat() == "2026-03-09"
    assert coming.local.time() == time(2, 10)


def test_fall_back_overlap_a_window_in_the_repeated_hour_is_open_both_times() -> None:
    # 2026-11-01 in New York: 01:00-01:59 happens twice (EDT, then EST).
    control = window(NEW_YORK, "01:00", "01:30")
    first = local(NEW_YORK, 2026, 11, 1, 1, 15, fold=0)
    second = local(NEW_YORK, 2026, 11, 1, 1, 15, fold=1)
    assert second.astimezone(UTC) - first.astimezone(UTC) == timedelta(hours=1)  # same wall time, an hour apart
    assert in_window(control, first) and in_window(control, second)
    assert not in_window(control, local(NEW_YORK, 2026, 11, 1, 1, 45, fold=0))  # between the two
    coming = next_window(control, local(NEW_YORK, 2026, 11, 1, 0, 0))
    assert coming is not None and coming.start == datetime(2026, 11, 1, 5, 0, tzinfo=UTC)  # the first 01:00 (EDT)
    again = next_window(control, local(NEW_YORK, 2026, 11, 1, 1, 45, fold=0))
    assert again is not None and again.start == datetime(2026, 11, 1, 6, 0, tzinfo=UTC)  # the second 01:00 (EST)


def test_a_window_across_a_dst_change_lasts_its_wall_clock_hours() -> None:
    # 00:00-06:00 on the fall-back night in Berlin lasts 7 real hours; on the spring-forward night 5.
    control = window(BERLIN, "00:00", "06:00")
    opens = next_window(control, local(BERLIN, 2026, 10, 24, 12, 0))
    assert opens is not None
    closes = datetime(2026, 10, 25, 5, 0, tzinfo=UTC)  # 06:00 CET
    assert closes - opens.start == timedelta(hours=7)
    assert in_window(control, closes - timedelta(seconds=1)) and not in_window(control, closes)
    spring = next_window(control, local(BERLIN, 2026, 3, 28, 12, 0))
    assert spring is not None
    assert datetime(2026, 3, 29, 4, 0, tzinfo=UTC) - spring.start == timedelta(hours=5)  # 06:00 CEST


def test_window_mode_forces_at_the_force_day_and_says_why() -> None:
    control = window(BERLIN, "22:00", "02:00", force_days_before_expiry=7)
    expires = datetime(2026, 12, 20, 12, tzinfo=UTC)
    noon = datetime(2026, 12, 13, 11, 59, tzinfo=UTC)  # outside the window, 7 days and a minute before expiry
    before = decide(control, noon, expires)
    assert before.verdict is Verdict.WAITING
    assert before.force_on == datetime(2026, 12, 13, 12, tzinfo=UTC)
    assert before.look_again == before.force_on  # the force day comes before tonight's window
    forced = decide(control, noon + timedelta(minutes=1), expires)
    assert forced.verdict is Verdict.FORCED and "7 days before expiry" in forced.why
    assert "outside the maintenance windows" in forced.why


def test_never_force_keeps_waiting_and_blocks_past_the_force_day() -> None:
    control = window(BERLIN, "22:00", "02:00", never_force=True)
    expires = datetime(2026, 12, 20, 12, tzinfo=UTC)
    late = datetime(2026, 12, 19, 12, tzinfo=UTC)
    decision = decide(control, late, expires)
    assert decision.verdict is Verdict.WAITING and decision.blocking
    assert decision.look_again == decision.next_window.start  # type: ignore[union-attr]
    assert not decide(control, datetime(2026, 12, 1, 12, tzinfo=UTC), expires).blocking
    expired = decide(control, expires + timedelta(days=3), expires)
    assert expired.verdict is Verdict.WAITING and expired.blocking  # even expired: never forced


def test_force_days_zero_forces_at_expiry_and_a_missing_secret_is_forced_at_once() -> None:
    control = window(BERLIN, "22:00", "02:00", force_days_before_expiry=0)
    expires = datetime(2026, 12, 20, 12, tzinfo=UTC)
    assert decide(control, expires - timedelta(seconds=1), expires).verdict is Verdict.WAITING
    assert decide(control, expires, expires).verdict is Verdict.FORCED
    assert decide(control, expires, None).verdict is Verdict.FORCED  # no secret at all: the sync is down now


def test_approval_states() -> None:
    control = ChangeControl(Mode.APPROVAL, BERLIN, force_days_before_expiry=5)
    expires = datetime(2026, 12, 30, tzinfo=UTC)
    now = datetime(2026, 12, 6, 12, tzinfo=UTC)
    none = decide(control, now, expires)
    assert (none.verdict, none.waiting_for, none.request) == (Verdict.WAITING, "approval", "new")
    assert none.look_again == datetime(2026, 12, 25, tzinfo=UTC)
    pending = decide(control, now, expires, Approval("r", "k", ApprovalStatus.PENDING))
    assert (pending.verdict, pending.request) == (Verdict.WAITING, "")
    approved = decide(control, now, expires, Approval("r", "k", ApprovalStatus.APPROVED, decided_by="ann"))
    assert approved.verdict is Verdict.ALLOWED and "ann" in approved.why
    until = now + timedelta(days=3)
    postponed = decide(control, now, expires, Approval("r", "k", ApprovalStatus.POSTPONED, until))
    assert postponed.verdict is Verdict.WAITING and postponed.look_again == until and postponed.request == ""
    over = decide(control, until, expires, Approval("r", "k", ApprovalStatus.POSTPONED, until))
    assert over.verdict is Verdict.WAITING and over.request == "new"  # the postponement ended: ask again
    rejected = decide(control, now, expires, Approval("r", "k", ApprovalStatus.REJECTED, decided_by="bob",
                                                      reason="freeze"))
    assert rejected.verdict is Verdict.REJECTED and "bob" in rejected.why and "freeze" in rejected.why
    assert rejected.look_again == datetime(2026, 12, 25, tzinfo=UTC)
    for status in ApprovalStatus:
        if status is ApprovalStatus.APPROVED:
            continue
        late = decide(control, datetime(2026, 12, 25, tzinfo=UTC), expires, Approval("r", "k", status, until))
        assert late.verdict is Verdict.FORCED, status
    never = ChangeControl(Mode.APPROVAL, BERLIN, never_force=True)
    blocked = decide(never, datetime(2026, 12, 29, tzinfo=UTC), expires, Approval("r", "k", ApprovalStatus.REJECTED))
    assert blocked.verdict is Verdict.REJECTED and blocked.blocking and blocked.look_again is None


def test_parse_round_trips_and_refuses_what_is_wrong() -> None:
    doc = {"mode": "window", "timeZone": BERLIN, "forceDaysBeforeExpiry": 3, "neverForce": False,
           "windows": [{"days": ["sat", "sun"], "start": "22:00", "end": "02:00"}]}
    parsed = parse(doc)
    assert parsed is not None and document(parsed) == doc
    assert parse(None) is None
    assert parse({"mode": "approval"}) == ChangeControl(Mode.APPROVAL)
    for start, end in (("22:00", "22:30"), ("23:45", "00:15"), ("06:00", "06:00")):  # 30 minutes, 30, 24 hours
        assert parse({"mode": "window", "windows": [{"days": ["mon"], "start": start, "end": end}]}) is not None
    bad = [
        ({"mode": "sometimes"}, "mode"),
        ({"mode": {"window": True}}, "mode"),
        ({"mode": ["window"]}, "mode"),
        ({"mode": "window", "timeZone": "Mars/Olympus", "windows": doc["windows"]}, "timeZone"),
        ({"timeZone": "../../etc/passwd"}, "timeZone"),
        ({"timeZone": "Europe"}, "timeZone"),  # a directory of the database, not a zone
        ({"timeZone": "zone.tab"}, "timeZone"),
        ({"timeZone": "localtime"}, "timeZone"),  # the host's own zone, whatever it is
        ({"timeZone": "right/UTC"}, "timeZone"),
        ({"timeZone": "Europe/Berlin\n"}, "timeZone"),
        ({"timeZone": "UTC\x00"}, "timeZone"),
        ({"timeZone": 3}, "timeZone"),
        ({"mode": "window", "windows": []}, "windows"),
        ({"mode": "window"}, "windows"),
        ({"mode": "approval", "windows": doc["windows"]}, "windows"),
        ({"mode": "window", "windows": [{"days": ["sat"], "start": "24:00", "end": "02:00"}]}, "start"),
        ({"mode": "window", "windows": [{"days": ["sat"], "start": "2:00", "end": "03:00"}]}, "start"),
        ({"mode": "window", "windows": [{"days": ["sat"], "start": "02:00", "end": "03:60"}]}, "end"),
        ({"mode": "window", "windows": [{"days": ["sunday"], "start": "02:00", "end": "03:00"}]}, "days"),
        ({"mode": "window", "windows": [{"days": [], "start": "02:00", "end": "03:00"}]}, "days"),
        ({"mode": "window", "windows": [{"days": ["sat"], "start": "02:00"}]}, "windows[0]"),
        ({"mode": "window", "windows": [{"days": ["sat"], "start": "22:00", "end": "22:20"}]}, "windows[0]"),
        ({"mode": "window", "windows": [{"days": ["sat"], "start": "23:50", "end": "00:10"}]}, "windows[0]"),
        ({"forceDaysBeforeExpiry": 91}, "forceDaysBeforeExpiry"),
        ({"forceDaysBeforeExpiry": -1}, "forceDaysBeforeExpiry"),
        ({"forceDaysBeforeExpiry": 0}, "forceDaysBeforeExpiry"),  # forced only once expired: the sync breaks first
        ({"forceDaysBeforeExpiry": True}, "forceDaysBeforeExpiry"),
        ({"neverForce": "yes"}, "neverForce"),
        ({"windowz": []}, "changeControl"),
        ("window", "changeControl"),
    ]
    for value, field in bad:
        with pytest.raises(InvalidChangeControl) as refused:
            parse(value)
        assert field in refused.value.field, (value, refused.value.field)


def test_force_days_must_be_below_the_renew_before_days() -> None:
    assert force_problem(ChangeControl(Mode.WINDOW, force_days_before_expiry=30), 30)
    assert not force_problem(ChangeControl(Mode.WINDOW, force_days_before_expiry=29), 30)
    assert not force_problem(ChangeControl(Mode.WINDOW, force_days_before_expiry=30, never_force=True), 30)
    assert not force_problem(ChangeControl(Mode.AUTO, force_days_before_expiry=30), 30)


# Zones with unusual rules: a 30-minute DST (Lord Howe), a negative DST (Dublin: winter is the "daylight" offset),
# a +5:45 offset (Kathmandu), southern-hemisphere DST (Santiago, Sydney), DST suspended for Ramadan (Casablanca).
ZONES = ("Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Europe/Dublin", "Asia/Kathmandu",
         "America/Santiago", "Australia/Sydney", "Africa/Casablanca", "UTC")
_times = st.builds(time, st.integers(0, 23), st.sampled_from([0, 15, 30, 45]))
_windows = st.lists(st.builds(Window, st.frozensets(st.integers(0, 6), min_size=1), _times, _times),
                    min_size=1, max_size=3)
_instants = st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2027, 12, 31)).map(
    lambda d: d.replace(tzinfo=UTC, microsecond=0))


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(ZONES), _windows, _instants)
def test_the_next_window_is_the_first_moment_a_window_opens(zone: str, windows: list[Window], now: datetime) -> None:
    control = ChangeControl(Mode.WINDOW, zone, tuple(windows))
    coming = next_window(control, now)
    if coming is None:
        # None opens: the windows cover every moment (a 24-hour window on every day), so none ever closes.
        assert all(in_window(control, now + timedelta(minutes=15 * k)) for k in range(8 * 96))
        return
    assert coming.start > now and in_window(control, coming.start)
    assert not in_window(control, coming.start - timedelta(seconds=1)), "an opening, not the middle of a window"
    assert coming.local == coming.start.astimezone(ZoneInfo(zone))
    if not in_window(control, now):
        # Nothing in between is inside a window (checked every 15 minutes: window edges are on quarter hours, and
        # a DST jump moves the wall clock by whole quarter hours in every zone here).
        moment = now + timedelta(minutes=15) - timedelta(seconds=now.minute % 15 * 60 + now.second)
        while moment < coming.start:
            assert not in_window(control, moment), (moment, coming)
            moment += timedelta(minutes=15)
    decision = decide(control, now, now + timedelta(days=365))
    assert decision.verdict is (Verdict.ALLOWED if in_window(control, now) else Verdict.WAITING)
    if decision.verdict is Verdict.WAITING:
        assert decision.look_again == coming.start


def test_a_window_whose_day_a_zone_skipped_opens_the_week_after() -> None:
    """Samoa skipped Friday 30 December 2011 (from UTC-10 to UTC+14, IANA tzdata Pacific/Apia): a Friday window
    opens on the Friday after, ten days on; the search does not stop after one week and answer none."""
    control = parse({"mode": "window", "timeZone": "Pacific/Apia",
                     "windows": [{"days": ["fri"], "start": "10:00", "end": "11:00"}]})
    assert control is not None
    now = datetime(2011, 12, 28, tzinfo=UTC)  # Tuesday 27 December, 14:00 in Apia
    coming = next_window(control, now)
    assert coming is not None and coming.start == datetime(2012, 1, 5, 20, tzinfo=UTC), coming
    assert coming.local.replace(tzinfo=None) == datetime(2012, 1, 6, 10)
    decision = decide(control, now, now + timedelta(days=365))
    assert decision.verdict is Verdict.WAITING and decision.look_again == coming.start
