"""Change control per customer (issue 26): when a due rotation may be reserved. Pure: plain data in, plain data out.

A customer's policy says one of three modes:
- `auto`: a due rotation is reserved at once (the rotator's behaviour before issue 26);
- `window`: only inside one of the customer's maintenance windows (days and hours in its IANA time zone);
- `approval`: only once a person approved the request made for the key being replaced (or postponed it to a date
  that has come and a new request was approved); a rejected request is never rotated by the rotator's own choice.

Expiry is never allowed to break the sync silently: `forceDaysBeforeExpiry` days before the secret expires the
rotation goes ahead outside the window or without approval (forced, with an alert saying why), unless the customer
is set to `neverForce`, when it keeps waiting and a loud alert is raised every day (`change-control-blocking-expiry`).

Wall-clock rules (zoneinfo, PEP 615): an instant is inside a window when the customer's wall clock at that instant
reads a time inside it on one of its days. So a window starting in a daylight-saving gap (spring forward: 02:30
does not exist) opens when the clocks jump (03:00 local), one ending in a gap closes there, and a window inside the
fall-back overlap (01:00-01:59 happens twice) is open both times. A window whose end is at or before its start
crosses midnight (22:00-02:00 is open from 22:00 on its day to 02:00 the next day); start equal to end is 24 hours.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from enum import Enum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # datetime.weekday() order
DEFAULT_FORCE_DAYS = 7
MAX_FORCE_DAYS = 90
MAX_WINDOWS = 14
MIN_WINDOW_MINUTES = 30  # twice the resume timer's default cadence (RESUME_SCHEDULE, every 15 minutes)
_HHMM_LENGTH = 5


class Mode(str, Enum):
    """How a customer lets the rotator change its app."""

    AUTO = "auto"
    WINDOW = "window"
    APPROVAL = "approval"


class ApprovalStatus(str, Enum):
    """Where a request to rotate one key stands."""

    PENDING = "pending"
    APPROVED = "approved"
    POSTPONED = "postponed"
    REJECTED = "rejected"


class Verdict(str, Enum):
    """What change control says of a due rotation now."""

    ALLOWED = "allowed"
    WAITING = "waiting"
    FORCED = "forced"
    REJECTED = "rejected"


class InvalidChangeControl(ValueError):
    """A change-control document breaks a rule; `field` names where (under policy.changeControl)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = f"{field}: {message}"


@dataclass(frozen=True)
class Window:
    """A weekly maintenance window: the days it opens on (0 = Monday), its start and end in local wall time."""

    days: frozenset[int]
    start: time
    end: time

    @property
    def crosses_midnight(self) -> bool:
        return self.end <= self.start

    def holds(self, wall: datetime) -> bool:
        """Whether a local wall-clock reading (naive) is inside this window."""
        t, day = wall.time(), wall.weekday()
        if not self.crosses_midnight:
            return day in self.days and self.start <= t < self.end
        return (day in self.days and t >= self.start) or ((day - 1) % 7 in self.days and t < self.end)


@dataclass(frozen=True)
class ChangeControl:
    """A customer's change control (policy.changeControl)."""

    mode: Mode = Mode.AUTO
    time_zone: str = "UTC"
    windows: tuple[Window, ...] = ()
    force_days_before_expiry: int = DEFAULT_FORCE_DAYS
    never_force: bool = False

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.time_zone)


@dataclass(frozen=True)
class Approval:
    """The request made for the key being replaced, as change control needs it."""

    request_id: str
    key_id: str
    status: ApprovalStatus
    until: datetime | None = None  # postponed until this moment
    decided_by: str = ""
    reason: str = ""


@dataclass(frozen=True)
class NextWindow:
    """When the next window opens: the instant, and how the customer's wall clock reads then."""

    start: datetime  # UTC
    local: datetime  # in the customer's zone
    time_zone: str


@dataclass(frozen=True)
class Decision:
    """Change control's answer for a due rotation now.

    WAITING names what it waits for (`waiting_for`: window or approval) and when to look again (`look_again`: the
    next window's start, a postponement's end or the force day, whichever comes first; None: only a person's
    decision changes it). `blocking` says the force day has passed and `neverForce` keeps the rotation waiting."""

    verdict: Verdict
    why: str
    waiting_for: str = ""  # "window" | "approval" | ""
    next_window: NextWindow | None = None
    force_on: datetime | None = None
    look_again: datetime | None = None
    blocking: bool = False
    request: str = field(default="")  # "new": a request must be made (none for this key, or a postponement ended)


