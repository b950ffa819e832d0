"""Dates in seed documents: absolute ISO 8601 or relative to the sandbox clock ("+300d", "-10d", "now")."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_RELATIVE = re.compile(r"^\s*([+-])\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def resolve(value: str, now: datetime) -> datetime:
    """Turn a seed date into an aware UTC datetime; relative values count from `now`."""
    text = value.strip()
    if text.lower() == "now":
        return now
    match = _RELATIVE.match(text)
    if match:
        sign, amount, unit = match.groups()
        delta = timedelta(**{_UNITS[unit]: float(amount)})
        return now + delta if sign == "+" else now - delta
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"not a seed date (ISO 8601 or like '+300d'): {value!r}") from exc
    # Seeds written without an offset mean UTC, as Graph's own dates do.
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
