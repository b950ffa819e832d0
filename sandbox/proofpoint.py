"""Proofpoint Essentials' Azure AD sync settings API: `{base}/{stack}/api/v1/orgs/{domain}/settings/azure`.

The real API is barely documented (see ../shared/DESIGN.md "Destinations"). Sandbox choices, documented in
sandbox/README.md: PUT merges into the stored settings; a PUT whose credentials cannot get a token for the
org's tenant is refused with 422, as Proofpoint's "Save" tests the connection.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from aiohttp import web

from sandbox import seeddates
from sandbox.world import iso

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
DEFAULTS: dict[str, Any] = {
    "application_id": "",
    "ad_key": "",
    "secret_expiry": None,
    "last_successful_sync": None,
    "last_sync_status": None,
    "default_user_role_name": "end_user",
    "sync_frequency": "daily",
    **{name: name not in ("disable_login", "remove_deleted_users", "remove_deleted_groups") for name in BOOLEAN_FIELDS},
}
# Proofpoint owns these; a PUT carrying them (the rotator writes back what it read) does not change them.
READ_ONLY = ("primary_domain", "tenant_id", "last_successful_sync", "last_sync_status")
_GUID = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")

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
    settings: dict[str, Any] = field(default_factory=dict)
    last_sync_error: str | None = None

    def public_settings(self) -> dict[str, Any]:
        """Settings as GET returns them: the key masked, never in clear."""
        out: dict[str, Any] = {"primary_domain": self.domain, "tenant_id": self.tenant_id}
        out.update({k: v for k, v in self.settings.items() if k != "ad_key"})
        out["ad_key"] = MASK if self.settings.get("ad_key") else ""
        return out


class ProofpointState:
    """Accounts (X-User/X-Password) and orgs with their Azure AD sync settings."""

    def __init__(self, world: World) -> None:
        self._world = world
        self.accounts: dict[str, Account] = {}
        self.orgs: dict[str, Org] = {}

    def reset(self) -> None:
        self.accounts.clear()
        self.orgs.clear()

    def seed(self, section: dict[str, Any]) -> None:
        for doc in section.get("accounts", []):
            self.accounts[doc["user"].lower()] = Account(doc["user"], doc["password"], list(doc.get("domains", [])))
        for doc in section.get("orgs", []):
            if doc.get("stack", "us1") not in STACKS:
                raise ValueError(f"unknown Proofpoint stack {doc.get('stack')!r}; one of {STACKS}")
            org = Org(doc["domain"], doc.get("stack", "us1"), doc["tenantId"], dict(DEFAULTS))
            given = dict(doc.get("settings", {}))
            for key in ("secret_expiry", "last_successful_sync"):
                # Static seeds say "+12d" or "-10d"; stored settings hold real timestamps.
                if isinstance(given.get(key), str):
                    given[key] = iso(seeddates.resolve(given[key], self._world.now()))
            org.settings.update({k: v for k, v in given.items() if k in DEFAULTS})
            self.orgs[org.domain.lower()] = org

    def dump(self) -> dict[str, Any]:
        return {
            "accounts": [
                {"user": a.user, "password": a.password, "domains": a.domains} for a in self.accounts.values()
            ],
            "orgs": [
                {
                    "domain": o.domain,
                    "stack": o.stack,
                    "tenantId": o.tenant_id,
                    "settings": dict(o.settings),
                    "lastSyncError": o.last_sync_error,
                }
                for o in self.orgs.values()
            ],
        }

    def sync(self) -> list[dict[str, Any]]:
        """Proofpoint's daily sync: every org signs in with its stored application id and key."""
        results = []
        now = iso(self._world.now())
        for org in self.orgs.values():
            app_id, key = org.settings.get("application_id") or "", org.settings.get("ad_key") or ""
            error = (
                self._world.check_client_secret(org.tenant_id, app_id, key)
                if app_id and key
                else "Azure AD sync is not configured."
            )
            org.last_sync_error = error
            if error is None:
                org.settings["last_successful_sync"] = now
                org.settings["last_sync_status"] = "success"
            else:
                org.settings["last_sync_status"] = "failed"
            results.append({"domain": org.domain, "ok": error is None, "error": error})
        return results

    def authenticate(self, user: str | None, password: str | None) -> Account:
        if not user or not password:
            raise ApiError(401, {"message": "Authentication required: send X-User and X-Password."})
        account = self.accounts.get(user.lower())
        if account is None or not secrets.compare_digest(account.password, password):
            raise ApiError(401, {"message": "Invalid username or password."})
        return account

    def org_for(self, account: Account, stack: str, domain: str) -> Org:
        if stack not in STACKS:
            raise ApiError(404, {"error": f"Unknown stack '{stack}'."})
        if not account.administers(domain):
            raise ApiError(403, {"detail": f"You do not have permission to manage the organization '{domain}'."})
        org = self.orgs.get(domain.lower())
        # An org lives on one stack only: asking another stack finds nothing, as the real service does.
        if org is None or org.stack != stack:
            raise ApiError(404, {"error": f"Organization '{domain}' not found."})
        return org

    def update(self, org: Org, body: dict[str, Any]) -> Org:
        """Merge a PUT body into the org's settings after validating it and testing the credentials."""
        errors = _validate(body)
        if errors:
            raise ApiError(422, {"errors": errors})
        changes = {k: v for k, v in body.items() if k in DEFAULTS and k not in READ_ONLY}
        if changes.get("ad_key") == MASK:
            # Writing back the masked value read by GET keeps the stored key, as a UI form would.
            del changes["ad_key"]
        merged = {**org.settings, **changes}
        if "ad_key" in changes or "application_id" in changes:
            reason = self._world.check_client_secret(org.tenant_id, merged["application_id"], merged["ad_key"])
            if reason is not None:
                raise ApiError(422, {"errors": [{"field": "ad_key", "message": reason}]})
            merged["last_successful_sync"] = iso(self._world.now())
            merged["last_sync_status"] = "success"
            org.last_sync_error = None
        org.settings = merged
        return org


