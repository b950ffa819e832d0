"""Proofpoint Essentials (kind "proofpoint"): the org's Azure AD sync settings, read, written, read back.

The settings endpoint is not in Proofpoint's published API guide. Its only public client, PSProofpoint's
Set-ProofpointAzureSync (github.com/Midnigh7/PSProofpoint, psproofpoint/public/Set-ProofpointAzureSync.ps1 at
bd0c124), builds its body from parameters, not from the GET: the ten flags as the strings "true"/"false",
`sync_frequency` an [int], `application_id` from `$azureAppId`, a variable it never sets, and every error swallowed
by `catch { Write-Output "$_" }`: nothing public shows a PUT that worked, nor the types Proofpoint stores, nor
whether a PUT merges or replaces. So the adapter sends back the object the GET returned, every field in the type it
came in, unknown fields (`tenant_id`, ...) kept, changing only the secret (`ad_key`) and, when it names another
app, `application_id`; then it reads the settings back and compares every field. Anything else changed (a field
dropped, a type or a value changed) is drift: `DestinationDrift`, never an acknowledgement.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, Final
from urllib.parse import quote, urlparse

import requests

from shared.destinations.http import (
    DEFAULT_TIMEOUT,
    Failure,
    Reply,
    Scrubber,
    Timeout,
    in_thread,
    rejected_config,
    send,
    status_error,
)
from shared.destinations.options import check_options, check_secret_name, looks_like_secret
from shared.destinations.transport import SessionFactory
from shared.domain import DestinationConfig
from shared.errors import DestinationDrift, RotationError
from shared.ports import Confirmation, Delivery, DestinationCheck, ProofpointOrg, ReportedUse, SecretStore

logger = logging.getLogger(__name__)

STACKS = ("us1", "us2", "us3", "us4", "us5", "eu1")
OPTIONS = ("stack", "base_url", "domain", "account_secret")
# The fields PSProofpoint's Set-ProofpointAzureSync PUTs: the settings Proofpoint is known to have. The check warns
# about those the GET does not show (a full-replace PUT could reset them; no client can send what it cannot read).
FLAGS = (
    "disable_login",
    "sync_active_users",
    "sync_distribution_groups",
    "sync_security_groups",
    "add_users",
    "update_users",
    "remove_deleted_users",
    "add_groups",
    "update_groups",
    "remove_deleted_groups",
)
KNOWN_SETTINGS = ("primary_domain", "application_id", "ad_key", "default_user_role_name", "sync_frequency", *FLAGS)
SECRET_FIELD: Final = "ad_key"  # noqa: S105 (the field's name, not a value)
APP_FIELD: Final = "application_id"
# Proofpoint's own sync state, read by community scripts: its sync moves them (it may run between the GET and the
# read-back, and reads the new credential's expiry), a PUT never should. Every other field must read back as sent.
MOVED_BY_PROOFPOINT = frozenset({"last_successful_sync", "last_sync_status", "secret_expiry"})
# Field names whose values are never shown (the check's output, drift messages): the secret and anything like it.
_SECRET_NAME = re.compile(r"key|secret|passw|pwd|token|credential|auth", re.IGNORECASE)
HIDDEN = "(hidden)"
_KEPT_TYPE_ONLY = "(hidden "  # a stored baseline keeps "(hidden string)" for a secret-like value
NEW_SECRET_SHOWN = "(the new secret)"  # noqa: S105 (a placeholder in the preview)
_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$", re.IGNORECASE)
_WORD = re.compile(r"[A-Za-z][A-Za-z _-]{0,31}")
_GUID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
_BRACED_GUID = re.compile(r"\{(" + _GUID.pattern + r")\}")
_STACK_TOKEN = re.compile(r"(?<![a-z0-9])(us[1-5]|eu1)(?![a-z0-9])", re.IGNORECASE)
_KIND = "proofpoint"


def validate_proofpoint(options: Mapping[str, str]) -> None:
    """Raise ValueError unless the options name a stack (or a base URL), the org's primary domain and the
    account's Key Vault secret."""
    check_options(_KIND, options, required=("domain", "account_secret"), allowed=OPTIONS)
    stack, base_url = options.get("stack", ""), options.get("base_url", "")
    if bool(stack) == bool(base_url):
        raise ValueError(f"{_KIND} destination: give either stack ({', '.join(STACKS)}) or base_url, not "
                         f"{'both' if stack else 'neither'}")
    if stack and stack not in STACKS:
        raise ValueError(f"{_KIND} destination: stack must be one of {', '.join(STACKS)} (or give base_url), "
                         f"got {stack!r}")
    if base_url:
        url = urlparse(base_url)
        if url.scheme != "https" or not url.hostname:
            raise ValueError(f"{_KIND} destination: base_url must be an https:// URL with a host, e.g. "
                             "https://us1.proofpointessentials.com/api/v1")
        if url.username or url.password or url.query or url.fragment:
            raise ValueError(f"{_KIND} destination: base_url must be a plain https://host/path URL (no "
                             "credentials, query or fragment)")
    if not _DOMAIN.fullmatch(options["domain"]):
        raise ValueError(f"{_KIND} destination: domain must be the org's primary domain name (e.g. contoso.com), "
                         f"got {options['domain']!r}")
    check_secret_name(_KIND, "account_secret", options["account_secret"])


