"""Graph's delta queries over a tenant's applications and service principals, and tenants full of them.

`GET /v1.0/applications/delta` and `GET /v1.0/servicePrincipals/delta` (also `.../microsoft.graph.delta()`, as the
SDKs spell it) over every tenant of the world: its seeded objects (sandbox/world.py) and, when the control API gave
it one, a generated population of many applications and service principals (secrets, certificates, SAML signing
certificates, Microsoft first-party principals, some expired) that costs no memory until something changes.

What it models, and where each behaviour is documented (sandbox/README.md, "Inventory: delta queries"):
- microsoftgraph/microsoft-graph-docs-contrib `concepts/delta-query-overview.md`: a round of pages linked by
  `@odata.nextLink` (`$skiptoken`) ending with an `@odata.deltaLink` (`$deltatoken`); query parameters ($select) are
  given once and encoded into the tokens; updated instances "are represented by their id with *at least* the
  properties that have been updated" (here: exactly those, the strictest reading), removed ones by `id` and
  `@removed` {"reason": "changed"|"deleted"}, which "can be returned in the initial delta query response" too;
  "if a change occurs to a property that is not selected, the resource ... does not appear"; the number of objects
  per page varies and `$top` has limited support (here: pages of PAGE_SIZE whatever $top says); "Synchronization
  reset": `410 Gone` with a `Location` header holding the initial query (here after the control API's reset);
  "Token duration": seven days for directory objects, then "a 40X-series error with error codes such as
  `syncStateNotFound`" (here: 400 `syncStateNotFound`, a 40X other than the reset's 410, so a client that looks only
  at 410 fails).
- `api-reference/v1.0/api/application-delta.md`, `serviceprincipal-delta.md`: Application.ReadWrite.OwnedBy is the
  least privileged application permission (so the rotator's consent suffices); `$select` "always returns the id".
- `api-reference/v1.0/resources/serviceprincipal.md`: appOwnerOrganizationId (Microsoft's first-party apps carry
  f8cdef31-a31e-4b4a-93e4-5f571e91255a), preferredSingleSignOnMode, preferredTokenSigningKeyThumbprint;
  `serviceprincipal-addtokensigningcertificate.md`: a SAML signing certificate is a Sign keyCredential, a Verify
  keyCredential and a passwordCredential sharing one customKeyIdentifier (the thumbprint).
- Throttling: `concepts/throttling-limits.md`, "Identity and access service limits": resource units per
  application+tenant pair (3,500 per 10 seconds for a tenant under 50 users, the smallest: the strictest) and per
  application across tenants (150,000 per 20 seconds); a GET on a path not listed costs 1 unit and `$select` takes
  1 off (never below 1). Past a limit: 429 `TooManyRequests` with `Retry-After` (seconds until the window frees
  a unit) and `x-ms-throttle-scope` (`Tenant_Application/Read/<app>/<tenant>` or `Application/Read/<app>/...`).
  Limits lowered through the seed (`throttle`) for tests; the faults control injects a 429 anywhere too.
- Owners: `GET /applications/{id}/owners` and `/servicePrincipals/{id}/owners` (application-list-owners.md,
  serviceprincipal-list-owners.md): a directoryObject collection, each with its `@odata.type` (users and service
  principals), `$select` honoured (`id` and the type always); 404 `Request_ResourceNotFound` for an id the tenant
  does not hold. Owners are a relationship, not a property: the delta functions never carry them, take no `$expand`
  (400, as any other unsupported parameter) and an owner change alone brings nothing into a delta round (delta-query-
  overview.md: relationships are tracked as `@delta` annotations for users and groups only; the strictest reading).
  Generated objects: 30 % without owner, most with one or two users, some with a service principal; Microsoft's
  first-party principals and managed identities none. Each read costs a resource unit like a delta page.
  The list with owners expanded, `GET /applications?$expand=owners($select=...)` (and `/servicePrincipals`;
  application-list.md, serviceprincipal-list.md support `$expand`): pages of at most **100** objects whatever `$top`
  asks (Graph known issue 13635: "$expand on directory objects returns a maximum of 100 objects"), each object's
  `owners` cut at **20** with no nextLink of their own (query-parameters.md: `$expand` "typically returns a maximum
  of 20 items for the expanded relationship and has no @odata.nextLink"); `$expand` of anything but owners is 400.
  The same list filtered on ids, `$filter=id in ('a','b',...)` or `id eq 'a'` (application.md: `id` supports `eq`
  and `in`; a service principal's `id` taken to be the same directoryObject key): the live objects among them (an id
  not held is left out), in id order, not the order asked; at most **15** values (known issue 13635: "the request
  is limited to 15 expressions in the filter clause"; past it 400 `Request_UnsupportedQuery`: the code and text are
  the sandbox's, the limit Graph's); any other `$filter` 400.
  The control API's `{"op": "owners", "ids": [...], "count": n}` gives objects n user owners (an owner change: no
  delta round sees it).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
import math
import random
import re
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from sandbox.world import Tenant, World, iso

PAGE_SIZE = 100
TOKEN_LIFETIME = dt.timedelta(days=7)
# (units, window seconds): per application+tenant pair (S tenants), per application across all tenants.
TENANT_APP_LIMIT = (3500, 10.0)
APP_LIMIT = (150_000, 20.0)
MICROSOFT_TENANT = "f8cdef31-a31e-4b4a-93e4-5f571e91255a"
ENTITY_SETS = {"applications": "application", "servicePrincipals": "servicePrincipal"}
DELTA_PATH = re.compile(r"^/(?P<set>applications|servicePrincipals)/(?:microsoft\.graph\.)?delta(?:\(\))?$")

APP_PROPERTIES = ("id", "appId", "displayName", "createdDateTime", "deletedDateTime", "signInAudience",
                  "publisherDomain", "passwordCredentials", "keyCredentials", "tags")
SP_PROPERTIES = ("id", "appId", "displayName", "appDisplayName", "appOwnerOrganizationId", "accountEnabled",
                 "servicePrincipalType", "preferredSingleSignOnMode", "preferredTokenSigningKeyThumbprint",
                 "passwordCredentials", "keyCredentials", "tags", "deletedDateTime")
PROPERTIES = {"application": APP_PROPERTIES, "servicePrincipal": SP_PROPERTIES}

_APP_NAMES = ("Veeam Backup for Microsoft 365", "Datto RMM", "Autotask PSA connector", "Hudu documentation",
              "IT Glue sync", "NinjaOne", "ConnectWise Manage", "Acronis Cyber Protect", "Power BI gateway",
              "Barracuda Email Protection", "Mimecast sync", "KnowBe4 user sync", "Dropsuite backup",
              "Liongard inspector", "Huntress M365", "SkyKick cloud backup", "AvePoint backup", "Sophos Central")
_SAML_NAMES = ("Salesforce", "ServiceNow", "Zoom", "Atlassian Cloud", "Workday", "Dropbox Business", "Slack",
               "DocuSign", "Box", "AWS IAM Identity Center")
_MS_NAMES = ("Microsoft Graph", "Office 365 Exchange Online", "Office 365 SharePoint Online", "Microsoft Teams",
             "Azure Portal", "Microsoft Intune", "Windows Azure Active Directory", "Microsoft Azure CLI",
             "Office 365 Management APIs", "Microsoft Defender for Cloud Apps", "Power BI Service",
             "Skype for Business")
_THIRD_NAMES = ("Adobe Acrobat", "Zoom for Outlook", "Calendly", "Grammarly", "Miro", "Trello", "Asana",
                "Smartsheet", "Lucidchart", "Webex")


OWNERS_PATH = re.compile(r"^/(?P<set>applications|servicePrincipals)/(?P<id>[^/()]+)/owners$")
_FIRST = ("Ann", "Bruno", "Chen", "Dana", "Elif", "Farah", "Goran", "Hana", "Ivo", "Jun", "Kofi", "Lena", "Mateo",
          "Nika", "Olga", "Priya")
_LAST = ("Lee", "Novak", "Okafor", "Silva", "Tanaka", "Weber", "Young", "Zhou", "Ivanova", "Kowalski", "Haddad")


EXPANDED_OWNERS = 20  # query-parameters.md: $expand returns at most 20 items of the relationship, no nextLink
EXPAND_PAGE = 100  # known issue 13635: a list with $expand returns at most 100 directory objects a page
_EXPAND = re.compile(r"^owners(?:\(\$select=(?P<select>[A-Za-z,]+)\))?$")


def owner_user(tenant_id: str, rng: random.Random, n: int | None = None) -> dict[str, Any]:
    """A user owner; `n` makes its principal name unique among many."""
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    local = f"{first}.{last}{'' if n is None else n}".lower()
    return {"@odata.type": "#microsoft.graph.user", "id": _guid(rng), "displayName": f"{first} {last}",
            "userPrincipalName": f"{local}@{tenant_id[:8]}.onmicrosoft.com", "mail": None}


def generated_owners(tenant_id: str, obj: dict[str, Any]) -> list[dict[str, Any]]:
    """The owners of a generated object (computed from its id, like the object itself)."""
    if "_owners" in obj:  # set through the control API
        return list(obj["_owners"])
    if obj.get("appOwnerOrganizationId") == MICROSOFT_TENANT or obj.get("servicePrincipalType") == "ManagedIdentity":
        return []
    rng = _rng("owners", tenant_id, obj["id"])
    draw = rng.random()
    count = 0 if draw < 0.3 else 1 if draw < 0.8 else 2
    owners = [owner_user(tenant_id, rng) for _ in range(count)]
    if rng.random() < 0.1:
        owners.append({"@odata.type": "#microsoft.graph.servicePrincipal", "id": _guid(rng),
                       "displayName": "Deployment pipeline", "appId": _guid(rng), "userPrincipalName": None})
    return owners


class DeltaError(Exception):
    """A refused delta request: status, Graph's error code and message, and headers to add (Location)."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


