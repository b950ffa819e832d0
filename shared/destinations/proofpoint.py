"""Proofpoint Essentials (kind "proofpoint"): the org's Azure AD sync settings, read, merged, written, read back.

Whether Proofpoint's PUT merges or replaces is undocumented, so the adapter always writes the full settings it
read with only the application id, the key and the expiry changed, then reads them back to confirm.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

import requests

from shared.destinations.http import (
    DEFAULT_TIMEOUT,
    Failure,
    Reply,
    Scrubber,
    Timeout,
    in_thread,
    iso_utc,
    rejected_config,
    send,
    status_error,
)
from shared.destinations.options import check_options, check_secret_name
from shared.domain import DestinationConfig
from shared.errors import RotationError
from shared.ports import Delivery, SecretStore

logger = logging.getLogger(__name__)

STACKS = ("us1", "us2", "us3", "us4", "us5", "eu1")
OPTIONS = ("stack", "domain", "account_secret")
_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$", re.IGNORECASE)
_KIND = "proofpoint"


def validate_proofpoint(options: Mapping[str, str]) -> None:
    """Raise ValueError unless the options name a stack, an org's primary domain and the account's secret."""
    check_options(_KIND, options, required=OPTIONS, allowed=OPTIONS)
    if options["stack"] not in STACKS:
        raise ValueError(f"{_KIND} destination: stack must be one of {', '.join(STACKS)}, got {options['stack']!r}")
    if not _DOMAIN.match(options["domain"]):
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


def _expiry_like(current: Any, delivery: Delivery) -> str:
    """The new expiry in the format Proofpoint itself uses for the field (a date, or a UTC timestamp)."""
    if isinstance(current, str) and len(current) == 10:
        return iso_utc(delivery.expires)[:10]
    return iso_utc(delivery.expires)


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

    async def deliver(self, config: DestinationConfig, delivery: Delivery) -> None:
        """Return once Proofpoint reads back the new application id (and expiry) with a key set."""
        try:
            validate_proofpoint(config.options)
        except ValueError as error:
            raise rejected_config(config, error) from None
        stack, domain = config.options["stack"], config.options["domain"].lower()
        account_name = config.options["account_secret"]
        user, password = _account((await self._secrets.get_named(account_name)).reveal(), account_name)
        url = f"{self._base_url.format(stack=stack)}/orgs/{quote(domain, safe='')}/settings/azure"
        failure = Failure(f"Proofpoint ({stack}, {domain})", "Proofpoint", "ProofpointOrgNotFound")
        scrub = Scrubber(delivery.secret.reveal(), password)
        started = time.monotonic()
        try:
            await in_thread(self._push, url, {"X-User": user, "X-Password": password}, delivery, failure,
                                    scrub)
        except RotationError as error:
            self._log(config, delivery, "failed", started, error.code)
            raise
        self._log(config, delivery, "ok", started, "")

    def _push(
        self, url: str, headers: Mapping[str, str], delivery: Delivery, failure: Failure, scrub: Scrubber
    ) -> None:
        with self._session_factory() as session:

            def call(method: str, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
                reply = send(session, method, url, headers={**headers, "Accept": "application/json"}, body=body,
                             timeout=self._timeout, verify=self._verify, failure=failure, scrub=scrub)
                return self._settings_of(reply, failure, scrub)

            current = call("GET")
            merged = dict(current)
            merged["application_id"] = delivery.app_id
            merged["ad_key"] = delivery.secret.reveal()
            if "secret_expiry" in current:
                merged["secret_expiry"] = _expiry_like(current["secret_expiry"], delivery)
            call("PUT", merged)
            self._confirm(call("GET"), merged, delivery, failure)

    @staticmethod
    def _settings_of(reply: Reply, failure: Failure, scrub: Scrubber) -> dict[str, Any]:
        if not 200 <= reply.status <= 299:
            raise status_error(reply, failure, scrub)
        if not isinstance(reply.body, dict):
            raise RotationError(f"{failure.label}: HTTP {reply.status} without a JSON settings object",
                                code="ProofpointUnexpectedAnswer")
        return reply.body

    @staticmethod
    def _confirm(seen: Mapping[str, Any], sent: Mapping[str, Any], delivery: Delivery, failure: Failure) -> None:
        """What is observable after the write: the application id, a key being set, the expiry date."""
        problems = []
        if str(seen.get("application_id", "")).lower() != delivery.app_id.lower():
            problems.append(f"application_id is {seen.get('application_id')!r}, expected {delivery.app_id!r}")
        if not seen.get("ad_key", "x"):
            problems.append("no key is set")
        if "secret_expiry" in sent and str(seen.get("secret_expiry") or "")[:10] != str(sent["secret_expiry"])[:10]:
            problems.append(f"secret_expiry is {seen.get('secret_expiry')!r}, expected {sent['secret_expiry']!r}")
        if problems:
            # Accepted but not visible: maybe eventual consistency, maybe ignored; a retry re-pushes the same value.
            raise RotationError(f"{failure.label}: the new settings did not read back: {'; '.join(problems)}",
                                code="ProofpointNotConfirmed")

    @staticmethod
    def _log(config: DestinationConfig, delivery: Delivery, outcome: str, started: float, code: str) -> None:
        logger.info(
            "destination push",
            extra={"destination": config.name, "kind": _KIND, "stack": config.options.get("stack"),
                   "domain": config.options.get("domain"), "tenant_id": delivery.tenant_id,
                   "app_id": delivery.app_id, "key_id": delivery.key_id, "outcome": outcome, "error_code": code,
                   "duration_ms": int((time.monotonic() - started) * 1000)},
        )