def _account(raw: str, name: str) -> tuple[str, str]:
    """The API account from its Key Vault secret: JSON {"user": ..., "password": ...}."""
    try:
        doc = json.loads(raw)
    except ValueError:
        doc = None
    if not isinstance(doc, dict) or not isinstance(doc.get("user"), str) or not isinstance(doc.get("password"), str) \
            or not doc["user"] or not doc["password"]:
        raise RotationError(
            f"Key Vault secret {name!r} must hold JSON {{\"user\": ..., \"password\": ...}} for the Proofpoint account",
            code="ProofpointAccountSecretInvalid",
        )
    return doc["user"], doc["password"]


def _not_shown(settings: Mapping[str, Any]) -> list[str]:
    """The settings Proofpoint is known to have (PSProofpoint sends them) that this GET does not show."""
    return [name for name in KNOWN_SETTINGS if name not in settings and name not in (SECRET_FIELD, APP_FIELD)]


def same_app(shown: Any, app_id: str) -> bool:
    """Whether the GET's application_id names this app (GUIDs compare without case)."""
    return isinstance(shown, str) and shown.strip().lower() == app_id.lower()


def put_body(current: Mapping[str, Any], app_id: str, secret: str) -> dict[str, Any]:
    """The PUT body: the object the GET returned, every field as it came (type, value, order), the secret set, and
    `application_id` set only when the GET shows it naming another app (or none). Nothing the GET did not return is
    added but the secret: a field invented here would be a guess at Proofpoint's schema."""
    body = dict(current)
    if APP_FIELD in current and not same_app(current[APP_FIELD], app_id):
        body[APP_FIELD] = app_id
    body[SECRET_FIELD] = secret
    return body


def changed_fields(current: Mapping[str, Any], app_id: str) -> tuple[str, ...]:
    """The fields a push changes in this org's settings."""
    return (SECRET_FIELD, *((APP_FIELD,) if APP_FIELD in current and not same_app(current[APP_FIELD], app_id) else ()))