@dataclass
class Tracked:
    """One object's change history, on the tenant's change sequence."""

    kind: str
    order: tuple[int, int, str]  # where it sits in a full read: (source, index, id)
    created: int
    changed: dict[str, int] = field(default_factory=dict)  # property -> seq of its last change
    removed: int | None = None
    fingerprint: dict[str, str] = field(default_factory=dict)  # seeded objects: property -> json of its value


@dataclass
class Population:
    """A generated population: N applications and M service principals, computed from the seed on demand."""

    seed: str
    applications: int
    service_principals: int
    epoch: dt.datetime  # the credentials' dates are relative to this moment


@dataclass
class TenantInventory:
    """A tenant's change tracking: a sequence, overrides of generated objects, what each token may still see."""

    seq: int = 0
    reset_seq: int = 0  # a token issued before this seq meets 410 Gone (a synchronization reset)
    population: Population | None = None
    overrides: dict[str, dict[str, Any] | None] = field(default_factory=dict)  # object id -> json (None: deleted)
    added: dict[str, list[str]] = field(default_factory=lambda: {"application": [], "servicePrincipal": []})
    tracked: dict[str, Tracked] = field(default_factory=dict)  # object id -> history (changed or seeded objects)
    ids: dict[str, tuple[str, int]] | None = None  # the population's object ids -> (kind, index), made on demand

    def bump(self) -> int:
        self.seq += 1
        return self.seq