def force_on(control: ChangeControl, expires: datetime | None) -> datetime | None:
    """From when a waiting rotation goes ahead anyway (None: the expiry is unknown)."""
    if expires is None:
        return None
    return expires - timedelta(days=control.force_days_before_expiry)


def in_window(control: ChangeControl, now: datetime) -> bool:
    """Whether `now` (aware) is inside one of the customer's windows, by its wall clock."""
    wall = now.astimezone(control.zone).replace(tzinfo=None)
    return any(w.holds(wall) for w in control.windows)


def _instant(zone: ZoneInfo, wall: datetime) -> datetime:
    """The first instant at which the zone's wall clock reads `wall` or later (naive `wall`): the earlier of two
    readings in a fall-back overlap, the moment the clocks jumped for a reading in a spring-forward gap."""
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if first.astimezone(zone).replace(tzinfo=None) == wall:
        return first
    # A gap: fold=0 reads it with the offset before the jump (an instant after it), fold=1 with the offset after
    # (an instant before it). The jump lies between; find the first instant whose reading is at or past `wall`.
    low = int(wall.replace(tzinfo=zone, fold=1).timestamp())
    high = int(first.timestamp())
    low, high = min(low, high), max(low, high)
    while high - low > 1:
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, UTC).astimezone(zone).replace(tzinfo=None) >= wall:
            high = middle
        else:
            low = middle
    return datetime.fromtimestamp(high, UTC)


def next_window(control: ChangeControl, now: datetime) -> NextWindow | None:
    """The next moment after `now` at which a window opens (None without windows)."""
    if not control.windows:
        return None
    zone = control.zone
    today = now.astimezone(zone).date()
    best: datetime | None = None
    # A week and a day covers every weekly window, plus a week more for an occurrence a zone skipped (a day removed
    # from its calendar, as Pacific/Apia on 30 December 2011, or a window wholly inside a daylight-saving gap).
    for offset in range(-1, 16):
        day: date = today + timedelta(days=offset)
        for window in control.windows:
            if day.weekday() not in window.days:
                continue
            wall = datetime.combine(day, window.start)
            # The second reading of a start in a fall-back overlap opens the window again (it closed between).
            again = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
            for opens in (_instant(zone, wall), again):
                # A window wholly inside a gap never opens that day; a window already open is not "next".
                if opens <= now or not in_window(control, opens) or in_window(control, opens - timedelta(seconds=1)):
                    continue
                if best is None or opens < best:
                    best = opens
    if best is None:
        return None
    return NextWindow(best, best.astimezone(zone), control.time_zone)


def decide(control: ChangeControl | None, now: datetime, expires: datetime | None,
           approval: Approval | None = None) -> Decision:
    """Whether a due rotation (of a secret ending at `expires`; None: no secret, or unknown) may be reserved now.

    `approval` is the request made for the key being replaced (approval mode), None when there is none yet."""
    if control is None or control.mode is Mode.AUTO:
        return Decision(Verdict.ALLOWED, "change control: auto")
    forced_from = force_on(control, expires)
    # No secret at all (or none whose end is known) breaks the sync now: nothing is gained by waiting.
    past_force = forced_from is None or now >= forced_from
    left = f"the secret expires at {expires.isoformat()}" if expires else "the app has no secret whose end is known"
    if control.mode is Mode.WINDOW:
        if in_window(control, now):
            return Decision(Verdict.ALLOWED, "inside a maintenance window", force_on=forced_from)
        coming = next_window(control, now)
        if past_force and not control.never_force:
            return Decision(Verdict.FORCED, f"outside the maintenance windows, but {left}: forced "
                            f"{control.force_days_before_expiry} days before expiry", next_window=coming,
                            force_on=forced_from)
        look = _earliest(coming.start if coming else None, None if control.never_force else forced_from)
        return Decision(Verdict.WAITING, "waiting for the next maintenance window", waiting_for="window",
                        next_window=coming, force_on=forced_from, look_again=look,
                        blocking=past_force and control.never_force)
    return _approval(control, now, approval, forced_from, past_force, left)