def json_type(value: Any) -> str:
    """The JSON type of a parsed value: a flag sent as "true" is a string, 24 a number, true a boolean."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def secret_like(name: str, value: Any = None) -> bool:
    """A field whose value is never shown: named like a credential, or holding something shaped like one."""
    return bool(_SECRET_NAME.search(name)) or (isinstance(value, str) and looks_like_secret(value))


def _shown(name: str, value: Any) -> str:
    if secret_like(name, value):
        return "a hidden value"
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 80 else text[:77] + "..."


def _marker(value: Any) -> str | None:
    """The JSON type a stored baseline kept of a secret-like value (its value is never stored), else None."""
    if isinstance(value, str) and value.startswith(_KEPT_TYPE_ONLY) and value.endswith(")"):
        return value[len(_KEPT_TYPE_ONLY):-1]
    return None


def kept(settings: Mapping[str, Any], scrub: Scrubber) -> dict[str, Any]:
    """The settings a push must keep, fit for the state store: the secret, the app id and Proofpoint's sync state
    left out, and of a value that is or holds anything the check would hide (a secret-like value, the account
    password) only its JSON type."""
    return {
        name: f"{_KEPT_TYPE_ONLY}{json_type(value)})" if masked(value, scrub, name) != value else value
        for name, value in settings.items()
        if name not in (SECRET_FIELD, APP_FIELD) and name not in MOVED_BY_PROOFPOINT
    }


def drift(before: Mapping[str, Any], seen: Mapping[str, Any]) -> list[str]:
    """What the read-back shows differently from the settings before the push (a GET, or a stored baseline), besides
    the secret, the app id and Proofpoint's own sync state: each field named with what happened (values of
    secret-like fields never shown). Fields Proofpoint added are not drift: nothing the org had was lost or changed."""
    found = []
    for name, value in before.items():
        if name in (SECRET_FIELD, APP_FIELD) or name in MOVED_BY_PROOFPOINT:
            continue  # the secret and the app id are the confirmation's to judge (not confirmed, not drift)
        kind = _marker(value) or json_type(value)
        if name not in seen:
            found.append(f"{name} dropped")
        elif json_type(seen[name]) != kind:
            found.append(f"{name} changed type ({kind} to {json_type(seen[name])})")
        elif seen[name] != value and _marker(value) is None:
            found.append(f"{name} changed ({_shown(name, value)} to {_shown(name, seen[name])})")
    return found


def masked(value: Any, scrub: Scrubber, name: str = "") -> Any:
    """A settings object fit to show: secret-like values hidden whole (a field named like a credential hides
    whatever it holds, nested or not), the account password scrubbed, recursively."""
    if name and value not in (None, "") and secret_like(name, value):
        return HIDDEN
    if isinstance(value, dict):
        return {k: masked(v, scrub, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [masked(v, scrub, name) for v in value]
    return scrub(value) if isinstance(value, str) else value


def key_shown(settings: Mapping[str, Any]) -> str:
    """How the GET shows the key: absent, blank, masked (only '*') or a value (which the check hides)."""
    if SECRET_FIELD not in settings:
        return "absent"
    value = settings[SECRET_FIELD]
    if value in (None, ""):
        return "blank"
    if isinstance(value, str) and set(value) == {"*"}:
        return "masked"
    return "a value that is not a mask (hidden here)"


def parse_sync_time(value: Any) -> datetime | None:
    """Proofpoint's last_successful_sync as an aware UTC datetime; None when absent or unreadable."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# How `secret_expiry` may be written is undocumented (community scripts only print it). Strictest plausible reading
# (shared/drift.py): every moment the text may mean, so that no healthy target is flagged for how a date is written:
# an instant with an offset, to the precision written (a minute at least: seconds may be rounded); a local time
# without one, in any zone from UTC-12 to UTC+14; a date alone, any moment of that day (in its zone when it has one,
# else in any such zone). Beside ISO 8601 (extended and basic), the forms other software writes dates in: day and
# month with slashes, dots or dashes, read both ways (3/1/2027 is 1 March in the US, 3 January in Europe: both are
# kept, as two windows), with an optional 12- or 24-hour time; year/month/day with slashes; an HTTP date (RFC 7231);
# seconds or milliseconds since 1970 (a number, or digits as text). Anything else is not a date.
_PRECISION = timedelta(minutes=1)
_EAST, _WEST = timedelta(hours=14), timedelta(hours=12)
Window = tuple[datetime, datetime]
_ZONE = r"(?:\s*(?P<zone>Z|UTC|GMT|[+-]\d{2}(?::?\d{2})?))?"
_ISO_TEXT = re.compile(r"(?P<y>\d{4})(?P<sep>-?)(?P<m>\d{2})(?P=sep)(?P<d>\d{2})"
                       r"(?:[T ](?P<H>\d{2})(?::?(?P<M>\d{2})(?::?(?P<S>\d{2})(?:[.,]\d+)?)?)?)?" + _ZONE, re.I)
_TIME = r"(?:[T ]+(?P<H>\d{1,2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?:[.,]\d+)?)?\s*(?P<ampm>[AP]M)?)?"
_DAY_MONTH = re.compile(r"(?P<a>\d{1,2})(?P<sep>[/.-])(?P<b>\d{1,2})(?P=sep)(?P<y>\d{4})" + _TIME + _ZONE, re.I)
_YEAR_FIRST = re.compile(r"(?P<y>\d{4})/(?P<m>\d{1,2})/(?P<d>\d{1,2})" + _TIME + _ZONE, re.I)
_HTTP_DATE = re.compile(r"[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT")
# Seconds since 1970 from 2001 to 5138; milliseconds for the same span (a secret ends within two years of now).
_EPOCH_SECONDS, _EPOCH_MILLIS = (1e9, 1e11), (1e12, 1e14)