def _rng(*parts: object) -> random.Random:
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))  # test data, not a secret


def _guid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _thumbprint(rng: random.Random) -> bytes:
    return bytes(rng.getrandbits(8) for _ in range(20))


def _password(rng: random.Random, epoch: dt.datetime, name: str, days: int, custom: bytes | None = None
              ) -> dict[str, Any]:
    end = epoch + dt.timedelta(days=days, seconds=rng.randrange(86400))
    hint = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789~.") for _ in range(3))
    return {"customKeyIdentifier": base64.b64encode(custom).decode() if custom else None, "displayName": name,
            "endDateTime": iso(end), "hint": None if custom else hint, "keyId": _guid(rng), "secretText": None,
            "startDateTime": iso(end - dt.timedelta(days=rng.choice((180, 365, 730))))}


def _certificate(rng: random.Random, epoch: dt.datetime, name: str, days: int, usage: str, thumb: bytes
                 ) -> dict[str, Any]:
    end = epoch + dt.timedelta(days=days, seconds=rng.randrange(86400))
    # The public `key` is left out: Graph returns it only when a single object is read with $select=keyCredentials.
    return {"customKeyIdentifier": base64.b64encode(thumb).decode(), "displayName": name, "endDateTime": iso(end),
            "key": None, "keyId": _guid(rng), "startDateTime": iso(end - dt.timedelta(days=365 * 3)),
            "type": "AsymmetricX509Cert", "usage": usage}


def generated_application(tenant_id: str, pop: Population, index: int) -> dict[str, Any]:
    """The index-th generated application of a tenant: 15 % without credentials, some expired, some with certs."""
    rng = _rng(pop.seed, tenant_id, "application", index)
    name = f"{rng.choice(_APP_NAMES)} {index + 1}"
    passwords, keys = [], []
    if rng.random() >= 0.15:
        for n in range(rng.choice((1, 1, 1, 2, 3))):
            passwords.append(_password(rng, pop.epoch, f"secret {n + 1}", rng.randrange(-120, 730)))
    if rng.random() < 0.2:
        keys.append(_certificate(rng, pop.epoch, f"CN={name}", rng.randrange(-60, 1095), "Verify", _thumbprint(rng)))
    return {"id": _guid(rng), "appId": _guid(rng), "displayName": name,
            "createdDateTime": iso(pop.epoch - dt.timedelta(days=rng.randrange(30, 2000))), "deletedDateTime": None,
            "signInAudience": "AzureADMyOrg", "publisherDomain": f"{tenant_id[:8]}.onmicrosoft.com",
            "passwordCredentials": passwords, "keyCredentials": keys, "tags": []}


def generated_service_principal(tenant_id: str, pop: Population, index: int) -> dict[str, Any]:
    """The index-th generated service principal: 60 % Microsoft first-party, 25 % other vendors' multi-tenant
    apps, 10 % SAML apps with a signing certificate, 3 % the tenant's own apps, 2 % managed identities."""
    rng = _rng(pop.seed, tenant_id, "servicePrincipal", index)
    draw = rng.random()
    passwords: list[dict[str, Any]] = []
    keys: list[dict[str, Any]] = []
    mode, thumbprint, kind = None, None, "Application"
    if draw < 0.6:
        name, owner = rng.choice(_MS_NAMES), MICROSOFT_TENANT
        if rng.random() < 0.05:  # some Microsoft principals carry credentials of their own; Microsoft renews them
            keys.append(_certificate(rng, pop.epoch, "CN=Microsoft", rng.randrange(-30, 365), "Verify",
                                     _thumbprint(rng)))
    elif draw < 0.85:
        name, owner = rng.choice(_THIRD_NAMES), _guid(rng)
    elif draw < 0.95:
        name, owner, mode = rng.choice(_SAML_NAMES), tenant_id, "saml"
        thumb = _thumbprint(rng)
        days = rng.randrange(-45, 1095)
        subject = "CN=Microsoft Azure Federated SSO Certificate"
        keys += [_certificate(rng, pop.epoch, subject, days, "Sign", thumb),
                 _certificate(rng, pop.epoch, subject, days, "Verify", thumb)]
        passwords.append(_password(rng, pop.epoch, subject, days, custom=thumb))
        thumbprint = thumb.hex().upper()
    elif draw < 0.98:
        name, owner = rng.choice(_APP_NAMES), tenant_id
    else:  # a managed identity: Azure keeps its certificate (about 90 days, renewed by itself)
        name, owner, kind = f"mi-{rng.choice(_APP_NAMES).split()[0].lower()}", None, "ManagedIdentity"
        keys.append(_certificate(rng, pop.epoch, f"CN={name}", rng.randrange(1, 90), "Verify", _thumbprint(rng)))
    name = f"{name} ({index + 1})"
    return {"id": _guid(rng), "appId": _guid(rng), "displayName": name, "appDisplayName": name,
            "appOwnerOrganizationId": owner, "accountEnabled": True, "servicePrincipalType": kind,
            "preferredSingleSignOnMode": mode, "preferredTokenSigningKeyThumbprint": thumbprint,
            "passwordCredentials": passwords, "keyCredentials": keys, "tags": [], "deletedDateTime": None}


def _seeded_application(app: Any, tenant: Tenant) -> dict[str, Any]:
    return {"id": app.id, "appId": app.app_id, "displayName": app.display_name, "createdDateTime": iso(app.created),
            "deletedDateTime": None, "signInAudience": app.sign_in_audience,
            "publisherDomain": f"{tenant.id[:8]}.onmicrosoft.com",
            "passwordCredentials": [p.to_graph() for p in app.passwords], "keyCredentials": [], "tags": []}