def _approval(control: ChangeControl, now: datetime, approval: Approval | None, forced_from: datetime | None,
              past_force: bool, left: str) -> Decision:
    if approval is not None and approval.status is ApprovalStatus.APPROVED:
        return Decision(Verdict.ALLOWED, f"approved by {approval.decided_by or 'an operator'}",
                        force_on=forced_from)
    force = past_force and not control.never_force
    if force:
        how = {None: "no approval was asked yet", ApprovalStatus.PENDING: "the approval is still pending",
               ApprovalStatus.POSTPONED: "the approval was postponed",
               ApprovalStatus.REJECTED: f"it was rejected by {approval.decided_by if approval else ''}"}
        return Decision(Verdict.FORCED, f"{how[approval.status if approval else None]}, but {left}: forced "
                        f"{control.force_days_before_expiry} days before expiry", force_on=forced_from)
    blocking = past_force and control.never_force
    later = None if control.never_force else forced_from
    if approval is not None and approval.status is ApprovalStatus.REJECTED:
        return Decision(Verdict.REJECTED, f"rejected by {approval.decided_by or 'an operator'}"
                        + (f": {approval.reason}" if approval.reason else ""), force_on=forced_from,
                        look_again=later, blocking=blocking)
    if approval is not None and approval.status is ApprovalStatus.POSTPONED and approval.until is not None \
            and now < approval.until:
        return Decision(Verdict.WAITING, f"postponed until {approval.until.isoformat()}", waiting_for="approval",
                        force_on=forced_from, look_again=_earliest(approval.until, later), blocking=blocking)
    # None yet, a postponement that ended (a new request), or one still pending.
    new = approval is None or approval.status is ApprovalStatus.POSTPONED
    return Decision(Verdict.WAITING, "waiting for approval", waiting_for="approval", force_on=forced_from,
                    look_again=later, blocking=blocking, request="new" if new else "")


def _earliest(*moments: datetime | None) -> datetime | None:
    known = [m for m in moments if m is not None]
    return min(known) if known else None


# --- The policy document: parsed and validated, and written back -------------------------------------------------

_FIELDS = {"mode", "timeZone", "windows", "forceDaysBeforeExpiry", "neverForce"}
_WINDOW_FIELDS = {"days", "start", "end"}


def _hhmm(value: object, where: str) -> time:
    if not isinstance(value, str) or len(value) != _HHMM_LENGTH or value[2] != ":" \
            or not (value[:2].isdigit() and value[3:].isdigit() and value[:2].isascii() and value[3:].isascii()):
        raise InvalidChangeControl(where, 'must be a time "HH:MM" (24-hour clock, e.g. "22:00")')
    hours, minutes = int(value[:2]), int(value[3:])
    if hours > 23 or minutes > 59:
        raise InvalidChangeControl(where, f'{value!r} is not a time of day ("00:00" to "23:59")')
    return time(hours, minutes)


# Names the zone database holds that are no customer's zone: the host's own setting and the "zone unknown" filler.
_NOT_A_ZONE = frozenset({"localtime", "Factory"})


@functools.cache
def _zones() -> frozenset[str]:
    """The IANA keys of the zone database (the system's, else the tzdata package): read once per process."""
    return frozenset(available_timezones()) - _NOT_A_ZONE


def zone_known(name: str, *, listed: bool = True) -> bool:
    """Whether `name` is an IANA time zone key (e.g. "Europe/Berlin"): one of the database's keys, never a path into it
    (a directory such as "Europe", a file such as "zone.tab", "../"), so opening it cannot fail. `listed=False`
    skips the database's listing (about 0.1 s, once per process) for a name checked so when it was stored."""
    if not name or len(name) > 64 or (listed and name not in _zones()):
        return False
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return False
    return True


