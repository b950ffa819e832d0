"""Partner sessions for bulk onboarding: signing a partner admin in (device code on the command line), opening the
GDAP session over it, and keeping a session between invocations in Key Vault only (PartnerSessions).

A kept session is one Key Vault secret, `onboarding-session-<runId>` (shared.bulk_onboarding.session_secret_name),
content type `application/x-partner-session`, holding JSON `{"refreshToken", "publicClient", "admin": {...}}`; it is
deleted when the run finishes (unless the admin asked to keep it) or on request, and it carries an expiry (Key
Vault's `exp` attribute, set by the caller: hours for a run's session, longer when the admin asked to keep it). Key
Vault does not refuse to read a secret past its `exp` (it is a marker: Azure/AzureKeyVault issue #19 shows a GET
answering 200 after it), so `open` refuses an expired session itself and the daily sweep
(shared.bulk_onboarding.sweep_sessions) deletes every expired one. Key Vault keeps a deleted secret for its
soft-delete retention (this vault: 90 days with purge protection, so it cannot be purged earlier; infra/README.md):
a later sign-in for the same run recovers the name before writing it again. Nothing here logs, raises or returns the
token.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import aiohttp
from azure.core.exceptions import AzureError, HttpResponseError, ResourceNotFoundError
from azure.identity import ManagedIdentityCredential as SyncManagedIdentityCredential
from azure.keyvault.secrets.aio import SecretClient

from shared.adapters.delegated import DelegatedSignIn
from shared.adapters.identity import TOKEN_EXCHANGE_SCOPE
from shared.adapters.partner import GdapPartnerSession
from shared.clock import SystemClock
from shared.errors import NotFound, RotationError
from shared.ports import Clock, PartnerSession
from shared.settings import Settings

log = logging.getLogger(__name__)
CONTENT_TYPE = "application/x-partner-session"
SESSION_PREFIX = "onboarding-session-"  # shared.bulk_onboarding.session_secret_name's
UNDATED_LIFETIME = timedelta(days=1)  # a session kept before expiries were set: swept a day after it was written


def sign_in(settings: Settings, http: aiohttp.ClientSession, *, confidential: bool) -> DelegatedSignIn:
    """A delegated sign-in to the MSP app in the partner (MSP) tenant: a public client (device code) or the
    rotator's confidential client (its federated client assertion, as for its app-only tokens)."""
    return DelegatedSignIn(authority=settings.authority_host, client_id=settings.msp_app_client_id,
                           home_tenant_id=settings.msp_tenant_id, session=http, ca_bundle=settings.ca_bundle,
                           client_assertion=client_assertion(settings) if confidential else None)


def client_assertion(settings: Settings) -> Callable[[], Awaitable[str]]:
    """The managed identity's token for api://AzureADTokenExchange: the MSP app's federated client assertion."""
    kwargs: dict[str, Any] = {}
    if settings.managed_identity_client_id:
        kwargs["client_id"] = settings.managed_identity_client_id
    credential = SyncManagedIdentityCredential(**kwargs)

    async def assertion() -> str:
        return str((await asyncio.to_thread(credential.get_token, TOKEN_EXCHANGE_SCOPE)).token)

    return assertion


def partner_session(settings: Settings, signed_in: DelegatedSignIn, http: aiohttp.ClientSession) -> GdapPartnerSession:
    """The GDAP session of a signed-in partner admin."""
    return GdapPartnerSession(signed_in, app_id=settings.msp_app_client_id, graph_base_url=settings.graph_base_url,
                              partner_center_url=settings.partner_center_url, session=http,
                              ca_bundle=settings.ca_bundle)