def _seeded_service_principal(sp: Any) -> dict[str, Any]:
    return {"id": sp.id, "appId": sp.app_id, "displayName": sp.display_name, "appDisplayName": sp.display_name,
            "appOwnerOrganizationId": sp.app_owner_tenant_id, "accountEnabled": sp.account_enabled,
            "servicePrincipalType": sp.kind, "preferredSingleSignOnMode": None,
            "preferredTokenSigningKeyThumbprint": None, "passwordCredentials": [], "keyCredentials": [], "tags": [],
            "deletedDateTime": None}


class InventoryState:
    """The inventory part of the world (`world.inventory`): populations, overrides, change tracking."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.tenants: dict[str, TenantInventory] = {}
        self.page_size = PAGE_SIZE
        self.token_lifetime = TOKEN_LIFETIME
        self.limits = {"tenantApp": TENANT_APP_LIMIT, "app": APP_LIMIT}
        self.spent: dict[tuple[str, str], deque[float]] = {}

    def reset(self) -> None:
        self.tenants = {}
        self.page_size = PAGE_SIZE
        self.token_lifetime = TOKEN_LIFETIME
        self.limits = {"tenantApp": TENANT_APP_LIMIT, "app": APP_LIMIT}
        self.spent = {}

    def charge(self, app_id: str, tenant_id: str) -> None:
        """One resource unit against the application+tenant pair's and the application's windows, or 429."""
        now = time.monotonic()
        scopes = (("tenantApp", (app_id, tenant_id), f"Tenant_Application/Read/{app_id}/{tenant_id}"),
                  ("app", (app_id, ""), f"Application/Read/{app_id}/{tenant_id}"))
        for name, key, scope in scopes:
            units, window = self.limits[name]
            spent = self.spent.setdefault(key, deque())
            while spent and spent[0] <= now - window:
                spent.popleft()
            if len(spent) >= units:
                wait = max(1, math.ceil(spent[0] + window - now))
                raise DeltaError(429, "TooManyRequests", "Too many requests.",
                                 {"Retry-After": str(wait), "x-ms-throttle-scope": scope,
                                  "x-ms-throttle-information": "ResourceUnitLimitExceeded"})
        for _, key, _ in scopes:
            self.spent[key].append(now)

    def dump(self) -> dict[str, Any]:
        return {"pageSize": self.page_size, "tokenLifetimeDays": self.token_lifetime.total_seconds() / 86400,
                "tenants": {tid: {"seq": t.seq, "population": None if t.population is None else {
                    "applications": t.population.applications, "servicePrincipals": t.population.service_principals},
                    "changed": len(t.overrides)} for tid, t in self.tenants.items()}}

    def seed(self, section: dict[str, Any]) -> None:
        """`{"pageSize": 100, "tokenLifetimeDays": 7, "populations": [{"tenants": [ids], "applications": 100,
        "servicePrincipals": 300, "seed": "x"}]}`; the tenants must exist in the directory."""
        if "pageSize" in section:
            size = int(section["pageSize"])
            if not 1 <= size <= 999:
                raise ValueError("pageSize must be 1..999")
            self.page_size = size
        if "tokenLifetimeDays" in section:
            self.token_lifetime = dt.timedelta(days=float(section["tokenLifetimeDays"]))
        for name, doc in (section.get("throttle") or {}).items():  # {"tenantApp": [units, seconds], "app": [...]}
            if name not in self.limits or len(doc) != 2 or int(doc[0]) < 1 or float(doc[1]) <= 0:
                raise ValueError("throttle: tenantApp or app, each [units >= 1, seconds > 0]")
            self.limits[name] = (int(doc[0]), float(doc[1]))
        for doc in section.get("populations", []):
            apps, sps = int(doc.get("applications", 100)), int(doc.get("servicePrincipals", 300))
            if apps < 0 or sps < 0:
                raise ValueError("applications and servicePrincipals must be >= 0")
            for tenant_id in doc["tenants"]:
                if tenant_id not in self.world.directory.tenants:
                    raise KeyError(f"no tenant {tenant_id}")
                self.tenant(tenant_id).population = Population(str(doc.get("seed", "inventory")), apps, sps,
                                                               self.world.now())

    def tenant(self, tenant_id: str) -> TenantInventory:
        return self.tenants.setdefault(tenant_id, TenantInventory())

    # --- the objects of a tenant, in full-read order ------------------------------------------------------------

    def _generated(self, tenant_id: str, inv: TenantInventory, kind: str, index: int) -> dict[str, Any]:
        assert inv.population is not None
        if kind == "application":
            return generated_application(tenant_id, inv.population, index)
        return generated_service_principal(tenant_id, inv.population, index)

    def objects(self, tenant: Tenant, kind: str, after: tuple[int, int, str] | None = None
                ) -> Iterator[tuple[tuple[int, int, str], dict[str, Any]]]:
        """Every live object of the kind, with its place in the order, starting after `after`."""
        inv = self.tenant(tenant.id)
        pop = inv.population
        count = 0 if pop is None else (pop.applications if kind == "application" else pop.service_principals)
        start = 0 if after is None or after[0] > 0 else after[1] + 1
        if after is None or after[0] == 0:
            for index in range(start, count):
                obj = self._generated(tenant.id, inv, kind, index)
                if obj["id"] in inv.overrides:
                    override = inv.overrides[obj["id"]]
                    if override is None:
                        continue
                    obj = override
                yield (0, index, obj["id"]), obj
        if after is None or after[0] <= 1:
            added = inv.added[kind]
            start = 0 if after is None or after[0] == 0 else after[1] + 1
            for index in range(start, len(added)):
                override = inv.overrides.get(added[index])
                if override is not None:
                    yield (1, index, added[index]), override
        seeded = self._seeded(tenant, kind)
        for object_id in sorted(seeded):
            place = (2, 0, object_id)
            if after is None or place > after:
                yield place, seeded[object_id]

    def _seeded(self, tenant: Tenant, kind: str) -> dict[str, dict[str, Any]]:
        if kind == "application":
            return {a.id: _seeded_application(a, tenant) for a in tenant.applications.values()}
        return {sp.id: _seeded_service_principal(sp) for sp in tenant.service_principals.values()}

    def observe(self, tenant: Tenant, kind: str) -> None:
        """Notice what changed in the tenant's seeded objects (the rotator's addPassword, a seed) since last time."""
        inv = self.tenant(tenant.id)
        seeded = self._seeded(tenant, kind)
        for object_id, obj in seeded.items():
            prints = {p: json.dumps(obj.get(p), sort_keys=True) for p in PROPERTIES[kind]}
            tracked = inv.tracked.get(object_id)
            if tracked is None or tracked.removed is not None:
                inv.tracked[object_id] = Tracked(kind, (2, 0, object_id), inv.bump(), fingerprint=prints)
                continue
            changed = [p for p in prints if prints[p] != tracked.fingerprint.get(p)]
            if changed:
                seq = inv.bump()
                tracked.changed.update({p: seq for p in changed})
                tracked.fingerprint = prints
        for object_id, tracked in inv.tracked.items():
            if tracked.kind == kind and tracked.order[0] == 2 and tracked.removed is None and object_id not in seeded:
                tracked.removed = inv.bump()

    # --- changes made through the control API --------------------------------------------------------------------

    def change(self, tenant_id: str, doc: dict[str, Any]) -> dict[str, Any]:
        """Change generated objects: `{"kind": "application"|"servicePrincipal", "op": "renew"|"expire"|"delete"|
        "add", "count": n}` (or `"fraction": 0.01`; or `"ids": [...]`); renew adds a password credential ending in
        `days` (default 365), expire sets every credential's end to `days` (default -1) from now."""
        tenant = self.world.directory.tenants[tenant_id]
        inv = self.tenant(tenant_id)
        kind, op = doc.get("kind", "application"), doc.get("op", "renew")
        if kind not in PROPERTIES or op not in ("renew", "expire", "delete", "add", "owners"):
            raise ValueError("kind must be application|servicePrincipal, op renew|expire|delete|add|owners")
        rng = _rng("change", tenant_id, inv.seq, kind, op)
        now = self.world.now()
        if op == "add":
            made = []
            for _ in range(int(doc.get("count", 1))):
                obj = (generated_application if kind == "application" else generated_service_principal)(
                    tenant_id, Population(f"added-{inv.seq}-{rng.random()}", 1, 1, now), 0)
                inv.overrides[obj["id"]] = obj
                inv.added[kind].append(obj["id"])
                inv.tracked[obj["id"]] = Tracked(kind, (1, len(inv.added[kind]) - 1, obj["id"]), inv.bump())
                made.append(obj["id"])
            return {"ids": made}
        live = [(place, obj) for place, obj in self.objects(tenant, kind) if place[0] < 2]
        if "ids" in doc:
            wanted = set(doc["ids"])
            chosen = [(p, o) for p, o in live if o["id"] in wanted]
        else:
            count = int(doc["count"]) if "count" in doc else max(1, round(len(live) * float(doc.get("fraction", 0))))
            chosen = rng.sample(live, min(count, len(live)))
        if op == "owners":  # a relationship: no property changes, so no delta round will show it
            rng_owners = _rng("owners-set", tenant_id, inv.seq)
            for _, obj in chosen:
                obj = json.loads(json.dumps(obj))
                obj["_owners"] = [owner_user(tenant_id, rng_owners, n) for n in range(int(doc.get("owners", 1)))]
                inv.overrides[obj["id"]] = obj
            return {"ids": [obj["id"] for _, obj in chosen]}
        for place, obj in chosen:
            seq = inv.bump()
            tracked = inv.tracked.setdefault(obj["id"], Tracked(kind, place, 0))
            if op == "delete":
                inv.overrides[obj["id"]] = None
                tracked.removed = seq
                continue
            obj = json.loads(json.dumps(obj))
            if op == "renew":
                obj["passwordCredentials"].append(_password(rng, now, "renewed", int(doc.get("days", 365))))
                tracked.changed["passwordCredentials"] = seq
            else:
                end = iso(now + dt.timedelta(days=int(doc.get("days", -1))))
                for prop in ("passwordCredentials", "keyCredentials"):
                    for credential in obj[prop]:
                        credential["endDateTime"] = end
                    if obj[prop]:
                        tracked.changed[prop] = seq
            inv.overrides[obj["id"]] = obj
        return {"ids": [obj["id"] for _, obj in chosen]}

    # --- the delta function --------------------------------------------------------------------------------------

    def delta(self, request: web.Request, tenant: Tenant, entity_set: str, graph_base: str) -> dict[str, Any]:
        kind = ENTITY_SETS[entity_set]
        query = request.query
        known = {k.lower() for k in query}
        if known - {"$select", "$deltatoken", "$skiptoken", "$top"}:
            raise DeltaError(400, "Request_UnsupportedQuery",
                             f"Unsupported query parameters for delta: {sorted(known - {'$select', '$top'})}.")
        inv = self.tenant(tenant.id)
        self.observe(tenant, kind)
        now = self.world.now()
        # An empty $deltatoken is the initial query (what a 410's Location names): a full read.
        delta_token = _param(query, "$deltatoken") or None
        skip_token = _param(query, "$skiptoken") or None
        if delta_token is not None and skip_token is not None:
            raise DeltaError(400, "Request_BadRequest", "$deltatoken and $skiptoken cannot be combined.")
        if delta_token is not None or skip_token is not None:
            state = _decode(delta_token or skip_token or "", tenant.id, kind)
            if state["round"] < inv.reset_seq:
                params = {"$select": ",".join(state["select"])} if state["select"] else {}
                initial = f"{graph_base}/{entity_set}/delta?" + urlencode({**params, "$deltatoken": ""})
                raise DeltaError(410, "resyncRequired", "The delta token is no longer valid: a full synchronization "
                                 "of the tenant is required.", {"Location": initial})
            if now - dt.datetime.fromtimestamp(state["issued"], dt.UTC) > self.token_lifetime:
                raise DeltaError(400, "syncStateNotFound", "The sync state generation is not found; the delta token "
                                 "has expired. Start a full synchronization.")
            select = state["select"]
            if delta_token is not None:  # a new round of changes since the token's
                state = {"mode": "changes", "since": state["round"], "round": inv.seq, "after": None,
                         "select": select, "issued": now.timestamp()}
        else:  # a full read; $top is accepted and ignored (the page size is the sandbox's)
            select = _select_list(_param(query, "$select"), kind)
            state = {"mode": "full", "since": None, "round": inv.seq, "after": None, "select": select,
                     "issued": now.timestamp()}
        after = tuple(state["after"]) if state["after"] else None
        items, last = self._page(tenant, inv, kind, state, after)  # type: ignore[arg-type]
        body: dict[str, Any] = {
            "@odata.context": f"{graph_base}/$metadata#{entity_set}"
                              + (f"({','.join(select)})" if select else ""),
        }
        token_state = {**state, "tenant": tenant.id, "kind": kind}
        if last is not None:
            token_state["after"] = list(last)
            body["@odata.nextLink"] = f"{graph_base}/{entity_set}/delta?$skiptoken={_encode(token_state)}"
        else:
            final = {"mode": "changes", "round": state["round"], "after": None, "select": select,
                     "issued": now.timestamp(), "tenant": tenant.id, "kind": kind}
            body["@odata.deltaLink"] = f"{graph_base}/{entity_set}/delta?$deltatoken={_encode(final)}"
        body["value"] = items
        return body

    def _page(self, tenant: Tenant, inv: TenantInventory, kind: str, state: dict[str, Any],
              after: tuple[int, int, str] | None) -> tuple[list[dict[str, Any]], tuple[int, int, str] | None]:
        select = state["select"]
        items: list[dict[str, Any]] = []
        place: tuple[int, int, str] | None = None
        if state["mode"] == "full":
            for place, obj in self.objects(tenant, kind, after):
                items.append(_selected(obj, select))
                if len(items) == self.page_size:
                    return items, place
            # Objects removed since the population was made, which "can be returned in the initial response".
            for tracked_id, tracked in sorted(inv.tracked.items(), key=lambda t: t[1].order):
                if tracked.kind == kind and tracked.removed is not None:
                    items.append({"id": tracked_id, "@removed": {"reason": "changed"}})
            return items, None
        since = state["since"]
        changed = sorted(((t.order, oid, t) for oid, t in inv.tracked.items() if t.kind == kind
                          and max([t.created, t.removed or 0, *t.changed.values()]) > since), key=lambda x: x[0])
        current = {obj_id: obj for obj_id, obj in self._current(tenant, inv, kind, [oid for _, oid, _ in changed])}
        for order, object_id, tracked in changed:
            if after is not None and order <= after:
                continue
            place = order
            if tracked.removed is not None and tracked.removed > since:
                if tracked.created <= since:
                    items.append({"id": object_id, "@removed": {"reason": "changed"}})
            elif object_id in current:
                obj = current[object_id]
                if tracked.created > since:
                    items.append(_selected(obj, select))
                else:
                    props = [p for p, seq in tracked.changed.items() if seq > since
                             and (not select or p.lower() in {s.lower() for s in select})]
                    if not props:
                        continue
                    items.append({"id": object_id, **{p: obj.get(p) for p in props}})
            if len(items) == self.page_size:
                return items, place
        return items, None

    def find(self, tenant: Tenant, kind: str, object_id: str) -> dict[str, Any] | None:
        """A live generated or added object of the tenant by id (None: none such; seeded objects are the world's)."""
        inv = self.tenant(tenant.id)
        if object_id in inv.overrides:
            return inv.overrides[object_id]
        if inv.population is None:
            return None
        if inv.ids is None:  # the population's ids, once per tenant (a population is fixed once seeded)
            inv.ids = {}
            for name, count in (("application", inv.population.applications),
                                ("servicePrincipal", inv.population.service_principals)):
                for index in range(count):
                    inv.ids[self._generated(tenant.id, inv, name, index)["id"]] = (name, index)
        place = inv.ids.get(object_id)
        if place is None or place[0] != kind:
            return None
        return self._generated(tenant.id, inv, kind, place[1])

    def owners(self, request: web.Request, tenant: Tenant, entity_set: str, object_id: str, graph_base: str
               ) -> dict[str, Any] | None:
        """The owners page of an object (None: a seeded application, whose owners the world keeps)."""
        kind = ENTITY_SETS[entity_set]
        known = {k.lower() for k in request.query}
        if known - {"$select", "$top"}:
            raise DeltaError(400, "Request_UnsupportedQuery",
                             f"Unsupported query parameters for owners: {sorted(known - {'$select', '$top'})}.")
        if kind == "application" and object_id in tenant.applications:
            return None
        if kind == "servicePrincipal" and object_id in tenant.service_principals:
            value: list[dict[str, Any]] = []  # the world models no owner of a service principal
        else:
            obj = self.find(tenant, kind, object_id)
            if obj is None:
                raise DeltaError(404, "Request_ResourceNotFound",
                                 f"Resource '{object_id}' does not exist or one of its queried reference-property "
                                 "objects are not present.")
            value = self.owners_of(tenant, kind, obj)
        select = [p.strip() for p in (_param(request.query, "$select") or "").split(",") if p.strip()]
        if select:
            value = [{"@odata.type": o["@odata.type"], "id": o["id"], **{p: o.get(p) for p in select if p != "id"}}
                     for o in value]
        return {"@odata.context": f"{graph_base}/$metadata#directoryObjects", "value": value}

    def owners_of(self, tenant: Tenant, kind: str, obj: dict[str, Any]) -> list[dict[str, Any]]:
        """Every owner of a live object: a seeded application's are the world's service principals."""
        if kind == "application" and obj["id"] in tenant.applications:
            from sandbox.graph import service_principal_json  # the world's principals as Graph shows them

            app = tenant.applications[obj["id"]]
            return [{"@odata.type": "#microsoft.graph.servicePrincipal", **service_principal_json(sp)}
                    for sp in tenant.service_principals.values() if sp.id in app.owners]
        if kind == "servicePrincipal" and obj["id"] in tenant.service_principals:
            return []
        return generated_owners(tenant.id, obj)

    def expanded_list(self, request: web.Request, tenant: Tenant, entity_set: str, graph_base: str
                      ) -> dict[str, Any]:
        """`GET /{set}?$expand=owners(...)`: every object, at most EXPAND_PAGE a page, owners cut at
        EXPANDED_OWNERS."""
        kind = ENTITY_SETS[entity_set]
        known = {k.lower() for k in request.query}
        if known - {"$select", "$expand", "$top", "$skiptoken", "$filter"}:
            raise DeltaError(400, "Request_UnsupportedQuery", "The sandbox serves $select, $expand=owners, $top, "
                             "$skiptoken and $filter on ids on a list with $expand.")
        wanted = _id_filter(_param(request.query, "$filter"))
        expand = _EXPAND.match((_param(request.query, "$expand") or "").strip())
        if expand is None:
            raise DeltaError(400, "Request_BadRequest", "Only $expand=owners (with an optional $select) is served.")
        owner_select = [p for p in (expand["select"] or "").split(",") if p]
        select = _select_list(_param(request.query, "$select"), kind)
        try:
            top = int(_param(request.query, "$top") or EXPAND_PAGE)
            offset = int(base64.urlsafe_b64decode((_param(request.query, "$skiptoken") or "MA==").encode()))
        except ValueError as exc:
            raise DeltaError(400, "Request_BadRequest", "Invalid $top or $skiptoken.") from exc
        size = max(1, min(top, EXPAND_PAGE))
        items: list[dict[str, Any]] = []
        more = False
        candidates = (self.objects(tenant, kind) if wanted is None else
                      ((None, obj) for obj in self._by_ids(tenant, kind, wanted)))
        for n, (_, obj) in enumerate(candidates):
            if n < offset:
                continue
            if len(items) == size:
                more = True
                break
            owners = self.owners_of(tenant, kind, obj)[:EXPANDED_OWNERS]
            if owner_select:
                owners = [{"@odata.type": o["@odata.type"], "id": o["id"],
                           **{p: o.get(p) for p in owner_select if p != "id"}} for o in owners]
            items.append({**_selected(obj, select), "owners": owners})
        body: dict[str, Any] = {"@odata.context": f"{graph_base}/$metadata#{entity_set}", "value": items}
        if more:
            params = {k: v for k, v in request.query.items() if k.lower() != "$skiptoken"}
            token = base64.urlsafe_b64encode(str(offset + size).encode()).decode()
            body["@odata.nextLink"] = f"{graph_base}/{entity_set}?" + urlencode({**params, "$skiptoken": token})
        return body

    def _by_ids(self, tenant: Tenant, kind: str, ids: list[str]) -> list[dict[str, Any]]:
        """The live objects of the kind among `ids` (an id the tenant does not hold is left out, no error), in id
        order: not the order asked (Graph promises none)."""
        seeded = self._seeded(tenant, kind)
        found = {i: seeded.get(i) or self.find(tenant, kind, i) for i in set(ids)}
        return [obj for _, obj in sorted(found.items()) if obj is not None]

    def _current(self, tenant: Tenant, inv: TenantInventory, kind: str, ids: list[str]
                 ) -> Iterator[tuple[str, dict[str, Any]]]:
        wanted = set(ids)
        seeded = self._seeded(tenant, kind)
        for object_id in wanted:
            if object_id in seeded:
                yield object_id, seeded[object_id]
            elif inv.overrides.get(object_id) is not None:
                yield object_id, inv.overrides[object_id]  # type: ignore[misc]

    def sync_reset(self, tenant_id: str) -> None:
        """Graph's synchronization reset (tenant maintenance or migration): every older token meets 410 Gone."""
        inv = self.tenant(tenant_id)
        inv.reset_seq = inv.bump()