def parse(value: object, where: str = "policy.changeControl", *, stored: bool = False) -> ChangeControl | None:
    """A change-control document (None: absent, auto); InvalidChangeControl naming the field otherwise. `stored`: a
    document read back from the registry, whose time zone was checked against the database's keys when written."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidChangeControl(where, "must be a JSON object")
    unknown = sorted(set(value) - _FIELDS)
    if unknown:
        raise InvalidChangeControl(where, f"unknown field(s) {', '.join(unknown)}; allowed: "
                                   f"{', '.join(sorted(_FIELDS))}")
    raw_mode = value.get("mode", Mode.AUTO.value)
    if not isinstance(raw_mode, str) or raw_mode not in {m.value for m in Mode}:
        raise InvalidChangeControl(f"{where}.mode", "must be auto, window or approval")
    mode = Mode(raw_mode)
    zone = value.get("timeZone", "UTC")
    if not isinstance(zone, str) or not zone_known(zone, listed=not stored):
        shown = repr(zone)[:80]
        raise InvalidChangeControl(f"{where}.timeZone", f"{shown} is not an IANA time zone (e.g. Europe/Berlin, "
                                   "America/New_York, UTC)")
    force = value.get("forceDaysBeforeExpiry", DEFAULT_FORCE_DAYS)
    if isinstance(force, bool) or not isinstance(force, int) or not 1 <= force <= MAX_FORCE_DAYS:
        # 0 would force the rotation only once the secret has expired: the sync would break before it ran.
        raise InvalidChangeControl(f"{where}.forceDaysBeforeExpiry", f"must be a whole number from 1 to "
                                   f"{MAX_FORCE_DAYS} (days before expiry a waiting rotation goes ahead anyway; "
                                   "0 would let the secret expire first: use neverForce to never force)")
    never = value.get("neverForce", False)
    if not isinstance(never, bool):
        raise InvalidChangeControl(f"{where}.neverForce", "must be true or false")
    windows = _windows(value.get("windows", []), f"{where}.windows")
    if mode is Mode.WINDOW and not windows:
        raise InvalidChangeControl(f"{where}.windows", "window mode needs at least one window")
    if mode is not Mode.WINDOW and windows:
        raise InvalidChangeControl(f"{where}.windows", f"windows apply to window mode only (mode is {mode.value})")
    return ChangeControl(mode, zone, windows, force, never)


def _windows(value: object, where: str) -> tuple[Window, ...]:
    if not isinstance(value, list) or len(value) > MAX_WINDOWS:
        raise InvalidChangeControl(where, f"must be a list of at most {MAX_WINDOWS} windows")
    found = []
    for index, doc in enumerate(value):
        at = f"{where}[{index}]"
        if not isinstance(doc, dict):
            raise InvalidChangeControl(at, 'must be an object {"days", "start", "end"}')
        unknown = sorted(set(doc) - _WINDOW_FIELDS)
        missing = sorted(_WINDOW_FIELDS - set(doc))
        if unknown or missing:
            raise InvalidChangeControl(at, f"needs exactly days, start and end (unknown: {', '.join(unknown) or '-'}; "
                                       f"missing: {', '.join(missing) or '-'})")
        days = doc["days"]
        if not isinstance(days, list) or not days or not all(isinstance(d, str) and d in DAYS for d in days) \
                or len(set(days)) != len(days):
            raise InvalidChangeControl(f"{at}.days", f"must be a non-empty list of distinct days from "
                                       f"{', '.join(DAYS)}")
        start, end = _hhmm(doc["start"], f"{at}.start"), _hhmm(doc["end"], f"{at}.end")
        minutes = (end.hour * 60 + end.minute - start.hour * 60 - start.minute) % (24 * 60) or 24 * 60
        if minutes < MIN_WINDOW_MINUTES:
            # The resume timer looks every 15 minutes (RESUME_SCHEDULE): a shorter window could open and close
            # between two looks, and the rotation would wait for ever.
            raise InvalidChangeControl(at, f"is {minutes} minutes long; a window must last at least "
                                       f"{MIN_WINDOW_MINUTES} minutes")
        found.append(Window(frozenset(DAYS.index(d) for d in days), start, end))
    return tuple(found)


def document(control: ChangeControl) -> dict[str, object]:
    """The document `parse` takes (what the registry view shows)."""
    return {
        "mode": control.mode.value,
        "timeZone": control.time_zone,
        "windows": [{"days": [DAYS[d] for d in sorted(w.days)], "start": w.start.strftime("%H:%M"),
                     "end": w.end.strftime("%H:%M")} for w in control.windows],
        "forceDaysBeforeExpiry": control.force_days_before_expiry,
        "neverForce": control.never_force,
    }


def force_problem(control: ChangeControl | None, renew_before_days: int) -> str:
    """Why the force day does not fit the renewal window ("" when it does): forcing at or before the day a rotation
    becomes due would force every rotation at once, so the window or approval would never be asked."""
    if control is None or control.mode is Mode.AUTO or control.never_force:
        return ""
    if control.force_days_before_expiry >= renew_before_days:
        return (f"changeControl.forceDaysBeforeExpiry ({control.force_days_before_expiry}) must be less than the "
                f"renew-before days ({renew_before_days}): every due rotation would be forced at once")
    return ""


@dataclass(frozen=True)
class ApprovalRequest:
    """One request to rotate a customer's key (the Tables row of the approvals book, one per target): bound to the
    key being replaced; who decided, when and why. Never a secret."""

    tenant_id: str
    app_id: str
    request_id: str
    key_id: str  # the key the rotation would replace ("" when the app has none)
    status: ApprovalStatus
    requested_at: datetime
    customer: str = ""
    expires: datetime | None = None  # the replaced key's end
    force_on: datetime | None = None  # when the rotation goes ahead anyway (None: never force, or unknown)
    decided_by: str = ""
    decided_at: datetime | None = None
    until: datetime | None = None  # postponed until
    reason: str = ""

    @property
    def approval(self) -> Approval:
        return Approval(self.request_id, self.key_id, self.status, self.until, self.decided_by, self.reason)
