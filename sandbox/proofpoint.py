"""Proofpoint Essentials' API: the Azure AD sync settings, the org's endpoints, the signed-in account.

`{base}/{stack}/api/v1/orgs/{domain}/settings/azure` (GET, PUT), `{base}/{stack}/api/v1/orgs/{channel}/orgs` (a
channel org's customer orgs), `{base}/{stack}/api/v1/endpoints/{domain}` and `{base}/{stack}/api/v1/me`. The settings
endpoint is undocumented; its only public client (PSProofpoint's
Set-ProofpointAzureSync) PUTs the fifteen WRITABLE fields. Where the real behaviour is unknown the sandbox takes
the strictest plausible one (sandbox/README.md): a PUT carrying a field the org's GET does not show is refused
(strict mode, on by default), a value in another JSON type than the stored one is refused, a PUT either merges
or replaces the whole settings object (`putSemantics`, per org or global: a full replace resets every field the
PUT leaves out), saving never counts as a sync, and the org's sync runs on the sandbox clock every
`sync_frequency` hours with the stored key, as Proofpoint's own sync does.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from aiohttp import web

from sandbox import seeddates
from sandbox.world import EntraError, iso

if TYPE_CHECKING:
    from sandbox.world import World

STACKS = ("us1", "us2", "us3", "us4", "us5", "eu1")
MASK = "********"
BOOLEAN_FIELDS = (
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
# Exactly what PSProofpoint's Set-ProofpointAzureSync PUTs; everything else GET shows is Proofpoint's own.
WRITABLE = ("primary_domain", "application_id", "ad_key", "default_user_role_name", "sync_frequency",
            *BOOLEAN_FIELDS)
DEFAULTS: dict[str, Any] = {
    "application_id": "",
    "ad_key": "",
    "default_user_role_name": "end_user",
    "sync_frequency": 24,
    **{name: name not in ("disable_login", "remove_deleted_users", "remove_deleted_groups") for name in BOOLEAN_FIELDS},
}
# Proofpoint's own sync state (older seeds put these under "settings"): shown by GET, moved only by the sync, and
# ignored in a PUT body (a client that sends back what GET showed sends them too).
_STATE_FIELDS = ("secret_expiry", "last_successful_sync", "last_sync_status")
# How a PUT treats the settings it leaves out: "merge" keeps them, "replace" resets them (known fields to null,
# unknown ones removed). Unknown on the real service; the default comes from SANDBOX_PROOFPOINT_PUT so the whole
# suite can run under either.
PUT_SEMANTICS = ("merge", "replace")
# How a GET may write `secret_expiry` (unknown on the real service): Proofpoint.expiry_shown.
EXPIRY_FORMATS = ("iso", "date", "local", "offset", "basic", "epoch", "us", "dmy")


def default_semantics() -> str:
    value = os.environ.get("SANDBOX_PROOFPOINT_PUT", "merge").strip().lower() or "merge"
    if value not in PUT_SEMANTICS:
        raise ValueError(f"SANDBOX_PROOFPOINT_PUT must be one of {PUT_SEMANTICS}, got {value!r}")
    return value
_GUID = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
_MAX_SLOTS = 1000  # scheduled syncs evaluated after a clock jump (older ones cannot change the outcome)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    """An error answer: status plus the JSON body Proofpoint would send."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(str(body))
        self.status = status
        self.body = body


def fault_body(status: int, code: str | None, message: str | None) -> dict[str, Any]:
    """The body an injected fault answers with: Proofpoint's {"message": ...}."""
    default = "Too many requests, please slow down." if status == 429 else "Service temporarily unavailable."
    body: dict[str, Any] = {"message": message or default}
    if code:
        body["code"] = code
    return body


@dataclass
class Account:
    user: str
    password: str
    domains: list[str]

    def administers(self, domain: str) -> bool:
        return "*" in self.domains or domain.lower() in (d.lower() for d in self.domains)