def _param(query: Any, name: str) -> str | None:
    for key, value in query.items():
        if key.lower() == name:
            return str(value)
    return None


_FILTER_IDS = re.compile(r"^\s*id\s+(?:eq\s+(?P<one>'(?:[^']|'')*')|in\s*\((?P<many>.*)\))\s*$", re.S)
_LITERAL = re.compile(r"\s*'((?:[^']|'')*)'\s*(?:,|$)")
FILTER_IN_LIMIT = 15  # known issue 13635: "the request is limited to 15 expressions in the filter clause"


def _id_filter(text: str | None) -> list[str] | None:
    """`$filter=id eq '...'` or `id in ('...',...)` (application.md: id supports eq and in): the ids, None without
    a filter. Any other clause is refused, as are more than FILTER_IN_LIMIT values."""
    if text is None:
        return None
    found = _FILTER_IDS.match(text)
    if found is None:
        raise DeltaError(400, "Request_UnsupportedQuery",
                         "The sandbox serves $filter on a list with $expand only as id eq '...' or id in (...).")
    if found["one"] is not None:
        return [found["one"][1:-1].replace("''", "'")]
    values, place, many = [], 0, found["many"]
    while place < len(many):
        literal = _LITERAL.match(many, place)
        if literal is None or literal.end() == place:
            raise DeltaError(400, "Request_BadRequest", "Invalid filter clause: the values of 'in' are quoted strings.")
        values.append(literal[1].replace("''", "'"))
        place = literal.end()
    if not values or many.rstrip().endswith(","):
        raise DeltaError(400, "Request_BadRequest", "Invalid filter clause: 'in' needs quoted values, comma-separated.")
    if len(values) > FILTER_IN_LIMIT:
        raise DeltaError(400, "Request_UnsupportedQuery",
                         f"Too many expressions in the filter clause: {len(values)}. Max allowed: {FILTER_IN_LIMIT}.")
    return values


