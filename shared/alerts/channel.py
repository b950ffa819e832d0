"""The alert channel port: where a human hears about a condition, and the one webhook post every kind shares.

A channel kind is a small module (teams, slack, json) that turns a `Notice` into the body its service accepts and
posts it through `WebhookPost`. The webhook URL is a credential (anyone holding it can post; Teams Workflows and
Slack carry a signature or token in it): it lives only in Key Vault and is never logged, answered or put in an
error.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any, Protocol
from urllib.parse import urlparse

import aiohttp

from shared.errors import RotationError
from shared.ports import SecretStore
from shared.tls import tls_context

WEBHOOK_TIMEOUT_SECONDS = 15
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


class NoticeKind(str, Enum):
    """What a message on the channel says."""

    ALERT = "alert"  # a condition needs a human (at most once a day per condition and target while it holds)
    RESOLVED = "resolved"  # a condition told before no longer holds (once)
    TEST = "test"  # an operator's test of the channel


@dataclass(frozen=True)
class Notice:
    """One message for the channel: never a secret (conditions, ids, the engine's messages)."""

    kind: NoticeKind
    condition: str
    tenant_id: str
    app_id: str
    message: str
    at: datetime
    customer: str = ""
    details: Mapping[str, str] = field(default_factory=dict)

    @property
    def title(self) -> str:
        who = self.customer or self.tenant_id or "the rotator"
        if self.kind is NoticeKind.RESOLVED:
            return f"Sync-secret rotator: resolved: {self.condition} ({who})"
        if self.kind is NoticeKind.TEST:
            return "Sync-secret rotator: test alert"
        return f"Sync-secret rotator: {self.condition} ({who})"

    def facts(self) -> list[tuple[str, str]]:
        """The notice's facts as (name, value) pairs, in a stable order."""
        facts = [("Condition", self.condition)]
        if self.tenant_id:
            facts.append(("Tenant", self.tenant_id))
        if self.app_id:
            facts.append(("Application", self.app_id))
        facts += [(k, v) for k, v in sorted(self.details.items())]
        facts.append(("At", self.at.isoformat()))
        return facts


class AlertChannel(Protocol):
    """A channel kind: sends an alert (or a test) and a resolved note; each answers the channel's HTTP status.
    RotationError (WebhookUrlInvalid, WebhookUnreachable) when nothing was answered; never the URL."""

    @property
    def kind(self) -> str: ...

    async def send(self, notice: Notice) -> int: ...

    async def resolve(self, notice: Notice) -> int: ...


class WebhookPost:
    """Posts a JSON body to the webhook URL held in a Key Vault secret (read on each post: a rotated URL is used at
    once); answers the HTTP status."""

    def __init__(self, secrets: SecretStore, secret_name: str, *, ca_bundle: str = "") -> None:
        self._secrets = secrets
        self.secret_name = secret_name
        self._ca_bundle = ca_bundle

    async def __call__(self, body: Mapping[str, Any]) -> int:
        url = (await self._secrets.get_named(self.secret_name)).reveal().strip()
        parsed = urlparse(url)
        if not parsed.hostname or not (
            parsed.scheme == "https" or (parsed.scheme == "http" and parsed.hostname in _LOOPBACK)
        ):
            raise RotationError(
                f"Key Vault secret {self.secret_name!r} must hold an https:// webhook URL", code="WebhookUrlInvalid"
            )
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WEBHOOK_TIMEOUT_SECONDS)) as session,
                # Never follow a redirect: the body would go to a host the URL did not name.
                session.post(url, json=body, ssl=tls_context(self._ca_bundle), allow_redirects=False) as response,
            ):
                return response.status
        except (aiohttp.ClientError, TimeoutError) as error:
            # The exception's text can carry the URL: only its type is kept.
            raise RotationError(f"the alert webhook (Key Vault secret {self.secret_name!r}) is unreachable: "
                                f"{type(error).__name__}",
                                code="WebhookUnreachable") from None


# What a channel kind posts its body with (a WebhookPost; tests may pass a recorder).
Post = Callable[[Mapping[str, Any]], Awaitable[int]]


@dataclass(frozen=True)
class PostingChannel:
    """A channel kind that posts one body per notice (alert, test or resolved note alike): `render` is the kind's
    own body (Teams' Adaptive Card message, Slack's text and blocks, the generic JSON)."""

    kind: str
    render: Callable[[Notice], Mapping[str, Any]]
    post: Post

    async def send(self, notice: Notice) -> int:
        return await self.post(self.render(notice))

    async def resolve(self, notice: Notice) -> int:
        return await self.post(self.render(notice))