@dataclass
class Org:
    domain: str
    stack: str
    tenant_id: str
    # The settings object: the writable fields (ad_key in clear) and any other field seeded under extraFields
    # (tenant_id, ...), each in the JSON type it was seeded or PUT in.
    settings: dict[str, Any] = field(default_factory=dict)
    next_sync: dt.datetime | None = None
    last_successful_sync: dt.datetime | None = None
    last_sync_status: str | None = None
    last_sync_error: str | None = None
    secret_expiry: dt.datetime | None = None
    reports_sync: bool = True  # GET shows last_successful_sync / last_sync_status
    reports_expiry: bool = False  # GET shows secret_expiry
    ad_key_on_get: str = "masked"  # "masked" ("********" when set) or "absent" (GET never shows the field)
    hidden: tuple[str, ...] = ()  # writable fields this org's GET does not return
    # How the GET writes `secret_expiry` (unknown on the real service): "iso" (UTC, as Graph), "date" (the date in
    # `expiryOffset`'s zone), "local" (that zone's wall time, no offset), "offset" (that zone's time with its offset).
    expiry_format: str = "iso"
    expiry_offset: dt.timedelta = dt.timedelta(0)
    semantics: str | None = None  # "merge" or "replace" for this org; None: the global setting
    puts: list[dict[str, Any]] = field(default_factory=list)  # bodies received, ad_key replaced by "***"
    name: str = ""  # the org's name as the child-org list shows it
    parent: str = ""  # the primary domain of the channel org it belongs to ("" for none)
    domains: list[str] = field(default_factory=list)  # its other domains (GET of an org returns all of them)

    def public_settings(self) -> dict[str, Any]:
        """Settings as GET returns them: the key masked or left out, never in clear."""
        out: dict[str, Any] = {"primary_domain": self.domain}
        out.update({k: v for k, v in self.settings.items() if k != "ad_key"})
        if self.ad_key_on_get == "masked":
            out["ad_key"] = MASK if self.settings.get("ad_key") else ""
        for name in self.hidden:
            out.pop(name, None)
        if self.reports_sync:
            out["last_successful_sync"] = iso(self.last_successful_sync) if self.last_successful_sync else None
            out["last_sync_status"] = self.last_sync_status
        if self.reports_expiry:
            out["secret_expiry"] = self.expiry_shown()
        return out

    def expiry_shown(self) -> str | int | None:
        """`secret_expiry` as this org's GET writes it (`expiry_format`)."""
        if self.secret_expiry is None:
            return None
        if self.expiry_format == "iso":
            return iso(self.secret_expiry)
        if self.expiry_format == "basic":
            return self.secret_expiry.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        if self.expiry_format == "epoch":
            return int(self.secret_expiry.timestamp())
        local = self.secret_expiry.astimezone(dt.timezone(self.expiry_offset))
        if self.expiry_format == "date":
            return local.date().isoformat()
        if self.expiry_format == "local":
            return local.replace(tzinfo=None).isoformat(timespec="seconds")
        if self.expiry_format == "us":  # .NET's en-US DateTime.ToString(): month/day/year, 12-hour clock
            return f"{local.month}/{local.day}/{local.year} {local.strftime('%I:%M:%S %p').lstrip('0')}"
        if self.expiry_format == "dmy":  # day.month.year, 24-hour clock (de-DE and most of Europe)
            return local.strftime("%d.%m.%Y %H:%M:%S")
        return local.isoformat(timespec="seconds")

    def frequency(self) -> dt.timedelta:
        return dt.timedelta(hours=int(self.settings.get("sync_frequency") or 24))


@dataclass
class Channel:
    """A channel (partner) org: the MSP's own org in Proofpoint, parent of its customers' orgs."""

    domain: str
    stack: str
    name: str