def _select_list(text: str | None, kind: str) -> list[str]:
    if not text:
        return []
    names = {p.lower(): p for p in PROPERTIES[kind]}
    chosen = []
    for raw in text.split(","):
        name = raw.strip()
        if name.lower() not in names:
            raise DeltaError(400, "Request_BadRequest",
                             f"Could not find a property named '{name}' on type 'microsoft.graph.{kind}'.")
        chosen.append(names[name.lower()])
    return chosen


def _selected(obj: dict[str, Any], select: list[str]) -> dict[str, Any]:
    if not select:
        return {k: v for k, v in obj.items() if k != "_owners"}
    return {"id": obj["id"], **{p: obj.get(p) for p in select if p != "id"}}


def _encode(state: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(state, separators=(",", ":")).encode()).decode().rstrip("=")


def _decode(token: str, tenant_id: str, kind: str) -> dict[str, Any]:
    try:
        state = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        if not isinstance(state, dict) or state.get("tenant") != tenant_id or state.get("kind") != kind:
            raise ValueError("token of another tenant or collection")
        return state
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise DeltaError(400, "Request_BadRequest", "The delta or skip token is malformed.") from exc


def handle_delta(world: World, request: web.Request, tenant: Tenant, entity_set: str, graph_base: str,
                 app_id: str = "") -> web.Response:
    """The delta function's answer (DeltaError for Graph's refusals, throttling included)."""
    state = world.inventory
    if not isinstance(state, InventoryState):
        raise DeltaError(501, "NotImplemented", "The inventory module is not mounted.")
    state.charge(app_id, tenant.id)
    return web.json_response(state.delta(request, tenant, entity_set, graph_base))


