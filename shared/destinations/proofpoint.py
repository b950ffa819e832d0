"""Proofpoint Essentials (kind "proofpoint"): the org's Azure AD sync settings, read, written, read back.

The settings endpoint is not in Proofpoint's published API guide; its only public client (PSProofpoint's
Set-ProofpointAzureSync) PUTs exactly the WRITABLE fields below. So the adapter PUTs only those, with the values
the GET showed (the application id and key replaced), leaves out what the GET did not show rather than invent it
(that client turns a missing flag into false, which would switch the customer's sync off), and treats every other
field as Proofpoint's own (read-only, optional). It then reads back what Proofpoint shows and says which
confirmation was available.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any
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
from shared.destinations.options import check_options, check_secret_name
from shared.domain import DestinationConfig
from shared.errors import RotationError
from shared.ports import Confirmation, Delivery, DestinationCheck, SecretStore

logger = logging.getLogger(__name__)

STACKS = ("us1", "us2", "us3", "us4", "us5", "eu1")
OPTIONS = ("stack", "base_url", "domain", "account_secret")
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
# Exactly what PSProofpoint's Set-ProofpointAzureSync PUTs (sync_frequency an integer of hours, flags booleans).
WRITABLE = ("primary_domain", "application_id", "ad_key", "default_user_role_name", "sync_frequency", *FLAGS)
_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$", re.IGNORECASE)
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


def writable_body(current: Mapping[str, Any], app_id: str, secret: str) -> dict[str, Any]:
    """The PUT body: the public client's fields as the GET showed them, the application id and key replaced.

    A field the GET did not show is left out, never defaulted; a value that cannot be sent in the type the
    client sends (an integer of hours, a JSON boolean) is left out too rather than guessed.
    """
    body: dict[str, Any] = {}
    for name in WRITABLE:
        if name in ("application_id", "ad_key") or name not in current:
            continue
        value = _as_sent(name, current[name])
        if value is not None:
            body[name] = value
    body["application_id"] = app_id
    body["ad_key"] = secret
    return body


def _as_sent(name: str, value: Any) -> Any:
    if name in FLAGS:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        return None
    if name == "sync_frequency":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().isdigit():
            return int(value)
        return None
    return value if isinstance(value, str) and value else None


def parse_sync_time(value: Any) -> datetime | None:
    """Proofpoint's last_successful_sync as an aware UTC datetime; None when absent or unreadable."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


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
        session_factory: Callable[[], requests.Session] = requests.Session,
    ) -> None:
        if "{stack}" not in base_url:
            raise ValueError("the Proofpoint base URL must contain {stack}")
        self._secrets = secrets
        self._base_url = base_url.rstrip("/")
        self._verify = verify
        self._timeout = timeout
        self._session_factory = session_factory

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
        shown = ["application_id" if "application_id" in settings else "no application_id",
                 "ad_key" if "ad_key" in settings else "no ad_key",
                 "last_successful_sync (retirement waits for Proofpoint's sync)"
                 if "last_successful_sync" in settings else "no last_successful_sync (no sync proof)"]
        missing = [name for name in WRITABLE if name not in settings and name not in ("ad_key", "application_id")]
        text = "settings show " + ", ".join(shown)
        if missing:
            text += f"; not shown, so never sent: {', '.join(missing)}"
        return text

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

            body = writable_body(call("GET"), delivery.app_id, delivery.secret.reveal())
            call("PUT", body)
            return self._confirm(call("GET"), body, delivery, failure)

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
        seen: Mapping[str, Any], sent: Mapping[str, Any], delivery: Delivery, failure: Failure
    ) -> Confirmation:
        """What is observable after the write: the application id, a key being set, the settings sent, the sync."""
        problems = []
        checks: list[str] = []
        if "application_id" in seen:
            if str(seen.get("application_id") or "").lower() != delivery.app_id.lower():
                problems.append(f"application_id is {seen.get('application_id')!r}, expected {delivery.app_id!r}")
            else:
                checks.append("application-id")
        if "ad_key" in seen:
            # Proofpoint never shows the key in clear: set (masked) is all that can be seen.
            if not seen.get("ad_key"):
                problems.append("no key is set")
            else:
                checks.append("ad-key-present")
        for name, value in sent.items():
            if name not in ("ad_key", "application_id") and name in seen and _as_sent(name, seen[name]) != value:
                problems.append(f"{name} is {seen[name]!r}, sent {value!r}")
        if problems:
            # Accepted but not visible: maybe eventual consistency, maybe ignored; a retry re-pushes the same value.
            raise RotationError(f"{failure.label}: the new settings did not read back: {'; '.join(problems)}",
                                code="ProofpointNotConfirmed")
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