class ProofpointState:
    """Accounts (X-User/X-Password) and orgs with their Azure AD sync settings and sync history."""

    def __init__(self, world: World) -> None:
        self._world = world
        self.accounts: dict[str, Account] = {}
        self.orgs: dict[str, Org] = {}
        self.channels: dict[str, Channel] = {}
        self.strict = True
        self.semantics = default_semantics()

    def reset(self) -> None:
        self.accounts.clear()
        self.orgs.clear()
        self.channels.clear()
        self.strict = True
        self.semantics = default_semantics()

    def seed(self, section: dict[str, Any]) -> None:
        now = self._world.now()
        if "strict" in section:
            self.strict = bool(section["strict"])
        if "putSemantics" in section:
            self.semantics = _semantics(section["putSemantics"])
        for doc in section.get("accounts", []):
            self.accounts[doc["user"].lower()] = Account(doc["user"], doc["password"], list(doc.get("domains", [])))
        for doc in section.get("channels", []):
            if doc.get("stack", "us1") not in STACKS:
                raise ValueError(f"unknown Proofpoint stack {doc.get('stack')!r}; one of {STACKS}")
            self.channels[doc["domain"].lower()] = Channel(doc["domain"].lower(), doc.get("stack", "us1"),
                                                           doc.get("name", doc["domain"]))
        for doc in section.get("orgs", []):
            self.orgs[doc["domain"].lower()] = self._seed_org(doc, now)

    def _seed_org(self, doc: dict[str, Any], now: dt.datetime) -> Org:
        stack = doc.get("stack", "us1")
        if stack not in STACKS:
            raise ValueError(f"unknown Proofpoint stack {stack!r}; one of {STACKS}")
        given = dict(doc.get("settings", {}))
        state = {k: given.pop(k) for k in _STATE_FIELDS if k in given}
        state.update({k: v for k, v in doc.get("extraFields", {}).items() if k in _STATE_FIELDS})
        unknown = set(given) - set(WRITABLE)
        if unknown:
            raise ValueError(f"not Azure AD sync settings: {sorted(unknown)} (read-only ones go in extraFields)")
        errors = _validate(given)
        if errors:
            raise ValueError(f"invalid Proofpoint settings: {errors}")
        given.pop("primary_domain", None)
        others = {k: v for k, v in doc.get("extraFields", {}).items() if k not in _STATE_FIELDS}
        clash = set(others) & set(WRITABLE)
        if clash:
            raise ValueError(f"writable settings go under settings, not extraFields: {sorted(clash)}")
        org = Org(doc["domain"], stack, doc["tenantId"], {**DEFAULTS, **given, **others},
                  name=doc.get("name", doc["domain"]), parent=doc.get("parent", "").lower(),
                  domains=[d.lower() for d in doc.get("domains", [])])

        def moment(key: str) -> dt.datetime | None:
            value = state.get(key)
            return seeddates.resolve(value, now) if isinstance(value, str) else None

        org.last_successful_sync = moment("last_successful_sync")
        org.last_sync_status = state.get("last_sync_status")
        org.secret_expiry = moment("secret_expiry")
        org.reports_expiry = "secret_expiry" in state
        org.reports_sync = bool(doc.get("reportsSync", True))
        org.ad_key_on_get = doc.get("adKeyOnGet", "masked")
        if org.ad_key_on_get not in ("masked", "absent"):
            raise ValueError("adKeyOnGet must be 'masked' or 'absent'")
        org.hidden = tuple(doc.get("getOmits", ()))
        org.expiry_format = doc.get("expiryFormat", "iso")
        if org.expiry_format not in EXPIRY_FORMATS:
            raise ValueError(f"expiryFormat must be one of {', '.join(repr(f) for f in EXPIRY_FORMATS)}")
        hours = doc.get("expiryOffsetHours", 0)
        if not isinstance(hours, int | float) or isinstance(hours, bool) or not -12 <= hours <= 14:
            raise ValueError("expiryOffsetHours must be a number of hours from -12 to 14")
        org.expiry_offset = dt.timedelta(hours=hours)
        if "putSemantics" in doc:
            org.semantics = _semantics(doc["putSemantics"])
        next_sync = doc.get("nextSync")
        org.next_sync = seeddates.resolve(next_sync, now) if isinstance(next_sync, str) else now + org.frequency()
        return org

    def dump(self) -> dict[str, Any]:
        self.run_due_syncs()
        return {
            "strict": self.strict,
            "putSemantics": self.semantics,
            "accounts": [
                {"user": a.user, "password": a.password, "domains": a.domains} for a in self.accounts.values()
            ],
            "channels": [{"domain": c.domain, "stack": c.stack, "name": c.name} for c in self.channels.values()],
            "orgs": [
                {
                    "domain": o.domain,
                    "name": o.name,
                    "parent": o.parent,
                    "domains": list(o.domains),
                    "stack": o.stack,
                    "tenantId": o.tenant_id,
                    "settings": dict(o.settings),
                    "putSemantics": o.semantics or self.semantics,
                    "lastSuccessfulSync": iso(o.last_successful_sync) if o.last_successful_sync else None,
                    "lastSyncStatus": o.last_sync_status,
                    "lastSyncError": o.last_sync_error,
                    "secretExpiry": iso(o.secret_expiry) if o.secret_expiry else None,
                    "nextSync": iso(o.next_sync) if o.next_sync else None,
                    "puts": list(o.puts),
                }
                for o in self.orgs.values()
            ],
        }

    # ------------------------------------------------------------------ the sync

    def _sync_org(self, org: Org, at: dt.datetime) -> str | None:
        """One sync of one org at `at`, signing in with its stored application id and key."""
        app_id, key = org.settings.get("application_id") or "", org.settings.get("ad_key") or ""
        error = (
            self._world.check_client_secret(org.tenant_id, app_id, key, at, self._world.proofpoint_source())
            if app_id and key
            else "Azure AD sync is not configured."
        )
        org.last_sync_error = error
        if error is None:
            org.last_successful_sync = at
            org.last_sync_status = "success"
            expiry = self._key_expiry(org)
            if expiry is not None:
                org.secret_expiry = expiry
        else:
            org.last_sync_status = "failed"
        return error

    def _key_expiry(self, org: Org) -> dt.datetime | None:
        """The end date of the credential the stored key is (Proofpoint can read it with Directory.Read.All)."""
        try:
            _, app, _ = self._world.app_in_tenant(org.tenant_id, org.settings.get("application_id") or "")
        except EntraError:
            return None
        key = org.settings.get("ad_key") or ""
        return next((c.end for c in app.passwords if secrets.compare_digest(c.secret_text, key)), None)

    def run_due_syncs(self) -> None:
        """Every scheduled sync whose time has come on the sandbox clock, with the key stored at that time.

        Called before every API request and state dump, so a PUT always lands after the syncs due before it.
        """
        now = self._world.now()
        for org in self.orgs.values():
            if org.next_sync is None or org.next_sync > now:
                continue
            step = org.frequency()
            due = int((now - org.next_sync) / step) + 1
            first = org.next_sync + step * max(0, due - _MAX_SLOTS)
            for n in range(min(due, _MAX_SLOTS)):
                self._sync_org(org, first + step * n)
            org.next_sync = org.next_sync + step * due

    def sync(self) -> list[dict[str, Any]]:
        """Proofpoint's "sync now" for every org (the scheduled syncs due before it run first)."""
        self.run_due_syncs()
        now = self._world.now()
        results = []
        for org in self.orgs.values():
            error = self._sync_org(org, now)
            results.append({"domain": org.domain, "ok": error is None, "error": error})
        return results

    # ------------------------------------------------------------------ the API

    def authenticate(self, user: str | None, password: str | None) -> Account:
        if not user or not password:
            raise ApiError(401, {"message": "Authentication required: send X-User and X-Password."})
        account = self.accounts.get(user.lower())
        if account is None or not secrets.compare_digest(account.password, password):
            raise ApiError(401, {"message": "Invalid username or password."})
        return account

    def org_for(self, account: Account, stack: str, domain: str, *, any_stack: bool = False) -> Org:
        if stack not in STACKS:
            raise ApiError(404, {"error": f"Unknown stack '{stack}'."})
        if not account.administers(domain):
            raise ApiError(403, {"detail": f"You do not have permission to manage the organization '{domain}'."})
        org = self.orgs.get(domain.lower())
        # An org lives on one stack only: asking another stack finds nothing, as the real service does.
        if org is None or (org.stack != stack and not any_stack):
            raise ApiError(404, {"error": f"Organization '{domain}' not found."})
        return org

    def children(self, account: Account, stack: str, channel: str) -> list[dict[str, Any]]:
        """The customer orgs of a channel org (GET /orgs/{domain}/orgs; PSProofpoint's Get-ProofpointOrg -Children),
        asked of the channel's own stack by an account that administers it. Each org is shown by its name, primary
        domain and every domain (Proofpoint's API guide: a GET of an org returns all its domains); the entry's
        exact fields are not published, so the sandbox shows only these (the strictest reading for a client)."""
        if stack not in STACKS:
            raise ApiError(404, {"error": f"Unknown stack '{stack}'."})
        if not account.administers(channel):
            raise ApiError(403, {"detail": f"You do not have permission to manage the organization '{channel}'."})
        found = self.channels.get(channel.lower())
        if found is None or found.stack != stack:
            raise ApiError(404, {"error": f"Organization '{channel}' not found."})
        return [{"name": o.name, "primary_domain": o.domain.lower(),
                 "domains": [{"name": d} for d in [o.domain.lower(), *o.domains]]}
                for o in self.orgs.values() if o.parent == found.domain]

    def update(self, org: Org, body: dict[str, Any]) -> Org:
        """Apply a PUT body to the org's settings (merged, or replacing them) after validating it and testing the
        credentials; nothing changes when anything is refused."""
        org.puts.append({k: ("***" if k == "ad_key" else v) for k, v in body.items()})
        errors = _validate(body)
        if self.strict:
            shown = set(org.public_settings()) | {"ad_key", "primary_domain"}
            errors += [{"field": name, "message": "is not an Azure AD sync setting of this organization"}
                       for name in body if name not in shown]
            errors += _type_changes(org.settings, body)
        if "primary_domain" in body and str(body["primary_domain"]).lower() != org.domain.lower():
            errors.append({"field": "primary_domain", "message": f"must be this organization's ({org.domain})"})
        if errors:
            raise ApiError(422, {"errors": errors})
        # Proofpoint's own sync state is never written by a PUT (ignored when sent back as GET showed it).
        changes = {k: v for k, v in body.items() if k not in _STATE_FIELDS and k != "primary_domain"}
        if changes.get("ad_key") == MASK:
            # Writing back the masked value read by GET keeps the stored key, as a UI form would.
            changes["ad_key"] = org.settings.get("ad_key") or ""
        if (org.semantics or self.semantics) == "replace":
            # A full replace: the PUT is the whole settings object. A known field left out becomes null (a key left
            # out becomes blank); an unknown one is gone.
            merged: dict[str, Any] = {name: None for name in WRITABLE if name != "primary_domain"}
            merged["ad_key"] = ""
            merged.update(changes)
        else:
            merged = {**org.settings, **changes}
        app_id, key = merged.get("application_id") or "", merged.get("ad_key") or ""
        if key != (org.settings.get("ad_key") or "") or app_id != (org.settings.get("application_id") or ""):
            # Save tests the connection; it is not a sync (last_successful_sync moves only when the sync runs).
            reason = self._world.check_client_secret(org.tenant_id, app_id, key, None,
                                                     self._world.proofpoint_source()) if app_id and key else \
                "the application id and key are required"
            if reason is not None:
                raise ApiError(422, {"errors": [{"field": "ad_key", "message": reason}]})
        if merged.get("sync_frequency") != org.settings.get("sync_frequency"):
            org.next_sync = self._world.now() + dt.timedelta(hours=int(merged.get("sync_frequency") or 24))
        org.settings = merged
        return org