def handle_owners(world: World, request: web.Request, tenant: Tenant, entity_set: str, object_id: str,
                  graph_base: str, app_id: str = "") -> web.Response | None:
    """An owners answer (DeltaError for Graph's refusals, throttling included); None for a seeded application."""
    state = world.inventory
    if not isinstance(state, InventoryState):
        return None
    state.charge(app_id, tenant.id)
    body = state.owners(request, tenant, entity_set, object_id, graph_base)
    return None if body is None else web.json_response(body)


def handle_expanded_list(world: World, request: web.Request, tenant: Tenant, entity_set: str, graph_base: str,
                         app_id: str = "") -> web.Response:
    """A list with `$expand=owners` (DeltaError for Graph's refusals, throttling included)."""
    state = world.inventory
    if not isinstance(state, InventoryState):
        raise DeltaError(501, "NotImplemented", "The inventory module is not mounted.")
    state.charge(app_id, tenant.id)
    return web.json_response(state.expanded_list(request, tenant, entity_set, graph_base))


def add_control_routes(routes: web.RouteTableDef, world: World) -> None:
    """`POST /inventory/{tenant}/changes` (InventoryState.change), `POST /inventory/{tenant}/reset` (a sync reset)."""

    def state() -> InventoryState:
        inventory = world.inventory
        if not isinstance(inventory, InventoryState):
            raise web.HTTPNotImplemented(text='{"error": "the inventory module is not mounted"}')
        return inventory

    def answer(action: Callable[[], Any]) -> web.Response:
        try:
            return web.json_response(action())
        except KeyError as exc:
            return web.json_response({"error": f"no such tenant: {exc}"}, status=404)
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)

    @routes.post("/inventory/{tenant}/changes")
    async def changes(request: web.Request) -> web.Response:
        doc = await request.json() if request.body_exists else {}
        return answer(lambda: state().change(request.match_info["tenant"], doc))

    @routes.post("/inventory/changes")
    async def fleet_changes(request: web.Request) -> web.Response:
        """The same change in many tenants at once: `{"tenants": [...], ...}` (benchmarks' daily churn)."""
        doc = await request.json() if request.body_exists else {}
        tenants = doc.pop("tenants", []) if isinstance(doc, dict) else []
        return answer(lambda: {"changed": sum(len(state().change(t, dict(doc))["ids"]) for t in tenants)})

    @routes.post("/inventory/{tenant}/reset")
    async def reset(request: web.Request) -> web.Response:
        tenant_id = request.match_info["tenant"]
        if tenant_id not in world.directory.tenants:
            return web.json_response({"error": f"no such tenant: {tenant_id}"}, status=404)
        state().sync_reset(tenant_id)
        return web.json_response({"ok": True})
