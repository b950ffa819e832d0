"""Key Vault secrets data plane (api-version 2025-07-01 shapes), as azure-keyvault-secrets calls it.

Faithful to ../shared/contracts/keyvault/secrets.json: SecretBundle, DeletedSecretBundle, SecretItem,
SecretListResult with nextLink paging, KeyVaultError bodies, the bearer challenge, soft delete with
recover and purge. Ids are built from the host the request came to, as the real vault does.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, cast

from aiohttp import web

import sandbox.world

if TYPE_CHECKING:
    from sandbox.world import World

AUDIENCE = "https://vault.azure.net"
RECOVERY_LEVEL = "Recoverable+Purgeable"
RECOVERABLE_DAYS = 90
MAX_TAGS = 15
MAX_VALUE_BYTES = 25 * 1024
MAX_RESULTS = 25
# Key Vault's service limits page (learn.microsoft.com/azure/key-vault/general/service-limits, "Secrets, managed
# storage account keys, and vault transactions"): 300 CREATE secret per 10 s per vault and region; throttled
# requests do not count (learn.microsoft.com/azure/key-vault/general/overview-throttling).
CREATE_LIMIT = 300
LIMIT_WINDOW_SECONDS = 10.0
_NAME = re.compile(r"^[0-9a-zA-Z-]{1,127}$")
_API_VERSION = re.compile(r"^(7\.\d+|20\d\d-\d\d-\d\d)(-preview(\.\d+)?)?$")
_BACKUP_MAGIC = "SandboxKeyVaultSecretBackupV1."

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class VaultError(Exception):
    """An error the vault answers with, in KeyVaultError format."""

    def __init__(self, status: int, code: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after


def fault_body(status: int, code: str | None, message: str | None) -> dict[str, Any]:
    """The body an injected fault answers with: KeyVaultError, as the real vault throttles."""
    default_code = "Throttled" if status == 429 else "ServiceUnavailable" if status >= 500 else "BadParameter"
    default_message = (
        "Operations per second is over the limit. Retry after the time in the Retry-After header."
        if status == 429
        else "The service is temporarily unavailable."
    )
    return {"error": {"code": code or default_code, "message": message or default_message}}


def _not_found(name: str, version: str = "") -> VaultError:
    ident = f"{name}/{version}" if version else name
    return VaultError(
        404,
        "SecretNotFound",
        f"A secret with (name/id) {ident} was not found in this key vault. If you recently deleted this secret "
        "you may be able to recover it using the correct recovery command. For help resolving this issue, "
        "please see https://go.microsoft.com/fwlink/?linkid=2125182",
    )


@dataclass
class SecretVersion:
    """One version of a secret."""

    version: str
    value: str
    content_type: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    enabled: bool = True
    nbf: int | None = None
    exp: int | None = None
    created: int = 0
    updated: int = 0


@dataclass
class Secret:
    """A named secret: its versions in creation order (the last is the current one)."""

    name: str
    versions: list[SecretVersion] = field(default_factory=list)
    deleted_date: int | None = None
    scheduled_purge_date: int | None = None

    @property
    def latest(self) -> SecretVersion:
        return self.versions[-1]

    def version(self, version: str) -> SecretVersion:
        for item in self.versions:
            if item.version == version.lower():
                return item
        raise _not_found(self.name, version)


class KeyVaultState:
    """The vault's secrets, active and soft-deleted, keyed case-insensitively like the real vault."""

    def __init__(self, world: World) -> None:
        self._world = world
        self.secrets: dict[str, Secret] = {}
        self.deleted: dict[str, Secret] = {}
        self._counter = 0
        # When each write over HTTP was served (monotonic seconds, real time: a clock offset does not move it),
        # by kind: "create" (a new version, PUT), "update" (PATCH), "delete". Seeds are not counted.
        self.writes: dict[str, list[float]] = {"create": [], "update": [], "delete": []}
        self.create_limit = CREATE_LIMIT  # lowered by tests (POST /settings) to reach it quickly

    def reset(self) -> None:
        self.secrets.clear()
        self.deleted.clear()
        self._counter = 0
        for times in self.writes.values():
            times.clear()
        self.create_limit = CREATE_LIMIT

    def admit_create(self) -> None:
        """Throttle a create over Key Vault's limit (429 `Throttled`, Retry-After until the oldest leaves the
        window); a throttled request is not counted."""
        now = time.monotonic()
        recent = [t for t in self.writes["create"] if t > now - LIMIT_WINDOW_SECONDS]
        if len(recent) >= self.create_limit:
            wait = max(1, int(recent[0] + LIMIT_WINDOW_SECONDS - now + 0.999))
            raise VaultError(429, "Throttled", "Operations per second is over the limit. Retry after the time in the "
                             "Retry-After header.", retry_after=wait)

    def count_write(self, kind: str) -> None:
        self.writes[kind].append(time.monotonic())

    def write_counts(self) -> dict[str, Any]:
        """Per kind of write: the total, the most in any sliding 10 s window, and the count of each consecutive
        10 s window from the first write of any kind."""
        every = [t for times in self.writes.values() for t in times]
        start = min(every) if every else 0.0
        out: dict[str, Any] = {"windowSeconds": LIMIT_WINDOW_SECONDS, "createLimit": self.create_limit}
        for kind, times in self.writes.items():
            windows: list[int] = []
            for t in times:
                index = int((t - start) // LIMIT_WINDOW_SECONDS)
                windows += [0] * (index + 1 - len(windows))
                windows[index] += 1
            out[kind] = {"total": len(times), "maxPerWindow": _max_in_window(times, LIMIT_WINDOW_SECONDS),
                         "windows": windows}
        return out

    def seed(self, section: dict[str, Any]) -> None:
        """Add each listed secret as a new version (additive); "version" may fix its id (32 hex)."""
        for entry in section.get("secrets", []):
            attributes = {"enabled": bool(entry.get("enabled", True))}
            _, item = self.set_secret(
                entry["name"],
                {
                    "value": entry["value"],
                    "tags": entry.get("tags") or {},
                    "contentType": entry.get("contentType"),
                    "attributes": attributes,
                },
            )
            if entry.get("version"):
                # Tests replaying the official examples need the examples' own version ids.
                if not re.fullmatch(r"[0-9a-f]{32}", entry["version"]):
                    raise ValueError(f"a secret version is 32 lowercase hex digits, not {entry['version']!r}")
                item.version = entry["version"]

    def dump(self) -> dict[str, Any]:
        self.purge_due()
        return {
            "secrets": {s.name: [asdict(v) for v in s.versions] for s in self.secrets.values()},
            "deleted": {
                s.name: {
                    "deletedDate": s.deleted_date,
                    "scheduledPurgeDate": s.scheduled_purge_date,
                    "versions": [asdict(v) for v in s.versions],
                }
                for s in self.deleted.values()
            },
        }

    def _now(self) -> int:
        return int(self._world.now().timestamp())

    def _new_version(self, name: str) -> str:
        # Deterministic after a reset, so tests and demos see stable ids; shaped like the vault's 32 hex.
        self._counter += 1
        return hashlib.sha256(f"{name.lower()}:{self._counter}".encode()).hexdigest()[:32]

    def purge_due(self) -> None:
        """Soft-deleted secrets past their scheduled purge date are gone, as the vault purges them."""
        now = self._now()
        for key in [k for k, s in self.deleted.items() if (s.scheduled_purge_date or 0) <= now]:
            del self.deleted[key]

    def active(self, name: str) -> Secret:
        secret = self.secrets.get(name.lower())
        if secret is None:
            raise _not_found(name)
        return secret

    def deleted_secret(self, name: str) -> Secret:
        self.purge_due()
        secret = self.deleted.get(name.lower())
        if secret is None:
            raise VaultError(404, "SecretNotFound", f"Deleted Secret not found: {name}")
        return secret

    def set_secret(self, name: str, body: dict[str, Any]) -> tuple[Secret, SecretVersion]:
        """SetSecret: a new version becomes the current one."""
        _check_name(name)
        self.purge_due()
        if name.lower() in self.deleted:
            raise VaultError(
                409,
                "Conflict",
                f"Secret {name} is currently in a deleted but recoverable state, and its name cannot be reused; "
                "in this state, the secret can only be recovered or purged.",
            )
        value = body.get("value")
        if not isinstance(value, str):
            raise VaultError(400, "BadParameter", "Property 'value' is required and must be a string.")
        if len(value.encode()) > MAX_VALUE_BYTES:
            raise VaultError(400, "BadParameter", f"Secret value exceeds the maximum size of {MAX_VALUE_BYTES} bytes.")
        now = self._now()
        item = SecretVersion(version=self._new_version(name), value=value, created=now, updated=now)
        _apply_properties(item, body)
        secret = self.secrets.setdefault(name.lower(), Secret(name=name))
        secret.versions.append(item)
        return secret, item

    def update(self, name: str, version: str, body: dict[str, Any]) -> tuple[Secret, SecretVersion]:
        """UpdateSecret: contentType, tags (replaced when given) and enabled/nbf/exp of one version."""
        secret = self.active(name)
        item = secret.version(version) if version else secret.latest
        candidate = SecretVersion(**asdict(item))
        _apply_properties(candidate, body)
        candidate.updated = self._now()
        item.__dict__.update(candidate.__dict__)
        return secret, item

    def delete(self, name: str) -> Secret:
        """DeleteSecret: soft delete every version (recoverable for 90 days)."""
        secret = self.active(name)
        del self.secrets[name.lower()]
        now = self._now()
        secret.deleted_date = now
        secret.scheduled_purge_date = now + RECOVERABLE_DAYS * 86400
        self.deleted[name.lower()] = secret
        return secret

    def recover(self, name: str) -> Secret:
        secret = self.deleted_secret(name)
        if secret.name.lower() in self.secrets:
            raise VaultError(409, "Conflict", f"Secret {name} already exists.")
        del self.deleted[name.lower()]
        secret.deleted_date = None
        secret.scheduled_purge_date = None
        self.secrets[name.lower()] = secret
        return secret

    def purge(self, name: str) -> None:
        self.deleted_secret(name)
        del self.deleted[name.lower()]

    def backup(self, name: str) -> str:
        secret = self.active(name)
        payload = json.dumps({"name": secret.name, "versions": [asdict(v) for v in secret.versions]})
        blob = (_BACKUP_MAGIC + payload).encode()
        return base64.urlsafe_b64encode(blob).decode().rstrip("=")

    def restore(self, blob: Any) -> Secret:
        if not isinstance(blob, str):
            raise VaultError(400, "BadParameter", "Property 'value' is required.")
        try:
            text = base64.urlsafe_b64decode(blob + "=" * (-len(blob) % 4)).decode()
            if not text.startswith(_BACKUP_MAGIC):
                raise ValueError("not a backup")
            payload = json.loads(text[len(_BACKUP_MAGIC) :])
            secret = Secret(name=payload["name"], versions=[SecretVersion(**v) for v in payload["versions"]])
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise VaultError(400, "BadParameter", "Backup blob contains invalid or corrupt data.") from exc
        key = secret.name.lower()
        if key in self.secrets or key in self.deleted:
            raise VaultError(409, "Conflict", f"Secret {secret.name} already exists.")
        self.secrets[key] = secret
        return secret


def _max_in_window(times: list[float], window: float) -> int:
    """The most events in any half-open interval [t, t + window) (times in ascending order)."""
    best = first = 0
    for last, t in enumerate(times):
        while times[first] <= t - window:
            first += 1
        best = max(best, last - first + 1)
    return best


def _check_name(name: str) -> None:
    if not _NAME.match(name):
        raise VaultError(
            400,
            "BadParameter",
            f"The request URI contains an invalid name: {name}. Follow this rule: '^[0-9a-zA-Z-]+$', "
            "at most 127 characters.",
        )


def _apply_properties(item: SecretVersion, body: dict[str, Any]) -> None:
    """Apply contentType, tags and attributes from a Set or Update body, validating like the vault."""
    if "contentType" in body and body["contentType"] is not None:
        if not isinstance(body["contentType"], str):
            raise VaultError(400, "BadParameter", "Property 'contentType' must be a string.")
        item.content_type = body["contentType"]
    tags = body.get("tags")
    if tags is not None:
        if not isinstance(tags, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items()):
            raise VaultError(400, "BadParameter", "Property 'tags' must be an object of string values.")
        if len(tags) > MAX_TAGS:
            raise VaultError(400, "BadParameter", f"Too many tags: {len(tags)}; the maximum is {MAX_TAGS}.")
        if any(len(k) > 512 or len(v) > 256 for k, v in tags.items()):
            raise VaultError(400, "BadParameter", "Tag names are limited to 512 and values to 256 characters.")
        item.tags = dict(tags)
    attributes = body.get("attributes")
    if attributes is None:
        return
    if not isinstance(attributes, dict):
        raise VaultError(400, "BadParameter", "Property 'attributes' must be an object.")
    if "enabled" in attributes and attributes["enabled"] is not None:
        if not isinstance(attributes["enabled"], bool):
            raise VaultError(400, "BadParameter", "Property 'attributes.enabled' must be a boolean.")
        item.enabled = attributes["enabled"]
    for key in ("nbf", "exp"):
        if key in attributes:
            stamp = attributes[key]
            if stamp is not None and (not isinstance(stamp, int) or isinstance(stamp, bool)):
                raise VaultError(400, "BadParameter", f"Property 'attributes.{key}' must be a unix time integer.")
            setattr(item, key, stamp)


def _attributes(item: SecretVersion, *, full: bool) -> dict[str, Any]:
    """SecretAttributes; list items carry only enabled/nbf/exp/created/updated, as the examples show."""
    out: dict[str, Any] = {"enabled": item.enabled}
    if item.nbf is not None:
        out["nbf"] = item.nbf
    if item.exp is not None:
        out["exp"] = item.exp
    out["created"] = item.created
    out["updated"] = item.updated
    if full:
        out["recoveryLevel"] = RECOVERY_LEVEL
        out["recoverableDays"] = RECOVERABLE_DAYS
    return out


def _properties(out: dict[str, Any], item: SecretVersion) -> dict[str, Any]:
    if item.content_type is not None:
        out["contentType"] = item.content_type
    if item.tags:
        out["tags"] = dict(item.tags)
    return out


def _base(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


def secret_bundle(base: str, secret: Secret, item: SecretVersion, *, with_value: bool) -> dict[str, Any]:
    """SecretBundle; Set and Get carry the value, Update and Recover do not (as in the examples)."""
    out: dict[str, Any] = {}
    if with_value:
        out["value"] = item.value
    out["id"] = f"{base}/secrets/{secret.name}/{item.version}"
    _properties(out, item)
    out["attributes"] = _attributes(item, full=True)
    return out


def deleted_bundle(base: str, secret: Secret) -> dict[str, Any]:
    """DeletedSecretBundle of the current version (no value, as the vault answers)."""
    out: dict[str, Any] = {"recoveryId": f"{base}/deletedsecrets/{secret.name}"}
    out["deletedDate"] = secret.deleted_date
    out["scheduledPurgeDate"] = secret.scheduled_purge_date
    out.update(secret_bundle(base, secret, secret.latest, with_value=False))
    return out


def _page(request: web.Request, items: list[dict[str, Any]]) -> dict[str, Any]:
    """One page of a list result, with an absolute nextLink carrying $skiptoken, api-version and maxresults."""
    raw_max = request.query.get("maxresults")
    try:
        maxresults = int(raw_max) if raw_max is not None else MAX_RESULTS
    except ValueError:
        maxresults = 0
    if not 1 <= maxresults <= MAX_RESULTS:
        raise VaultError(
            400, "BadParameter", f"Invalid value for maxresults: {raw_max}. It must be between 1 and {MAX_RESULTS}."
        )
    offset = 0
    token = request.query.get("$skiptoken")
    if token:
        try:
            offset = int(json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))["offset"])
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise VaultError(400, "BadParameter", "The $skiptoken is invalid.") from exc
    end = offset + maxresults
    result: dict[str, Any] = {"value": items[offset:end], "nextLink": None}
    if end < len(items):
        next_token = base64.urlsafe_b64encode(json.dumps({"offset": end}).encode()).decode().rstrip("=")
        result["nextLink"] = (
            f"{_base(request)}{request.path}?api-version={request.query['api-version']}"
            f"&$skiptoken={next_token}&maxresults={maxresults}"
        )
    return result


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError as exc:
        raise VaultError(400, "BadParameter", "The request body is not valid JSON.") from exc
    if not isinstance(body, dict):
        raise VaultError(400, "BadParameter", "The request body must be a JSON object.")
    return body