def _zone(text: str | None) -> timedelta | None:
    """The offset a zone suffix names (None: no zone written)."""
    if not text:
        return None
    if text.upper() in ("Z", "UTC", "GMT"):
        return timedelta(0)
    digits = text[1:].replace(":", "")
    span = timedelta(hours=int(digits[:2]), minutes=int(digits[2:] or 0))
    return span if text[0] == "+" else -span


def _moment(year: int, month: int, day: int, parts: Mapping[str, str | None]) -> Window | None:
    """The window of one reading of a date with its optional time and zone (None: no such day or time)."""
    try:
        midnight = datetime(year, month, day, tzinfo=UTC)
        hour = int(parts.get("H") or 0)
        ampm = (parts.get("ampm") or "").upper()
        if ampm and not 1 <= hour <= 12:
            return None
        hour = hour % 12 + (12 if ampm == "PM" else 0) if ampm else hour
        written = midnight.replace(hour=hour, minute=int(parts.get("M") or 0), second=int(parts.get("S") or 0))
    except ValueError:
        return None
    offset = _zone(parts.get("zone"))
    if offset is not None and abs(offset) > _EAST:
        return None  # no zone is that far from UTC
    if parts.get("H") is None:  # a date alone: the whole day
        if offset is not None:
            return midnight - offset, midnight + timedelta(days=1) - offset
        return midnight - _EAST, midnight + timedelta(days=1) + _WEST
    precision = _PRECISION if parts.get("M") is not None else timedelta(hours=1)
    if offset is not None:
        return written - offset - precision, written - offset + precision
    return written - _EAST - precision, written + _WEST + precision


def expiry_windows(value: Any) -> tuple[Window, ...]:
    """Every window of instants Proofpoint's `secret_expiry` may mean (see above); () when it is not a date."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str) and value.strip().isdigit() and len(value.strip()) in (10, 13):
        number = float(value.strip())
    elif isinstance(value, str) and value.strip():
        return _text_windows(value.strip())
    else:
        return ()
    for (low, high), unit in ((_EPOCH_SECONDS, 1.0), (_EPOCH_MILLIS, 1000.0)):
        if low <= number < high:
            moment = datetime.fromtimestamp(number / unit, UTC)
            return ((moment - _PRECISION, moment + _PRECISION),)
    return ()


def _text_windows(text: str) -> tuple[Window, ...]:
    readings: list[Window | None] = []
    if match := _ISO_TEXT.fullmatch(text):
        readings.append(_moment(int(match["y"]), int(match["m"]), int(match["d"]), match.groupdict()))
    elif match := _DAY_MONTH.fullmatch(text):
        a, b = int(match["a"]), int(match["b"])
        readings += [_moment(int(match["y"]), month, day, match.groupdict()) for month, day in {(a, b), (b, a)}]
    elif match := _YEAR_FIRST.fullmatch(text):
        readings.append(_moment(int(match["y"]), int(match["m"]), int(match["d"]), match.groupdict()))
    elif _HTTP_DATE.fullmatch(text):
        try:
            moment = parsedate_to_datetime(text)
        except (ValueError, TypeError, OverflowError):  # no such day, month or hour: not a date
            return ()
        readings.append((moment - _PRECISION, moment + _PRECISION))
    else:
        readings.append(_iso_other(text))
    return tuple(sorted(w for w in readings if w is not None))


def _iso_other(text: str) -> Window | None:
    """What Python's ISO reader takes beyond the forms above (week and ordinal dates)."""
    try:
        if len(text) in (8, 10):
            day = date.fromisoformat(text)
            midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
            return midnight - _EAST, midnight + timedelta(days=1) + _WEST
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        local = moment.replace(tzinfo=UTC)
        return local - _EAST - _PRECISION, local + _WEST + _PRECISION
    moment = moment.astimezone(UTC)
    return moment - _PRECISION, moment + _PRECISION


def expiry_window(value: Any) -> Window | None:
    """The span of every instant `secret_expiry` may mean (the windows' hull), or None when it is not a date."""
    windows = expiry_windows(value)
    return (windows[0][0], max(end for _, end in windows)) if windows else None


