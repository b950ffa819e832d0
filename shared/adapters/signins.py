"""Sign-in evidence from Entra ID's sign-in log (Microsoft Graph beta `/auditLogs/signIns`).

Why this read (docs/evidence.md, "Reading the evidence"): only the beta sign-in log carries, per service-principal
sign-in, the credential used (`servicePrincipalCredentialKeyId`) with its exact time, address and resource; v1.0's
signIn has neither the key id nor the `signInEventTypes` filter. The beta reports (`appCredentialSignInActivities`)
give only a last sign-in per key, at a granularity and freshness Microsoft does not document, and no first sign-in
since the push: they cannot say "the new key signed in after the push" (`credential_report` reads it as a supplement
that can only keep an old key: docs/evidence.md, "The credential activity report"). One app's service-principal
sign-ins since the push are few (a sync a day, a few probes), so one filtered request usually answers.

msgraph-sdk serves v1.0 only (the beta models are another package, msgraph-beta-sdk, not installed): the read is a
plain GET on the same aiohttp session and with the same tenant credential as shared/adapters/graph.py's reads, and
its error answers are translated by the same rules.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp

# The plain-read helpers of the directory adapter: the same error translation and time parsing for every Graph read.
from shared.adapters.graph import GraphAnswer, _guid, _when, get_json, read_retrying
from shared.adapters.identity import Credentials
from shared.errors import RotationError
from shared.ports import Clock, CredentialSignIns, ReportedSignIns, SignInEvidence

# Graph's documented maximum page of the sign-in log (signin-list.md: "The maximum and default page size is 1,000").
PAGE_SIZE = 1000
_ATTEMPTS = 4
_TIMEOUT = aiohttp.ClientTimeout(total=60)
PERMISSION_DENIED = "Authorization_RequestDenied"
NO_PREMIUM = "Authentication_RequestFromNonPremiumTenantOrB2CTenant"
# The refusals that mean "this tenant does not let us read its sign-in log": answered per target, never raised.
REASONS = {
    PERMISSION_DENIED: "the rotator may not read this tenant's sign-in logs: grant it the Microsoft Graph "
                       "application permissions AuditLog.Read.All and Directory.Read.All (admin consent)",
    NO_PREMIUM: "Entra ID refuses to give this tenant's sign-in logs: the tenant needs a Microsoft Entra ID P1 or "
                "P2 licence, and the rotator both AuditLog.Read.All and Directory.Read.All",
}


def beta_url(graph_base_url: str) -> str:
    """The beta endpoint beside the configured v1.0 one (https://graph.microsoft.com/v1.0 -> .../beta)."""
    base = graph_base_url.rstrip("/")
    root, _, version = base.rpartition("/")
    return f"{root}/beta" if version.lower() == "v1.0" else f"{base}/beta"


def _filter(app_id: str, since: datetime) -> str:
    # The time is written to the second, rounded down: a sign-in in the same second as `since` is still asked for,
    # and dropped below if it came before `since`.
    moment = since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return (f"appId eq '{_guid(app_id)}' and signInEventTypes/any(t: t eq 'servicePrincipal') "
            f"and status/errorCode eq 0 and createdDateTime ge {moment}")


@dataclass
class _Tally:
    """What the log showed so far of one key's sign-ins."""

    first: datetime
    last: datetime
    last_ip: str | None
    last_resource: str | None

    def add(self, when: datetime, ip: str | None, resource: str | None) -> None:
        self.first = min(self.first, when)
        if when >= self.last:
            self.last, self.last_ip, self.last_resource = when, ip, resource


class GraphSignInLog:
    """SignInLog over the beta sign-in log: one app's successful service-principal sign-ins since a moment, paged,
    reduced per credential key id as the pages arrive."""

    def __init__(self, credentials: Credentials, graph_base_url: str, session: aiohttp.ClientSession,
                 clock: Clock) -> None:
        self._credentials = credentials
        self._url = beta_url(graph_base_url) + "/auditLogs/signIns"
        self._report_url = beta_url(graph_base_url) + "/reports/appCredentialSignInActivities"
        self._session = session
        self._clock = clock
        self.sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    async def credential_sign_ins(self, tenant_id: str, app_id: str, since: datetime,
                                  probes: frozenset[str] = frozenset()) -> SignInEvidence:
        read_at = self._clock.now()
        tallies: dict[str, _Tally] = {}
        probed: dict[str, datetime] = {}
        try:
            params = {"$filter": _filter(app_id, since), "$top": str(PAGE_SIZE)}
            async for row in self._rows(tenant_id, app_id, self._url, params):
                key_id = str(row.get("servicePrincipalCredentialKeyId") or "").lower()
                when = _instant(row.get("createdDateTime"), "sign-in log")
                if not key_id or when is None or when < since:
                    continue  # a federated or certificate-less sign-in names no key; a moment before the window
                if str(row.get("correlationId") or "").lower() in probes:
                    # The rotator's own verify probe (its request id is Entra's correlationId): never anyone's use.
                    probed[key_id] = min(when, probed.get(key_id, when))
                    continue
                ip, resource = row.get("ipAddress") or None, row.get("resourceDisplayName") or None
                if key_id in tallies:
                    tallies[key_id].add(when, ip, resource)
                else:
                    tallies[key_id] = _Tally(when, when, ip, resource)
        except _Refused as refused:
            return SignInEvidence(False, read_at, since, code=refused.code, reason=REASONS[refused.code])
        credentials = {k: CredentialSignIns(k, t.first, t.last, t.last_ip, t.last_resource, probed.get(k))
                       for k, t in tallies.items()}
        credentials.update({k: CredentialSignIns(k, None, None, probe_sign_in=at)
                            for k, at in probed.items() if k not in tallies})
        return SignInEvidence(True, read_at, since, credentials)

    async def credential_report(self, tenant_id: str, app_id: str) -> ReportedSignIns:
        """The credential activity report's last sign-in per key of the app (`$filter=appId eq`, every page). Its
        freshness is not documented (docs/evidence.md): the caller uses it only to keep a key."""
        read_at = self._clock.now()
        last: dict[str, datetime] = {}
        params = {"$filter": f"appId eq '{_guid(app_id)}'"}
        try:
            async for row in self._rows(tenant_id, app_id, self._report_url, params, "credential activity report"):
                key_id = str(row.get("keyId") or "").lower()
                activity = row.get("signInActivity")
                when = (_instant(activity.get("lastSignInDateTime"), "credential activity report")
                        if isinstance(activity, dict) else None)
                if key_id and when is not None:
                    last[key_id] = max(when, last.get(key_id, when))
        except _Refused as refused:
            return ReportedSignIns(False, read_at, code=refused.code)
        return ReportedSignIns(True, read_at, last)

    async def _rows(self, tenant_id: str, app_id: str, url: str, first: dict[str, str],
                    what: str = "sign-in log") -> AsyncIterator[dict[str, Any]]:
        """Every row of every page, a page at a time (following @odata.nextLink)."""
        link: str | None = url
        params: dict[str, str] | None = first
        while link:
            page = await self._page(tenant_id, app_id, link, params, what)
            for row in page.get("value") or []:
                if isinstance(row, dict):
                    yield row
            link, params = page.get("@odata.nextLink"), None

    async def _page(self, tenant_id: str, app_id: str, url: str, params: dict[str, str] | None,
                    source: str = "sign-in log") -> dict[str, Any]:
        """One page; throttling and transient server errors retried (a read changes nothing), refusals raised."""
        what = f"reading the {source} of app {app_id}"

        def refusal(answer: GraphAnswer) -> Exception | None:
            return _Refused(answer.code) if answer.status == 403 and answer.code in REASONS else None

        return await read_retrying(lambda: self._get(tenant_id, url, params), tenant_id, what, _ATTEMPTS,
                                   self.sleep, refusal)

    async def _get(self, tenant_id: str, url: str, params: dict[str, str] | None) -> dict[str, Any]:
        doc = await get_json(self._session, self._credentials.graph(tenant_id), url, params, _TIMEOUT)
        if not isinstance(doc, dict):
            raise RotationError(f"Graph (tenant {tenant_id}) answered something else than a page",
                                code="UnexpectedAnswer")
        return doc


class _Refused(Exception):
    """The tenant refuses the read for want of a permission or a licence (Graph's code)."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


# An offset with a one-digit hour, as every example of the credential activity report writes its days
# ("2021-03-18T00:00:00-8:00", microsoft-graph-docs-contrib reportroot-list-appcredentialsigninactivities.md), which
# datetime.fromisoformat refuses.
_SHORT_OFFSET = re.compile(r"([+-])(\d):(\d\d)$")


def _instant(value: object, source: str) -> datetime | None:
    """A time of a sign-in row as Graph writes it (`_when`), a one-digit offset hour too. Anything else that is not
    a time is Graph's unexpected answer (RotationError, the read fails as a whole): a ValueError escaped the pass."""
    if isinstance(value, str):
        value = _SHORT_OFFSET.sub(r"\g<1>0\2:\3", value.strip())
    try:
        return _when(value)
    except ValueError:
        raise RotationError(f"the {source} names a time that is not one: {str(value)[:40]!r}",
                            code="UnexpectedAnswer") from None
