"""Pushes: `POST /api/push {"tenantId", "appId"}` for operators and automation, and Key Vault's Event Grid events
through the native Event Grid trigger (`push_events`; endpoint type AzureFunction, no webhook, no handshake).

A `SecretNewVersionCreated` event for a target's secret (`ppsync-<tenant>-<app>`) in the rotator's own vault is the
adoption of a version written by hand (shared/protocol/adopt.py): the rotator's own versions (its tags) are ignored,
a hand-written one is proven with a token and pushed through the protocol. Event Grid delivers at least once and may
repeat: the event is keyed by the version it announces (a hash of the vault, secret and version: the same however
many copies, whatever their ids, and never truncated), which is recorded as handled (Tables, EVENT_SEEN_HOURS) only
once the engine gave a final answer. An invocation that could not finish (the target busy, a service failing)
raises, so Event Grid delivers the event again; adoption itself is idempotent (a version already in the row or staged
by the rotator is not adopted twice).
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
from dataclasses import asdict
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import azure.functions as func

from shared.bootstrap import invocation_services
from shared.domain import Actor, actor_of, target_of_secret
from shared.entrypoints.access import Role, authorize
from shared.entrypoints.web import ALL_METHODS, HttpError, allow, handled, json_response, read_json
from shared.errors import NotFound
from shared.registry import guid

log = logging.getLogger(__name__)
bp = func.Blueprint()  # type: ignore[no-untyped-call]

NEW_VERSION_EVENT = "Microsoft.KeyVault.SecretNewVersionCreated"
# Event Grid retries a delivery for up to 24 hours by default: a replay within that window is skipped.
EVENT_SEEN_HOURS = 25


@bp.route(route="push", methods=ALL_METHODS, auth_level=func.AuthLevel.ANONYMOUS)
@handled
async def push(req: func.HttpRequest) -> func.HttpResponse:
    """Push one target's verified secret to its destinations now (role Rotator.Operate)."""
    allow(req, "POST")
    who = authorize(req, Role.OPERATE)
    body = read_json(req)
    if not isinstance(body, dict) or set(body) != {"tenantId", "appId"}:
        raise HttpError(422, "InvalidRequest", 'send {"tenantId": GUID, "appId": GUID}')
    tenant_id, app_id = guid(body.get("tenantId"), "tenantId"), guid(body.get("appId"), "appId")
    async with invocation_services() as svc:
        outcome = await svc.engine.push_now(tenant_id, app_id, actor_of(Actor.MANUAL, who.name))
    return json_response(asdict(outcome))


def new_version_of(event: func.EventGridEvent, vault_url: str) -> tuple[str, str] | None:
    """The (secret name, version) a SecretNewVersionCreated event of our vault announces, or None for any other
    event (another type, another vault, malformed data)."""
    if event.event_type != NEW_VERSION_EVENT:
        return None
    data: Any = event.get_json()
    if not isinstance(data, dict):
        return None
    name, version, object_id = data.get("ObjectName"), data.get("Version"), data.get("Id")
    if not (isinstance(name, str) and isinstance(version, str) and isinstance(object_id, str)) \
            or not (name and version) or data.get("ObjectType", "Secret") != "Secret":
        return None
    # Our vault only: the object's id is https://<vault host>/secrets/<name>/<version>.
    ours, theirs = urlsplit(vault_url), urlsplit(object_id)
    expected = f"/secrets/{name}/{version}"
    if (theirs.scheme, theirs.netloc.lower()) != (ours.scheme, ours.netloc.lower()) \
            or theirs.path.rstrip("/").lower() != expected.lower():
        return None
    # Every field that names a vault must name ours: an event whose VaultName or topic (the vault's resource id,
    # .../providers/Microsoft.KeyVault/vaults/<name>) contradicts its Id is not Key Vault's (Key Vault's event schema,
    # learn.microsoft.com/azure/event-grid/event-schema-key-vault). A vault's name is its host's first label; a
    # vault served at an address (the local sandbox) has no name to compare, and only its Id is checked.
    vault_name = _vault_name(ours.hostname or "")
    if vault_name is not None:
        named = data.get("VaultName")
        if named is not None and (not isinstance(named, str) or named.lower() != vault_name):
            return None
        topic = event.topic
        if topic and not topic.lower().rstrip("/").endswith(f"/providers/microsoft.keyvault/vaults/{vault_name}"):
            return None
    return name, version


def _vault_name(host: str) -> str | None:
    """The vault's name from its host (`<name>.vault.azure.net` and the sovereign clouds' suffixes), or None for an
    address."""
    try:
        ipaddress.ip_address(host)
        return None
    except ValueError:
        return host.split(".", 1)[0].lower() or None


def event_key(vault_url: str, name: str, version: str) -> str:
    """What makes two deliveries the same event: the version they announce (fixed length, never truncated)."""
    text = f"{urlsplit(vault_url).netloc.lower()}/{name.lower()}/{version}"
    return "kv-version-" + hashlib.sha256(text.encode("utf-8")).hexdigest()


# Outcomes after which the event is done with; any other (busy, failed) is delivered again by Event Grid.
FINAL = {"rotated", "push-incomplete", "own-version", "already-adopted", "unknown-version", "not-adopted",
         "unknown-target"}


class EventNotHandled(Exception):
    """Raised to make Event Grid deliver the event again (the target was busy, or a service failed)."""


@bp.event_grid_trigger(arg_name="event")
async def push_events(event: func.EventGridEvent) -> None:
    """Key Vault's SecretNewVersionCreated: adopt a version written by hand; ignore the rotator's own."""
    event_id = str(event.id or "")
    logged = {"event": "push-event", "event_id": hashlib.sha256(event_id.encode()).hexdigest()[:16] if len(
        event_id) > 64 else event_id, "event_type": event.event_type}
    async with invocation_services() as svc:
        vault_url = svc.settings.key_vault_url
        announced = new_version_of(event, vault_url)
        target = target_of_secret(announced[0]) if announced else None
        if announced is None or target is None:
            log.info("event ignored", extra={**logged, "outcome": "ignored"})
            return
        (tenant_id, app_id), (name, version) = target, announced
        key = event_key(vault_url, name, version)
        now = svc.engine.clock.now()
        if await svc.state.event_seen(key, now):
            log.info("event replayed", extra={**logged, "outcome": "duplicate", "tenant_id": tenant_id,
                                              "app_id": app_id})
            return
        try:
            outcome = await svc.engine.adopt_version(tenant_id, app_id, version, Actor.EVENT)
            result, message = outcome.result, outcome.message
        except NotFound:
            result, message = "unknown-target", ""
        log.info("event handled", extra={**logged, "tenant_id": tenant_id, "app_id": app_id, "version": version,
                                         "outcome": result})
        if result not in FINAL:
            raise EventNotHandled(f"version {version} of {name}: {result} {message}".strip())
        await svc.state.claim_event(key, now, timedelta(hours=EVENT_SEEN_HOURS))