def _validate(body: dict[str, Any]) -> list[dict[str, str]]:
    errors = []
    for name in BOOLEAN_FIELDS:
        if name in body and not isinstance(body[name], bool):
            errors.append({"field": name, "message": "must be a boolean"})
    for name in ("ad_key", "default_user_role_name", "sync_frequency"):
        if name in body and not isinstance(body[name], str):
            errors.append({"field": name, "message": "must be a string"})
    if "ad_key" in body and body["ad_key"] == "":
        errors.append({"field": "ad_key", "message": "may not be blank"})
    app_id = body.get("application_id", "")
    if "application_id" in body and (not isinstance(app_id, str) or not _GUID.match(app_id)):
        errors.append({"field": "application_id", "message": "must be a valid application (client) ID (a GUID)"})
    if "secret_expiry" in body and body["secret_expiry"] is not None and not isinstance(body["secret_expiry"], str):
        errors.append({"field": "secret_expiry", "message": "must be an ISO 8601 date or null"})
    return errors


def build_app(world: World) -> web.Application:
    """Proofpoint's aiohttp application, reading and writing `world.proofpoint`."""

    def state() -> ProofpointState:
        return cast(ProofpointState, world.proofpoint)

    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as exc:
            return web.json_response(exc.body, status=exc.status)
        except web.HTTPMethodNotAllowed:
            return web.json_response({"message": f"Method {request.method} not allowed."}, status=405)
        except web.HTTPNotFound:
            return web.json_response({"error": "Not found."}, status=404)

    def org_of(request: web.Request) -> Org:
        account = state().authenticate(request.headers.get("X-User"), request.headers.get("X-Password"))
        return state().org_for(account, request.match_info["stack"], request.match_info["domain"])

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

    app = web.Application(middlewares=[errors])
    app.router.add_get("/{stack}/api/v1/orgs/{domain}/settings/azure", get_settings)
    app.router.add_put("/{stack}/api/v1/orgs/{domain}/settings/azure", put_settings)
    return app