class KeyVaultPartnerSessions:
    """PartnerSessions in Key Vault: a session's refresh token and admin under a run-scoped secret name."""

    def __init__(self, client: SecretClient, settings: Settings, http: aiohttp.ClientSession,
                 clock: Clock | None = None) -> None:
        self._client = client
        self._settings = settings
        self._http = http
        self._clock = clock or SystemClock()

    async def keep(self, name: str, session: PartnerSession, expires_on: datetime) -> None:
        if not isinstance(session, GdapPartnerSession):
            raise RotationError("only a GDAP partner session can be kept", code="SessionNotKeepable")
        token = session.sign_in.refresh_token_for_vault()
        if not token:
            raise RotationError("the partner session holds no refresh token to keep (sign in again)",
                                code="NothingToKeep")
        a = session.admin
        value = json.dumps({"refreshToken": token, "publicClient": session.sign_in.public_client,
                            "admin": {"tenantId": a.tenant_id, "objectId": a.object_id,
                                      "userPrincipalName": a.user_principal_name, "displayName": a.display_name}})
        try:
            await self._set(name, value, expires_on)
        except HttpResponseError as error:
            if error.status_code != 409:
                raise self._failed("keeping", name, error) from None
            await self._recover(name)  # deleted before (a finished run signed in again): recover, then write
            try:
                await self._set(name, value, expires_on)
            except AzureError as again:
                raise self._failed("keeping", name, again) from None
        except AzureError as error:
            raise self._failed("keeping", name, error) from None
        log.info("partner session kept", extra={"event": "onboarding-session", "secret_name": name,
                                                "actor": a.user_principal_name})

    async def _set(self, name: str, value: str, expires_on: datetime) -> None:
        await self._client.set_secret(name, value, content_type=CONTENT_TYPE, tags={"purpose": "onboarding-session"},
                                      expires_on=expires_on)

    async def _recover(self, name: str) -> None:
        try:
            await self._client.recover_deleted_secret(name)  # the aio client waits until it is recovered
        except AzureError as error:
            raise self._failed("recovering", name, error) from None

    async def open(self, name: str) -> PartnerSession:
        try:
            secret = await self._client.get_secret(name)
        except ResourceNotFoundError:
            raise NotFound(f"no partner session is kept as {name}", code="PartnerSessionNotFound") from None
        except AzureError as error:
            raise self._failed("reading", name, error) from None
        if _expired(secret.properties.expires_on, secret.properties.created_on, self._clock.now()):
            raise NotFound(f"the partner session kept as {name} has expired", code="PartnerSessionNotFound")
        try:
            doc = json.loads(secret.value or "")
            upn, token, public = str(doc["admin"]["userPrincipalName"]), str(doc["refreshToken"]), \
                bool(doc["publicClient"])
        except (ValueError, KeyError, TypeError):
            raise RotationError(f"the Key Vault secret {name} is not a kept partner session",
                                code="PartnerSessionUnreadable") from None
        kept = sign_in(self._settings, self._http, confidential=not public)
        admin = await kept.resume(token)  # the partner adapter's: a refresh-token sign-in, which names the admin
        if admin.user_principal_name.lower() != upn.lower():
            await kept.close()
            raise RotationError(f"the Key Vault secret {name} holds another admin's session",
                                code="PartnerSessionUnreadable")
        return partner_session(self._settings, kept, self._http)

    async def forget(self, name: str) -> None:
        try:
            await self._client.delete_secret(name)  # the aio client waits until it is deleted
        except ResourceNotFoundError:
            return
        except AzureError as error:
            raise self._failed("deleting", name, error) from None
        log.info("partner session forgotten", extra={"event": "onboarding-session", "secret_name": name})

    async def expired(self, now: datetime) -> list[str]:
        try:
            return [p.name async for p in self._client.list_properties_of_secrets()
                    if p.name and p.name.startswith(SESSION_PREFIX) and _expired(p.expires_on, p.created_on, now)]
        except AzureError as error:
            raise self._failed("listing", "sessions", error) from None

    @staticmethod
    def _failed(doing: str, name: str, error: AzureError) -> RotationError:
        # The SDK's message never carries the value sent; only the type and status are repeated anyway.
        status = getattr(error, "status_code", None)
        return RotationError(f"Key Vault failed {doing} the partner session {name}: {type(error).__name__}"
                             + (f" (HTTP {status})" if status else ""), code="KeyVaultError")


def _expired(expires_on: datetime | None, created_on: datetime | None, now: datetime) -> bool:
    if expires_on is not None:
        return expires_on <= now
    return created_on is None or created_on + UNDATED_LIFETIME <= now