def _semantics(value: Any) -> str:
    if value not in PUT_SEMANTICS:
        raise ValueError(f"putSemantics must be one of {PUT_SEMANTICS}, got {value!r}")
    return str(value)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _type_changes(stored: dict[str, Any], body: dict[str, Any]) -> list[dict[str, str]]:
    """A value sent in another JSON type than the org stores it in is refused (assumed: the strictest reading)."""
    return [
        {"field": name, "message": f"must be a {_json_type(stored[name])} (as stored), not a {_json_type(value)}"}
        for name, value in body.items()
        if name in stored and name not in _STATE_FIELDS and stored[name] is not None and value is not None
        and _json_type(stored[name]) != _json_type(value)
    ]


def _validate(body: dict[str, Any]) -> list[dict[str, str]]:
    """The rules on the known fields' values (whatever the org stores)."""
    errors = []
    for name in BOOLEAN_FIELDS:
        # PSProofpoint sends the flags as the strings "true"/"false"; JSON booleans are the other plausible form.
        if name in body and body[name] is not None and not isinstance(body[name], bool) \
                and body[name] not in ("true", "false"):
            errors.append({"field": name, "message": "must be true or false"})
    frequency = body.get("sync_frequency")
    if "sync_frequency" in body and frequency is not None and (
            isinstance(frequency, bool) or not isinstance(frequency, int) or not 1 <= frequency <= 168):
        errors.append({"field": "sync_frequency", "message": "must be an integer number of hours (1-168)"})
    for name in ("ad_key", "default_user_role_name", "primary_domain"):
        if name in body and not isinstance(body[name], str) and not (body[name] is None and name != "ad_key"):
            errors.append({"field": name, "message": "must be a string"})
    if "ad_key" in body and body["ad_key"] == "":
        errors.append({"field": "ad_key", "message": "may not be blank"})
    app_id = body.get("application_id", "")
    if "application_id" in body and app_id not in (None, "") and (not isinstance(app_id, str)
                                                                    or not _GUID.match(app_id)):
        errors.append({"field": "application_id", "message": "must be a valid application (client) ID (a GUID)"})
    return errors