def _error(exc: VaultError, world: World) -> web.Response:
    headers = {}
    if exc.status == 401:
        headers["WWW-Authenticate"] = challenge(world)
    if exc.retry_after is not None:
        headers["Retry-After"] = f"{exc.retry_after:g}"
    return web.json_response({"error": {"code": exc.code, "message": exc.message}}, status=exc.status, headers=headers)


def challenge(world: World) -> str:
    """The bearer challenge naming the MSP tenant's authority, which the SDK follows to get a token."""
    authority = f"{world.urls['entra']}/{world.msp_tenant_id}"
    return f'Bearer authorization="{authority}", resource="{AUDIENCE}"'


def build_app(world: World) -> web.Application:
    """The vault's aiohttp application, reading and writing `world.keyvault`."""

    def state() -> KeyVaultState:
        return cast(KeyVaultState, world.keyvault)

    @web.middleware
    async def vault_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            version = request.query.get("api-version")
            if not version:
                raise VaultError(400, "BadParameter", "The api-version query parameter is missing.")
            if not _API_VERSION.match(version):
                raise VaultError(
                    400,
                    "BadParameter",
                    f"The specified version ({version}) is not recognized. Consider using the latest supported "
                    "version (2025-07-01).",
                )
            _authenticate(world, request.headers.get("Authorization"))
            return await handler(request)
        except VaultError as exc:
            return _error(exc, world)
        except web.HTTPMethodNotAllowed:
            return _error(VaultError(405, "MethodNotAllowed", f"{request.method} is not allowed here."), world)
        except web.HTTPNotFound:
            return _error(VaultError(404, "NotFound", f"The resource {request.path} was not found."), world)

    async def get_secrets(request: web.Request) -> web.Response:
        secrets = sorted(state().secrets.values(), key=lambda s: s.name.lower())
        base = _base(request)
        items = [
            _properties({"id": f"{base}/secrets/{s.name}", "attributes": _attributes(s.latest, full=False)}, s.latest)
            for s in secrets
        ]
        return web.json_response(_page(request, items))

    async def get_versions(request: web.Request) -> web.Response:
        secret = state().active(request.match_info["name"])
        base = _base(request)
        items = [
            _properties(
                {"id": f"{base}/secrets/{secret.name}/{v.version}", "attributes": _attributes(v, full=False)}, v
            )
            for v in secret.versions
        ]
        return web.json_response(_page(request, items))

    async def set_secret(request: web.Request) -> web.Response:
        state().admit_create()
        secret, item = state().set_secret(request.match_info["name"], await _json_body(request))
        state().count_write("create")
        return web.json_response(secret_bundle(_base(request), secret, item, with_value=True))

    async def get_secret(request: web.Request) -> web.Response:
        secret = state().active(request.match_info["name"])
        version = request.match_info.get("version", "")
        item = secret.version(version) if version else secret.latest
        if not item.enabled:
            raise VaultError(403, "Forbidden", "Operation get is not allowed on a disabled secret.")
        return web.json_response(secret_bundle(_base(request), secret, item, with_value=True))

    async def update_secret(request: web.Request) -> web.Response:
        body = await _json_body(request)
        secret, item = state().update(request.match_info["name"], request.match_info.get("version", ""), body)
        state().count_write("update")
        return web.json_response(secret_bundle(_base(request), secret, item, with_value=False))

    async def delete_secret(request: web.Request) -> web.Response:
        secret = state().delete(request.match_info["name"])
        state().count_write("delete")
        return web.json_response(deleted_bundle(_base(request), secret))

    async def backup_secret(request: web.Request) -> web.Response:
        return web.json_response({"value": state().backup(request.match_info["name"])})

    async def restore_secret(request: web.Request) -> web.Response:
        secret = state().restore((await _json_body(request)).get("value"))
        return web.json_response(secret_bundle(_base(request), secret, secret.latest, with_value=False))

    async def get_deleted_secrets(request: web.Request) -> web.Response:
        st = state()
        st.purge_due()
        base = _base(request)
        items = []
        for s in sorted(st.deleted.values(), key=lambda s: s.name.lower()):
            item = _properties({"id": f"{base}/secrets/{s.name}"}, s.latest)
            item["attributes"] = _attributes(s.latest, full=True)
            item["recoveryId"] = f"{base}/deletedsecrets/{s.name}"
            item["deletedDate"] = s.deleted_date
            item["scheduledPurgeDate"] = s.scheduled_purge_date
            items.append(item)
        return web.json_response(_page(request, items))

    async def get_deleted_secret(request: web.Request) -> web.Response:
        secret = state().deleted_secret(request.match_info["name"])
        return web.json_response(deleted_bundle(_base(request), secret))

    async def purge_deleted_secret(request: web.Request) -> web.Response:
        state().purge(request.match_info["name"])
        return web.Response(status=204)

    async def recover_deleted_secret(request: web.Request) -> web.Response:
        secret = state().recover(request.match_info["name"])
        return web.json_response(secret_bundle(_base(request), secret, secret.latest, with_value=False))

    app = web.Application(middlewares=[vault_middleware])
    # Registration order matters: literal segments ("versions", "backup", "restore") before {version}.
    app.router.add_get("/secrets", get_secrets)
    app.router.add_post("/secrets/restore", restore_secret)
    app.router.add_get("/secrets/{name}/versions", get_versions)
    app.router.add_post("/secrets/{name}/backup", backup_secret)
    app.router.add_put("/secrets/{name}", set_secret)
    app.router.add_delete("/secrets/{name}", delete_secret)
    app.router.add_get("/secrets/{name}", get_secret)
    app.router.add_get("/secrets/{name}/", get_secret)
    app.router.add_patch("/secrets/{name}/", update_secret)
    app.router.add_get("/secrets/{name}/{version}", get_secret)
    app.router.add_patch("/secrets/{name}/{version}", update_secret)
    app.router.add_get("/deletedsecrets", get_deleted_secrets)
    app.router.add_get("/deletedsecrets/{name}", get_deleted_secret)
    app.router.add_delete("/deletedsecrets/{name}", purge_deleted_secret)
    app.router.add_post("/deletedsecrets/{name}/recover", recover_deleted_secret)
    return app


def _authenticate(world: World, header: str | None) -> None:
    """Bearer tokens of the MSP tenant for the vault audience only; anything else gets the challenge."""
    if not header:
        raise VaultError(401, "Unauthorized", "AKV10000: Request is missing a Bearer or PoP token.")
    try:
        claims = world.verify_bearer(header, AUDIENCE)
    except sandbox.world.AuthError as exc:
        raise VaultError(401, "Unauthorized", f"AKV10022: {exc.message}") from exc
    if claims.tenant_id != world.msp_tenant_id:
        raise VaultError(
            401,
            "Unauthorized",
            f"AKV10032: Invalid issuer. Expected one of the MSP tenant's issuers, found tenant {claims.tenant_id}.",
        )