def reported_use(name: str, settings: Mapping[str, Any]) -> ReportedUse:
    """What an org's settings show of the app and the secret its sync uses (never the secret)."""
    app = settings.get(APP_FIELD)
    expiry = settings.get("secret_expiry")
    shown = None if expiry is None or expiry == "" else str(expiry)
    windows = expiry_windows(expiry) if shown is not None else ()
    window = (windows[0][0], max(end for _, end in windows)) if windows else None
    status = settings.get("last_sync_status")
    # Only a GUID or a date is ever repeated (in alerts, the row, the log): anything else there could be a key
    # pasted into the wrong field, and is named, never shown.
    if APP_FIELD not in settings or app is None:
        app_id = None
    elif isinstance(app, str) and (app.strip() == "" or _GUID.fullmatch(app.strip())):
        app_id = app.strip()
    elif isinstance(app, str) and (braced := _BRACED_GUID.fullmatch(app.strip())):
        app_id = braced[1]  # .NET's "B" format of a GUID: the same application
    else:
        app_id = "(not an application id; hidden)"
    return ReportedUse(
        destination=name,
        app_id=app_id,
        expiry_shown=(shown if window else "(not a date; hidden)") if shown is not None else None,
        expiry_from=window[0] if window else None,
        expiry_to=window[1] if window else None,
        expiry_windows=windows,
        sync_status=(status if _WORD.fullmatch(status) else "(unrecognised)") if isinstance(status, str) and status
        else None,
        last_sync=parse_sync_time(settings.get("last_successful_sync")),
    )


def stacks_named(body: Any) -> set[str]:
    """The stacks an /endpoints answer names (its exact shape is undocumented: every string is searched)."""
    found: set[str] = set()
    if isinstance(body, str):
        found.update(m.lower() for m in _STACK_TOKEN.findall(body))
    elif isinstance(body, dict):
        for value in body.values():
            found |= stacks_named(value)
    elif isinstance(body, list):
        for value in body:
            found |= stacks_named(value)
    return found


class ProofpointDestination:
    """Writes the new secret into a Proofpoint Essentials org's Azure Active Directory Sync settings."""

    def __init__(
        self,
        secrets: SecretStore,
        *,
        base_url: str,
        verify: str | bool = True,
        timeout: Timeout = DEFAULT_TIMEOUT,
        session_factory: SessionFactory = requests.Session,
    ) -> None:
        """`session_factory` lends a session per call (`with`): a SessionPool shares one, and its connections, across
        the calls of a pass."""
        if "{stack}" not in base_url:
            raise ValueError("the Proofpoint base URL must contain {stack}")
        self._secrets = secrets
        self._base_url = base_url.rstrip("/")
        self._verify = verify
        self._timeout = timeout
        self._session_factory = session_factory

    def close(self) -> None:
        """Close the connections a pooled session factory keeps (the services' end); a factory of sessions closed
        after each call keeps none."""
        close = getattr(self._session_factory, "close", None)
        if callable(close):
            close()

    def _api(self, config: DestinationConfig) -> str:
        try:
            validate_proofpoint(config.options)
        except ValueError as error:
            raise rejected_config(config, error) from None
        explicit = config.options.get("base_url", "")
        return explicit.rstrip("/") if explicit else self._base_url.format(stack=config.options["stack"])

    async def _headers(self, config: DestinationConfig) -> dict[str, str]:
        name = config.options["account_secret"]
        user, password = _account((await self._secrets.get_named(name)).reveal(), name)
        return {"X-User": user, "X-Password": password, "Accept": "application/json"}

    @staticmethod
    def _failure(config: DestinationConfig) -> Failure:
        where = config.options.get("stack") or config.options.get("base_url", "")
        return Failure(f"Proofpoint ({where}, {config.options['domain'].lower()})", "Proofpoint",
                       "ProofpointOrgNotFound")

    def _settings_url(self, api: str, config: DestinationConfig) -> str:
        return f"{api}/orgs/{quote(config.options['domain'].lower(), safe='')}/settings/azure"

    async def deliver(self, config: DestinationConfig, delivery: Delivery) -> Confirmation:
        """Return once Proofpoint reads back the new application id with a key set; say what was confirmed."""
        api = self._api(config)
        headers = await self._headers(config)
        url = self._settings_url(api, config)
        scrub = Scrubber(delivery.secret.reveal(), headers["X-Password"])
        started = time.monotonic()
        try:
            confirmation = await in_thread(self._push, url, headers, delivery, self._failure(config), scrub)
        except RotationError as error:
            self._log(config, delivery, "failed", started, error.code)
            raise
        self._log(config, delivery, "ok", started, "", confirmation)
        return confirmation

    async def last_sync(self, config: DestinationConfig) -> datetime | None:
        """Proofpoint's last successful sync of the org (None when its settings do not report one)."""
        api = self._api(config)
        headers = await self._headers(config)
        scrub = Scrubber(headers["X-Password"])
        settings = await in_thread(self._get, self._settings_url(api, config), headers, self._failure(config), scrub)
        return parse_sync_time(settings.get("last_successful_sync"))

    async def reported_use(self, config: DestinationConfig) -> ReportedUse:
        """The app and secret the org's sync uses, as its settings show them (one GET, changing nothing)."""
        api = self._api(config)
        headers = await self._headers(config)
        scrub = Scrubber(headers["X-Password"])
        settings = await in_thread(self._get, self._settings_url(api, config), headers, self._failure(config), scrub)
        return reported_use(config.name, settings)

    async def check(self, config: DestinationConfig) -> DestinationCheck:
        """A live check of the registration, changing nothing: the admin login (GET /me), the org's stack
        (GET /endpoints/{domain}) and its sync settings (what the read-back will be able to confirm)."""
        try:
            api = self._api(config)
            headers = await self._headers(config)
        except RotationError as error:
            return DestinationCheck(config.name, (), (error.message,))
        return await in_thread(self._check, api, headers, config)

    def _check(self, api: str, headers: Mapping[str, str], config: DestinationConfig) -> DestinationCheck:
        failure, scrub = self._failure(config), Scrubber(headers["X-Password"])
        domain = config.options["domain"].lower()
        findings: list[str] = []
        problems: list[str] = []
        with self._session_factory() as session:

            def get(url: str) -> Reply:
                return send(session, "GET", url, headers=headers, body=None, timeout=self._timeout,
                            verify=self._verify, failure=failure, scrub=scrub)

            try:
                me = get(f"{api}/me")
                if me.status != 200:
                    problems.append(f"the admin login fails: {status_error(me, failure, scrub).message}")
                    return DestinationCheck(config.name, tuple(findings), tuple(problems))
                findings.append("admin login ok")
                endpoints = get(f"{api}/endpoints/{quote(domain, safe='')}")
                if endpoints.status == 200:
                    named = stacks_named(endpoints.body)
                    mine = config.options.get("stack") or next(iter(stacks_named(config.options["base_url"])), "")
                    if named and mine and mine not in named:
                        problems.append(f"{domain} lives on {', '.join(sorted(named))}, not {mine}: register "
                                        f"stack {sorted(named)[0]}")
                    elif named:
                        findings.append(f"{domain} is on {', '.join(sorted(named))}")
                else:
                    problems.append(f"the org's stack is unknown: {status_error(endpoints, failure, scrub).message}")
                settings = get(self._settings_url(api, config))
                if settings.status != 200 or not isinstance(settings.body, dict):
                    problems.append(f"the Azure AD sync settings cannot be read: "
                                    f"{status_error(settings, failure, scrub).message}")
                else:
                    findings.append(self._available(settings.body))
            except RotationError as error:
                problems.append(error.message)
        return DestinationCheck(config.name, tuple(findings), tuple(problems))

    @staticmethod
    def _available(settings: Mapping[str, Any]) -> str:
        """Which confirmations a push will have, from what the GET shows."""
        shown = ["application_id" if APP_FIELD in settings else "no application_id",
                 f"ad_key ({key_shown(settings)})" if SECRET_FIELD in settings else "no ad_key",
                 "last_successful_sync (retirement waits for Proofpoint's sync)"
                 if "last_successful_sync" in settings else "no last_successful_sync (no sync proof)"]
        text = "settings show " + ", ".join(shown)
        missing = _not_shown(settings)
        if missing:
            text += f"; not shown, so never sent (a full-replace PUT would reset them): {', '.join(missing)}"
        return text

    async def preview(self, config: DestinationConfig, app_id: str) -> dict[str, Any]:
        """What a push to this org would do, changing nothing: the settings as Proofpoint returns them and the PUT a
        push would send, secret-like values hidden and the account password never shown."""
        api = self._api(config)
        headers = await self._headers(config)
        scrub = Scrubber(headers["X-Password"])
        url = self._settings_url(api, config)
        current = await in_thread(self._get, url, headers, self._failure(config), scrub)
        shown = masked(current, scrub)
        put = {**masked(put_body(current, app_id, NEW_SECRET_SHOWN), scrub), SECRET_FIELD: NEW_SECRET_SHOWN}
        notes = [f"ad_key: the GET shows {key_shown(current)}"]
        if APP_FIELD not in current:
            notes.append("application_id: not shown, so not sent; the push cannot confirm which app Proofpoint uses")
        elif not same_app(current[APP_FIELD], app_id):
            notes.append(f"application_id: the org names {_shown(APP_FIELD, current[APP_FIELD])}; a push sets this "
                         f"target's app {app_id}")
        missing = _not_shown(current)
        if missing:
            notes.append(f"not shown by the GET, so never sent (a full-replace PUT would reset them): "
                         f"{', '.join(missing)}")
        notes.append("last_successful_sync: reported, the old secret goes only after Proofpoint's next sync"
                     if "last_successful_sync" in current else
                     "last_successful_sync: not reported, the read-back is the only proof")
        return {
            "url": scrub(url),
            "get": shown,
            "put": put,
            "changes": list(changed_fields(current, app_id)),
            "hidden": sorted(str(k) for k, v in shown.items() if v == HIDDEN and k != SECRET_FIELD),
            "notes": notes,
        }

    def _get(self, url: str, headers: Mapping[str, str], failure: Failure, scrub: Scrubber) -> dict[str, Any]:
        with self._session_factory() as session:
            reply = send(session, "GET", url, headers=headers, body=None, timeout=self._timeout,
                         verify=self._verify, failure=failure, scrub=scrub)
        return self._settings_of(reply, failure, scrub)

    def _push(
        self, url: str, headers: Mapping[str, str], delivery: Delivery, failure: Failure, scrub: Scrubber
    ) -> Confirmation:
        with self._session_factory() as session:

            def call(method: str, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
                reply = send(session, method, url, headers=headers, body=body, timeout=self._timeout,
                             verify=self._verify, failure=failure, scrub=scrub)
                return self._settings_of(reply, failure, scrub)

            before = call("GET")
            body = put_body(before, delivery.app_id, delivery.secret.reveal())
            call("PUT", body)
            return self._confirm(before, call("GET"), delivery, failure, scrub)

    async def baseline(self, config: DestinationConfig) -> dict[str, Any]:
        """The org's settings a push must keep (see `kept`), read before the first push of a key and stored."""
        api = self._api(config)
        headers = await self._headers(config)
        scrub = Scrubber(headers["X-Password"])
        current = await in_thread(self._get, self._settings_url(api, config), headers, self._failure(config), scrub)
        return kept(current, scrub)

    @staticmethod
    def _settings_of(reply: Reply, failure: Failure, scrub: Scrubber) -> dict[str, Any]:
        if not 200 <= reply.status <= 299:
            raise status_error(reply, failure, scrub)
        if not isinstance(reply.body, dict):
            raise RotationError(f"{failure.label}: HTTP {reply.status} without a JSON settings object",
                                code="ProofpointUnexpectedAnswer")
        return reply.body

    @staticmethod
    def _confirm(
        before: Mapping[str, Any], seen: Mapping[str, Any], delivery: Delivery, failure: Failure, scrub: Scrubber,
    ) -> Confirmation:
        """What is observable after the write: the application id, a key being set, every other field as the first
        GET showed it (else drift), the sync."""
        problems = []
        checks: list[str] = []
        if APP_FIELD in before:
            if not same_app(seen.get(APP_FIELD), delivery.app_id):
                shown = _shown(APP_FIELD, seen[APP_FIELD]) if APP_FIELD in seen else "not shown"
                problems.append(f"application_id is {shown}, expected {delivery.app_id!r}")
            else:
                checks.append("application-id")
        if SECRET_FIELD in seen:
            # Proofpoint shows the key masked, if at all: set is all that can be seen.
            if not seen.get(SECRET_FIELD):
                problems.append("no key is set")
            else:
                checks.append("ad-key-present")
        if problems:
            # Accepted but not visible: maybe eventual consistency, maybe ignored; a retry re-pushes the same value.
            raise RotationError(scrub(f"{failure.label}: the new settings did not read back: {'; '.join(problems)}"),
                                code="ProofpointNotConfirmed")
        # Against the settings before the first push of this key (recorded by the engine: a re-run after a crash
        # reads them from the row) and against this push's own first read.
        changed = drift(delivery.baseline, seen) if delivery.baseline is not None else []
        named = {c.split(" ", 1)[0] for c in changed}
        changed += [c for c in drift(before, seen) if c.split(" ", 1)[0] not in named]
        if changed:
            # The key is stored but the org's other settings are not what they were: a human must look before the
            # old secret may go (a retry would read the changed settings as the new normal and miss it).
            raise DestinationDrift(
                scrub(f"{failure.label}: the push changed settings it should have kept: {'; '.join(changed)}"),
                code="ProofpointDrift", fields=tuple(c.split(" ", 1)[0] for c in changed),
            )
        checks.append("settings-kept")
        reported = "last_successful_sync" in seen
        if reported:
            checks.append("sync-reported")
        return Confirmation(tuple(checks), reported, parse_sync_time(seen.get("last_successful_sync")))

    @staticmethod
    def _log(config: DestinationConfig, delivery: Delivery, outcome: str, started: float, code: str,
             confirmation: Confirmation | None = None) -> None:
        logger.info(
            "destination push",
            extra={"destination": config.name, "kind": _KIND, "stack": config.options.get("stack"),
                   "domain": config.options.get("domain"), "tenant_id": delivery.tenant_id,
                   "app_id": delivery.app_id, "key_id": delivery.key_id, "outcome": outcome, "error_code": code,
                   "confirmation": ",".join(confirmation.checks) if confirmation else "",
                   "duration_ms": int((time.monotonic() - started) * 1000)},
        )


def child_orgs_of(body: Any, stack: str) -> list[ProofpointOrg]:
    """The customer orgs in Proofpoint's answer to `GET /orgs/{channel}/orgs`: `{"orgs": [...]}` (PSProofpoint's
    Get-ProofpointOrg -Children reads `.orgs`), each named by its `primary_domain` (the API guide: an organization is
    identified by its primary domain, and a GET of it returns all its domains). The other domains are read where the
    answer lists them (as strings, or objects with `name` or `domain`); an entry without a primary domain is
    skipped. Every org is taken to be on the channel's stack (an org on another one fails the dry run's check)."""
    entries = body.get("orgs") if isinstance(body, dict) else None
    if not isinstance(entries, list):
        raise RotationError("Proofpoint's org list: no orgs list in the answer", code="ProofpointUnexpectedAnswer")
    found = []
    for entry in entries:
        primary = entry.get("primary_domain") if isinstance(entry, dict) else None
        if not isinstance(primary, str) or not _DOMAIN.fullmatch(primary):
            continue
        domains = []
        for d in entry.get("domains") or ():
            name = d if isinstance(d, str) else (d.get("name") or d.get("domain")) if isinstance(d, dict) else None
            if isinstance(name, str) and _DOMAIN.fullmatch(name):
                domains.append(name.lower())
        found.append(ProofpointOrg(str(entry.get("name") or primary), primary.lower(), tuple(domains), stack))
    return found


class ProofpointOrgList:
    """ProofpointOrgs: the customer orgs under the MSP's channel org, read with the MSP's Proofpoint account."""

    def __init__(self, secrets: SecretStore, *, base_url: str, channel_domain: str, stack: str,
                 account_secret: str, verify: str | bool = True,
                 timeout: Timeout = DEFAULT_TIMEOUT,
                 session_factory: Callable[[], requests.Session] = requests.Session) -> None:
        self._secrets = secrets
        self._url = f"{base_url.rstrip('/').format(stack=stack)}/orgs/{quote(channel_domain.lower(), safe='')}/orgs"
        self._stack = stack
        self._channel = channel_domain.lower()
        self._account_secret = account_secret
        self._verify = verify
        self._timeout = timeout
        self._session_factory = session_factory

    async def child_orgs(self) -> list[ProofpointOrg]:
        user, password = _account((await self._secrets.get_named(self._account_secret)).reveal(),
                                  self._account_secret)
        headers = {"X-User": user, "X-Password": password, "Accept": "application/json"}
        failure = Failure(f"Proofpoint ({self._stack}, channel {self._channel})", "Proofpoint",
                          "ProofpointOrgNotFound")
        scrub = Scrubber(password)

        def get() -> Reply:
            with self._session_factory() as session:
                return send(session, "GET", self._url, headers=headers, body=None, timeout=self._timeout,
                            verify=self._verify, failure=failure, scrub=scrub)

        reply = await in_thread(get)
        if not 200 <= reply.status <= 299:
            raise status_error(reply, failure, scrub)
        return child_orgs_of(reply.body, self._stack)