def build_app(world: World) -> web.Application:
    """Proofpoint's aiohttp application, reading and writing `world.proofpoint`."""

    def state() -> ProofpointState:
        return cast(ProofpointState, world.proofpoint)

    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        state().run_due_syncs()
        try:
            return await handler(request)
        except ApiError as exc:
            return web.json_response(exc.body, status=exc.status)
        except web.HTTPMethodNotAllowed:
            return web.json_response({"message": f"Method {request.method} not allowed."}, status=405)
        except web.HTTPNotFound:
            return web.json_response({"error": "Not found."}, status=404)

    def account_of(request: web.Request) -> Account:
        return state().authenticate(request.headers.get("X-User"), request.headers.get("X-Password"))

    def org_of(request: web.Request) -> Org:
        return state().org_for(account_of(request), request.match_info["stack"], request.match_info["domain"])

    async def get_settings(request: web.Request) -> web.Response:
        return web.json_response(org_of(request).public_settings())

    async def put_settings(request: web.Request) -> web.Response:
        org = org_of(request)
        try:
            body = await request.json()
        except ValueError:
            raise ApiError(400, {"message": "Request body is not valid JSON."}) from None
        if not isinstance(body, dict):
            raise ApiError(400, {"message": "Request body must be a JSON object."})
        return web.json_response(state().update(org, body).public_settings())

    async def get_endpoints(request: web.Request) -> web.Response:
        # Any instance answers for any org (Proofpoint's API guide, "Endpoint").
        org = state().org_for(account_of(request), request.match_info["stack"], request.match_info["domain"],
                              any_stack=True)
        base = f"{request.scheme}://{request.host}/{org.stack}/api/v1"
        return web.json_response({"domain": org.domain, "endpoints": [base]})

    async def get_me(request: web.Request) -> web.Response:
        if request.match_info["stack"] not in STACKS:
            raise ApiError(404, {"error": f"Unknown stack '{request.match_info['stack']}'."})
        account = account_of(request)
        return web.json_response({"primary_email": account.user, "channel_admin": "*" in account.domains})

    async def get_children(request: web.Request) -> web.Response:
        children = state().children(account_of(request), request.match_info["stack"], request.match_info["domain"])
        return web.json_response({"orgs": children})

    app = web.Application(middlewares=[errors])
    app.router.add_get("/{stack}/api/v1/orgs/{domain}/settings/azure", get_settings)
    app.router.add_put("/{stack}/api/v1/orgs/{domain}/settings/azure", put_settings)
    app.router.add_get("/{stack}/api/v1/orgs/{domain}/orgs", get_children)
    app.router.add_get("/{stack}/api/v1/endpoints/{domain}", get_endpoints)
    app.router.add_get("/{stack}/api/v1/me", get_me)
    return app
