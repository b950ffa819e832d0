"""Proofpoint's `secret_expiry` in the other ways a service may write a date (its format is undocumented): a healthy
target's key is never drift because of how its date is written, and a date that names another day still is. Each
written form of the rotator's key's end (2027-05-05T17:42:11.123Z) and of dates that are not it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared.destinations.proofpoint import expiry_window, reported_use
from tests.drift.test_find_drift import HAND_OLD, MINE, NOW, drift_of, settings

END = MINE.end  # 2027-05-05T17:42:11.123Z
EPOCH = END.timestamp()

# The same expiry, written as other software writes dates: none of them is drift.
SAME = [
    "20270505", "20270505T174211Z", "20270505T1742Z",  # ISO 8601's basic format
    "2027-05-05Z", "2027-05-05+02:00", "2027-05-05-07:00",  # a date alone with its zone
    "2027-05-05T17Z", "2027-05-05T17",  # to the hour (truncated): the key's 17:42 is inside that hour
    "05/05/2027", "5/5/2027 5:42:11 PM", "5/5/2027 17:42", "05.05.2027", "05.05.2027 17:42:11",  # US and European
    "2027/05/05", "2027/05/05 17:42:11",
    int(EPOCH), EPOCH, str(int(EPOCH)), int(EPOCH * 1000),  # seconds or milliseconds since 1970
    "Wed, 05 May 2027 17:42:11 GMT",  # an HTTP date (RFC 7231)
]


@pytest.mark.parametrize("shown", SAME, ids=[str(s) for s in SAME])
def test_the_rotators_key_written_any_common_way_is_no_drift(shown: object) -> None:
    used, problems = drift_of(settings(shown), MINE, HAND_OLD)
    assert problems == "" and used == MINE.key_id
    assert reported_use("proofpoint", settings(shown)).expiry_shown == str(shown)


# Dates that are not the key's: still drift, whichever way round a slashed date is read.
OTHER = [
    "20270507", "2027-05-06Z", "2027-05-05T19Z", "05/07/2027", "07/05/2027 17:42:11", "07.05.2027",
    int(EPOCH) + 7200, int(EPOCH * 1000) - 7_200_000, "Fri, 07 May 2027 17:42:11 GMT",
]


@pytest.mark.parametrize("shown", OTHER, ids=[str(s) for s in OTHER])
def test_a_date_that_names_another_moment_is_still_drift(shown: object) -> None:
    used, problems = drift_of(settings(shown), MINE)
    assert used is None and "matches no credential" in problems


def test_a_slashed_date_names_the_key_of_either_reading_and_only_those() -> None:
    # 01/02/2027: 2 January (US) or 1 February (Europe). HAND_OLD ends 1 February: that key, not drift for the
    # rotator's key's absence alone; the rotator's key (5 May) matches neither reading.
    used, problems = drift_of(settings("02/01/2027"), MINE, HAND_OLD)
    assert used == HAND_OLD.key_id and "which the rotator did not make" in problems
    window = expiry_window("02/01/2027")
    assert window is not None and window[0] <= HAND_OLD.end <= window[1]


def test_numbers_that_are_no_plausible_moment_and_impossible_dates_are_named_not_a_date() -> None:
    for shown in (0, 42, True, "13/13/2027", "31.02.2027", "2027-02-30", "99999999999999999", -EPOCH, float("nan"),
                  float("inf"), "1e10", "Wed, 31 Feb 2027 17:42:11 GMT", "Xyz, 05 Foo 2027 17:42:11 GMT",
                  "Wed, 05 May 2027 25:42:11 GMT", "5/5/2027 13:00 PM", "5/5/2027 0:00 AM", "2027-05-05T25:00Z",
                  "2027-05-05T17:42+25:00"):
        used, problems = drift_of(settings(shown), MINE)
        assert used is None and "not a date" in problems, shown


def test_every_window_is_in_utc_and_a_date_with_its_zone_is_that_day_there() -> None:
    window = expiry_window("2027-05-05+02:00")
    assert window == (datetime(2027, 5, 4, 22, tzinfo=UTC), datetime(2027, 5, 5, 22, tzinfo=UTC))
    for shown in SAME:
        start, end = expiry_window(shown) or (NOW, NOW)
        assert start.utcoffset() == end.utcoffset() == timedelta(0) and start < END < end, shown
