"""The clock port's real implementation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


class SystemClock:
    """UTC now, optionally shifted (the CLI's --clock-offset, for recovering a crashed run's lease in tests)."""

    def __init__(self, offset: timedelta = timedelta(0)) -> None:
        self.offset = offset

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset
