"""The configurable HTTP destination (kind "http"; the Vircom Portal preset), and the HTTP exchange it shares
with the Proofpoint adapter: `requests` in a worker thread, fixed timeouts, no redirects, scrubbed error text.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar
from urllib.parse import parse_qsl, quote, urlparse

import requests

from shared.destinations.options import check_options, check_secret_name, has_control_characters
from shared.destinations.transport import BlockedDestination, GuardedSession, check_host, guarded_sessions
from shared.domain import DestinationConfig
from shared.errors import Ambiguous, DestinationRejected, NotFound, RotationError, Throttled, Unreachable
from shared.ports import Delivery, SecretStore

logger = logging.getLogger(__name__)
T = TypeVar("T")

# requests is synchronous: deliveries run on threads. asyncio's default pool has only cores + 4 threads, which
# queued the pushes of a concurrent pass behind each other (docs/benchmarks.md); a pool of their own does not.
PUSH_THREADS = 32
_pool: ThreadPoolExecutor | None = None


async def in_thread(call: Callable[..., T], *args: Any) -> T:
    """Run a blocking delivery step on the destinations' own thread pool."""
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=PUSH_THREADS, thread_name_prefix="destination")
    return await asyncio.get_running_loop().run_in_executor(_pool, functools.partial(call, *args))

Timeout = tuple[float, float]
DEFAULT_TIMEOUT: Timeout = (5.0, 30.0)  # (connect, read) seconds
_MAX_DETAIL = 300


# ---------------------------------------------------------------------------------------------------------------
# The exchange shared by the HTTP adapters


class Scrubber:
    """Removes secret values (raw, JSON-escaped, URL-encoded) from text that may echo a request."""

    def __init__(self, *values: str) -> None:
        forms: set[str] = set()
        for value in values:
            if value:
                forms.update({value, json.dumps(value)[1:-1], quote(value, safe="")})
        # Longest first, so a form containing another is replaced whole.
        self._forms = sorted(forms, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for form in self._forms:
            text = text.replace(form, "***")
        return text


@dataclass(frozen=True)
class Reply:
    """What a destination answered: status, headers, and the body parsed as JSON when it is JSON."""

    status: int
    headers: Mapping[str, str]
    body: Any
    text: str

    def __repr__(self) -> str:
        # The text may echo what we sent; it is never shown whole.
        return f"Reply(status={self.status})"


@dataclass(frozen=True)
class Failure:
    """How one service names its failures: a label for messages and a prefix for codes."""

    label: str  # e.g. "Proofpoint (us1, contoso.com)"
    prefix: str  # e.g. "Proofpoint" -> ProofpointAuthFailed, ProofpointUnavailable
    not_found_code: str = "NotFound"


def send(
    session: requests.Session,
    method: str,
    url: str,
    *,
    headers: Mapping[str, str],
    body: Mapping[str, Any] | None,
    timeout: Timeout,
    verify: str | bool,
    failure: Failure,
    scrub: Scrubber,
) -> Reply:
    """One request; a transport failure becomes a RotationError whose code is `<prefix>Unavailable`."""
    started = time.monotonic()
    if not getattr(session, "guarded", False):
        # Every exchange goes through the address guard, whoever built the session.
        session.mount("https://", GuardedSession().get_adapter("https://"))
        session.mount("http://", GuardedSession().get_adapter("http://"))
        session.trust_env = False
    try:
        # verify per request: requests lets REQUESTS_CA_BUNDLE override a Session's verify.
        response = session.request(
            method, url, headers=dict(headers), json=body, timeout=timeout, verify=verify, allow_redirects=False
        )
    except BlockedDestination as error:
        # The name resolved to a loopback, private or metadata address (or the row names one): never sent.
        raise DestinationRejected(f"{failure.label}: {error}", code="DestinationBlocked") from None
    except requests.ConnectTimeout as error:
        raise RotationError(
            f"{failure.label}: no connection within {timeout[0]:g} s", code=f"{failure.prefix}Unavailable"
        ) from error
    except requests.Timeout as error:
        # Sent but unanswered: it may have been applied. Re-pushing the same value is harmless.
        raise Ambiguous(
            f"{failure.label}: no answer within {timeout[1]:g} s", code=f"{failure.prefix}Unavailable"
        ) from error
    except requests.RequestException as error:
        reason = scrub(type(error).__name__ + (f": {error.args[0]}" if error.args else ""))[:_MAX_DETAIL]
        raise Ambiguous(f"{failure.label}: connection failed ({reason})", code=f"{failure.prefix}Unavailable") from None
    text = response.text
    try:
        parsed: Any = response.json() if text else None
    except ValueError:
        parsed = None
    logger.debug(
        "destination call",
        extra={"service": failure.prefix, "method": method, "status": response.status_code,
               "duration_ms": int((time.monotonic() - started) * 1000)},
    )
    return Reply(response.status_code, dict(response.headers), parsed, text)


def remote_message(reply: Reply, scrub: Scrubber) -> str:
    """The service's own words about a failure (`message`, `error`, `detail`, 422 `errors`), scrubbed."""
    body = reply.body
    parts: list[str] = []
    if isinstance(body, dict):
        for key in ("message", "error", "detail", "error_description"):
            value = body.get(key)
            if isinstance(value, dict):
                value = value.get("message") or value.get("code")
            if isinstance(value, str) and value:
                parts.append(value)
                break
        errors = body.get("errors")
        if isinstance(errors, list):
            for item in errors:
                if isinstance(item, dict):
                    field = item.get("field")
                    message = item.get("message") or item.get("detail") or ""
                    parts.append(f"{field}: {message}" if field else str(message))
                elif isinstance(item, str):
                    parts.append(item)
    elif reply.text and not reply.text.lstrip().startswith("<"):
        parts.append(reply.text.strip())
    return scrub("; ".join(parts))[:_MAX_DETAIL]


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date); None when absent or unreadable."""
    raw = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def status_error(reply: Reply, failure: Failure, scrub: Scrubber) -> RotationError:
    """A non-success answer as the engine needs it: throttled, a human's problem, rejected, or retryable."""
    detail = remote_message(reply, scrub)
    status = reply.status
    text = f"{failure.label}: HTTP {status}" + (f": {detail}" if detail else "")
    p = failure.prefix
    if status == 429:
        return Throttled(text, code=f"{p}Throttled", retry_after=retry_after(reply.headers))
    if status == 401:
        return Unreachable(text, code=f"{p}AuthFailed")
    if status == 403:
        return Unreachable(text, code=f"{p}Forbidden")
    if status == 404:
        return NotFound(text, code=failure.not_found_code)
    if status in (400, 409, 422):
        return DestinationRejected(text, code=f"{p}Rejected")
    if 300 <= status < 400:
        # Never followed: a redirect would carry the secret somewhere nobody configured.
        return DestinationRejected(f"{text} (redirects are not followed; fix the URL)", code=f"{p}Redirected")
    if status >= 500:
        return RotationError(text, code=f"{p}Unavailable")
    return RotationError(text, code=f"{p}Failed")


def iso_utc(moment: datetime) -> str:
    """An ISO 8601 UTC timestamp with a Z, as Azure and most JSON APIs write them."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def rejected_config(config: DestinationConfig, error: ValueError) -> DestinationRejected:
    """A registry entry that no longer validates: a human must fix it, retrying will not."""
    return DestinationRejected(f"destination {config.name!r}: {error}", code="InvalidDestinationConfig")


# ---------------------------------------------------------------------------------------------------------------
# The configurable HTTP destination

BODY_FIELDS = ("tenantId", "applicationId", "clientSecret", "expiresOn", "keyId", "customer")
FIELD_PREFIX = "field_"
OPTIONS = ("url", "method", "auth_secret", "auth_header", "success_status", "success_field", "success_value", "preset")
DEFAULTS: dict[str, str] = {"method": "POST", "auth_header": "Authorization", "success_status": "200,201,202,204"}
# The Vircom Portal publishes no API: these are assumptions an MSP overrides per destination (docs/destinations.md).
PRESETS: dict[str, dict[str, str]] = {
    "vircom-portal": {
        "method": "POST",
        "auth_header": "Authorization",
        "auth_secret": "vircom-portal-auth",
        "success_status": "200,201,202,204",
        "success_field": "status",
        "success_value": "ok",
    },
}
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}")  # an RFC 9110 token (used with fullmatch)
_JSON_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]{0,63}")
# Query or fragment parameters that carry credentials (?code= is the Functions key, ?sig= a SAS signature).
_SECRET_PARAM = re.compile(
    r"(sig|signature|code|key|token|secret|password|passwd|pwd|pass|auth|authorization|apikey|api[_-]?key|"
    r"access[_-]?token|id[_-]?token|refresh[_-]?token|client[_-]?secret|credentials?|se|sv|sp|skoid)",
    re.IGNORECASE,
)
_KIND = "http"


def effective_options(options: Mapping[str, str]) -> dict[str, str]:
    """The options with the preset's and the kind's defaults filled in (explicit options win)."""
    preset = options.get("preset", "")
    if preset and preset not in PRESETS:
        raise ValueError(f"{_KIND} destination: unknown preset {preset!r} (known: {', '.join(sorted(PRESETS))})")
    return {**DEFAULTS, **PRESETS.get(preset, {}), **options}


def success_statuses(raw: str) -> frozenset[int]:
    problem = f"{_KIND} destination: success_status must be a comma list of 2xx codes, got {raw!r}"
    try:
        statuses = frozenset(int(part) for part in raw.split(",") if part.strip())
    except ValueError:
        raise ValueError(problem) from None
    if not statuses or not all(200 <= s <= 299 for s in statuses):
        raise ValueError(problem)
    return statuses


def validate_http(options: Mapping[str, str], allowed_hosts: frozenset[str] = frozenset()) -> None:
    """Raise ValueError unless the options describe a usable HTTP destination on a public host (or an allowed one,
    DESTINATION_ALLOWED_HOSTS, for the local sandbox)."""
    check_options(_KIND, options, required=("url",), allowed=OPTIONS, allowed_prefixes=(FIELD_PREFIX,))
    effective = effective_options(options)
    if not effective.get("auth_secret"):
        raise ValueError(f"{_KIND} destination: missing option auth_secret (the Key Vault secret holding the "
                         "auth header value)")
    raw_url = effective["url"]
    if has_control_characters(raw_url) or any(c.isspace() for c in raw_url) or "\\" in raw_url or len(raw_url) > 2048:
        raise ValueError(f"{_KIND} destination: url must be one https:// URL without spaces, control characters or "
                         "backslashes")
    try:
        url = urlparse(raw_url)
        port = url.port
    except ValueError:
        raise ValueError(f"{_KIND} destination: url is not a valid URL") from None
    if url.scheme != "https" or not url.hostname or not url.netloc:
        raise ValueError(f"{_KIND} destination: url must be an https:// URL with a host")
    if "@" in url.netloc or url.username or url.password:
        raise ValueError(f"{_KIND} destination: url must not carry credentials; use auth_secret")
    if port == 0:
        raise ValueError(f"{_KIND} destination: url has no usable port")
    params = parse_qsl(url.query, keep_blank_values=True) + parse_qsl(url.fragment, keep_blank_values=True)
    if any(_SECRET_PARAM.fullmatch(name.strip()) for name, _ in params):
        raise ValueError(f"{_KIND} destination: url must not carry a key or token in its query or fragment; use "
                         "auth_secret")
    if url.fragment:
        raise ValueError(f"{_KIND} destination: url must not have a #fragment (it is never sent)")
    try:
        check_host(url.hostname, allowed_hosts)
    except BlockedDestination as error:
        raise ValueError(f"{_KIND} destination: url {error} (server-side request forgery guard)") from None
    if effective["method"].upper() not in ("POST", "PUT"):
        raise ValueError(f"{_KIND} destination: method must be POST or PUT, got {effective['method']!r}")
    check_secret_name(_KIND, "auth_secret", effective["auth_secret"])
    if not _HEADER_NAME.fullmatch(effective["auth_header"]):
        raise ValueError(f"{_KIND} destination: auth_header must be an HTTP header name")
    success_statuses(effective["success_status"])
    if bool(effective.get("success_field")) != bool(effective.get("success_value")):
        raise ValueError(f"{_KIND} destination: success_field and success_value go together")
    renamed: set[str] = set()
    for key, value in options.items():
        if key.startswith(FIELD_PREFIX):
            field = key[len(FIELD_PREFIX):]
            if field not in BODY_FIELDS:
                raise ValueError(f"{_KIND} destination: {key!r} renames no body field (fields: "
                                 f"{', '.join(BODY_FIELDS)})")
            if not _JSON_KEY.fullmatch(value):
                raise ValueError(f"{_KIND} destination: {key!r} must be a JSON field name")
            renamed.add(value)
    names = [options.get(FIELD_PREFIX + f) or f for f in BODY_FIELDS]
    if len(set(names)) != len(names):
        raise ValueError(f"{_KIND} destination: field_* options give two body fields the same name")


def _observed(value: Any) -> str:
    """A JSON value as the success_value option spells it (true, 3, ok)."""
    if isinstance(value, str):
        return value
    return json.dumps(value)


class HttpDestination:
    """POSTs (or PUTs) the new secret as JSON to a configured https endpoint and checks the answer."""

    def __init__(
        self,
        secrets: SecretStore,
        *,
        verify: str | bool = True,
        timeout: Timeout = DEFAULT_TIMEOUT,
        session_factory: Callable[[], requests.Session] | None = None,
        allowed_hosts: frozenset[str] = frozenset(),
    ) -> None:
        self._secrets = secrets
        self._allowed_hosts = allowed_hosts
        self._verify = verify
        self._timeout = timeout
        self._session_factory = session_factory or guarded_sessions(allowed_hosts)

    async def deliver(self, config: DestinationConfig, delivery: Delivery) -> None:
        """Return once the endpoint answered with a success status (and success field)."""
        try:
            validate_http(config.options, self._allowed_hosts)
        except ValueError as error:
            raise rejected_config(config, error) from None
        options = effective_options(config.options)
        auth = await self._secrets.get_named(options["auth_secret"])
        secret = delivery.secret.reveal()
        scrub = Scrubber(secret, auth.reveal())
        host = urlparse(options["url"]).hostname
        failure = Failure(f"destination {config.name!r} ({host})", "HttpDestination", "HttpDestinationNotFound")
        values: dict[str, str] = {
            "tenantId": delivery.tenant_id,
            "applicationId": delivery.app_id,
            "clientSecret": secret,
            "expiresOn": iso_utc(delivery.expires),
            "keyId": delivery.key_id,
            "customer": delivery.customer,
        }
        body = {options.get(FIELD_PREFIX + name) or name: value for name, value in values.items()}
        headers = {options["auth_header"]: auth.reveal(), "Accept": "application/json"}
        started = time.monotonic()
        try:
            reply = await in_thread(
                self._exchange, options["method"].upper(), options["url"], headers, body, failure, scrub
            )
            self._check(reply, options, failure, scrub)
        except RotationError as error:
            self._log(config, delivery, "failed", started, error.code)
            raise
        self._log(config, delivery, "ok", started, "")

    def _exchange(
        self, method: str, url: str, headers: Mapping[str, str], body: Mapping[str, Any], failure: Failure,
        scrub: Scrubber,
    ) -> Reply:
        with self._session_factory() as session:
            return send(session, method, url, headers=headers, body=body, timeout=self._timeout,
                        verify=self._verify, failure=failure, scrub=scrub)

    @staticmethod
    def _check(reply: Reply, options: Mapping[str, str], failure: Failure, scrub: Scrubber) -> None:
        if reply.status not in success_statuses(options["success_status"]):
            raise status_error(reply, failure, scrub)
        field, expected = options.get("success_field", ""), options.get("success_value", "")
        if not field:
            return
        if not isinstance(reply.body, dict) or field not in reply.body:
            raise DestinationRejected(
                f"{failure.label}: HTTP {reply.status} without the success field {field!r} in a JSON object",
                code="HttpDestinationNotConfirmed",
            )
        seen = _observed(reply.body[field])
        if seen != expected:
            raise DestinationRejected(
                f"{failure.label}: {field}={scrub(seen)[:80]!r}, expected {expected!r}",
                code="HttpDestinationNotConfirmed",
            )

    @staticmethod
    def _log(config: DestinationConfig, delivery: Delivery, outcome: str, started: float, code: str) -> None:
        logger.info(
            "destination push",
            extra={"destination": config.name, "kind": _KIND, "tenant_id": delivery.tenant_id,
                   "app_id": delivery.app_id, "key_id": delivery.key_id, "outcome": outcome, "error_code": code,
                   "duration_ms": int((time.monotonic() - started) * 1000)},
        )
