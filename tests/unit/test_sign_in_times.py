"""The times of Graph's sign-in rows (the log's createdDateTime, the report's lastSignInDateTime): the forms Graph
writes are read, anything else fails the read as Graph's unexpected answer (a RotationError the evidence step
handles), never a ValueError out of the pass."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from shared.adapters.signins import _instant
from shared.errors import RotationError


@pytest.mark.parametrize(("text", "expected"), [
    ("2021-03-18T00:00:00-8:00", datetime(2021, 3, 18, tzinfo=timezone(timedelta(hours=-8)))),
    ("2021-03-18T00:00:00+5:30", datetime(2021, 3, 18, tzinfo=timezone(timedelta(hours=5, minutes=30)))),
    ("2021-03-18T00:00:00-08:00", datetime(2021, 3, 18, tzinfo=timezone(timedelta(hours=-8)))),
    ("2026-12-06T10:11:12.1234567Z", datetime(2026, 12, 6, 10, 11, 12, 123456, tzinfo=UTC)),
    ("2026-12-06T10:11:12", datetime(2026, 12, 6, 10, 11, 12, tzinfo=UTC)),
])
def test_graphs_forms_are_read(text: str, expected: datetime) -> None:
    assert _instant(text, "credential activity report") == expected


@pytest.mark.parametrize("value", [None, ""])
def test_no_time_is_none(value: object) -> None:
    assert _instant(value, "sign-in log") is None


@pytest.mark.parametrize("value", ["yesterday", "2021-13-01T00:00:00Z", "2021-03-18T00:00:00-8", "18/03/2021"])
def test_anything_else_is_an_unexpected_answer(value: str) -> None:
    with pytest.raises(RotationError) as raised:
        _instant(value, "credential activity report")
    assert raised.value.code == "UnexpectedAnswer" and "credential activity report" in raised.value.message
