"""The sandbox's shared in-memory world: the directory, the clock, tokens, and every service's state."""

from __future__ import annotations

import datetime as dt
import random
import re
import secrets
import string
import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol

import jwt

from sandbox import seeddates

GRAPH_AUDIENCE = "https://graph.microsoft.com"
VAULT_AUDIENCE = "https://vault.azure.net"
EXCHANGE_AUDIENCE = "api://AzureADTokenExchange"
AUDIENCES = (GRAPH_AUDIENCE, VAULT_AUDIENCE, EXCHANGE_AUDIENCE)

# Fixed, well-known ids so that tests and the demo can name the MSP's own identities.
MSP_TENANT_ID = "5a1d0000-0000-4000-8000-000000000001"
MSP_TENANT_NAME = "Contoso MSP"
MI_CLIENT_ID = "5a1d0000-0000-4000-8000-000000000002"
MI_PRINCIPAL_ID = "5a1d0000-0000-4000-8000-000000000003"
MSP_APP_ID = "5a1d0000-0000-4000-8000-000000000004"
MSP_APP_OBJECT_ID = "5a1d0000-0000-4000-8000-000000000005"
MSP_APP_SP_ID = "5a1d0000-0000-4000-8000-000000000006"
MSP_APP_NAME = "Sync-secret rotator (MSP)"
MI_NAME = "id-sync-secret-rotator"
KEY_VAULT_ROLE = "Key Vault Secrets Officer"
# Microsoft Graph's appId and the ids of its application permissions the rotator asks for (the permissions
# reference, learn.microsoft.com/graph/permissions-reference): consent grants the roles an app's
# requiredResourceAccess lists.
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
GRAPH_APP_ROLES = {
    "18a4783c-866b-4cc7-a460-3d5e5662c884": "Application.ReadWrite.OwnedBy",
    "1bfefb4e-e0b5-418b-a88f-73c46d2cc8e9": "Application.ReadWrite.All",
    "9a5d68dd-52b0-4cc2-bd40-abcf44ac3a30": "Application.Read.All",
}
OWNED_BY_ROLE_ID = "18a4783c-866b-4cc7-a460-3d5e5662c884"
# The consent redirect URI registered on the sandbox's MSP app by default: `func start`'s (and
# `python -m shared serve`'s) default address, as infra/scripts/create-msp-app.sh registers the app's own.
DEFAULT_CONSENT_REDIRECT_URI = "http://localhost:7071/api/consent"

TOKEN_LIFETIME = dt.timedelta(hours=1)
# The tenant default app management policy (policies/defaultAppManagementPolicy) has this fixed id in Graph.
DEFAULT_POLICY_ID = "00000000-0000-0000-0000-000000000000"
_DURATION = re.compile(
    r"^P(?:(?P<w>\d+)W)?(?:(?P<d>\d+)D)?(?:T(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$"
)
_SECRET_ALPHABET = string.ascii_letters + string.digits + "~_.-"


class AuthError(Exception):
    """A request's bearer token was missing, invalid, expired or for another audience."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True)
class EntraError(Exception):
    """An error as Entra's token endpoint reports it."""

    status: int
    error: str
    code: int
    description: str

    @property
    def aadsts(self) -> str:
        return f"AADSTS{self.code}: {self.description}"


@dataclass(frozen=True)
class Claims:
    """The claims of a verified sandbox access token."""

    tenant_id: str
    app_id: str
    object_id: str
    audience: str
    roles: list[str]
    expires_at: dt.datetime


class ServiceState(Protocol):
    """What every service module's state class offers the control API."""

    def seed(self, section: dict[str, Any]) -> None: ...
    def dump(self) -> dict[str, Any]: ...
    def reset(self) -> None: ...


class _EmptyState:
    """Stands in for a service whose module is not mounted."""

    def seed(self, section: dict[str, Any]) -> None:
        pass

    def dump(self) -> dict[str, Any]:
        return {}

    def reset(self) -> None:
        pass


def iso(moment: dt.datetime) -> str:
    """Graph's timestamp format: UTC with a Z."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str) -> dt.datetime:
    """Parse an ISO 8601 timestamp; naive ones are taken as UTC."""
    moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def parse_duration(text: str) -> dt.timedelta:
    """An ISO 8601 duration as Graph's `maxLifetime` carries it ("P90D", "P4DT12H30M5S"); no years or months."""
    match = _DURATION.match(text.strip()) if text else None
    if match is None or text.strip() in ("P", "PT"):
        raise ValueError(f"not an ISO 8601 duration of weeks, days, hours, minutes, seconds: {text!r}")
    parts = {k: float(v) for k, v in match.groupdict().items() if v}
    return dt.timedelta(weeks=parts.get("w", 0), days=parts.get("d", 0), hours=parts.get("h", 0),
                        minutes=parts.get("m", 0), seconds=parts.get("s", 0))


def format_duration(delta: dt.timedelta) -> str:
    days, rest = divmod(int(delta.total_seconds()), 86400)
    return f"P{days}D" if not rest else f"P{days}DT{rest}S"


@dataclass
class PasswordRestriction:
    """One passwordCredentialConfiguration of an app management policy."""

    restriction_type: str  # passwordAddition | passwordLifetime (others are kept but not enforced)
    max_lifetime: dt.timedelta | None = None
    applies_after: dt.datetime | None = None  # restrictForAppsCreatedAfterDateTime; None = every app
    state: str = "enabled"

    @classmethod
    def from_graph(cls, doc: dict[str, Any]) -> PasswordRestriction:
        kind = doc["restrictionType"]
        max_lifetime = doc.get("maxLifetime")
        if kind == "passwordLifetime" and not max_lifetime:
            raise ValueError("a passwordLifetime restriction needs maxLifetime")
        after = doc.get("restrictForAppsCreatedAfterDateTime")
        return cls(kind, parse_duration(max_lifetime) if max_lifetime else None,
                   parse_iso(after) if after else None, doc.get("state", "enabled"))

    def to_graph(self) -> dict[str, Any]:
        return {
            "restrictionType": self.restriction_type,
            "state": self.state,
            "maxLifetime": format_duration(self.max_lifetime) if self.max_lifetime else None,
            "restrictForAppsCreatedAfterDateTime": iso(self.applies_after) if self.applies_after else None,
        }

    def enforced_on(self, app: Application) -> bool:
        return self.state != "disabled" and (self.applies_after is None or app.created >= self.applies_after)


@dataclass
class AppManagementPolicy:
    """The password part of a tenant default policy (applicationRestrictions) or of an appManagementPolicy."""

    id: str
    display_name: str
    is_enabled: bool = True
    passwords: list[PasswordRestriction] = field(default_factory=list)

    @classmethod
    def from_seed(cls, doc: dict[str, Any], default_id: str) -> AppManagementPolicy:
        restrictions = doc.get("applicationRestrictions") or doc.get("restrictions") or {}
        return cls(
            id=doc.get("id", default_id),
            display_name=doc.get("displayName", "Default app management policy"),
            is_enabled=bool(doc.get("isEnabled", True)),
            passwords=[PasswordRestriction.from_graph(r) for r in restrictions.get("passwordCredentials", [])],
        )

    def to_graph(self, restrictions_key: str) -> dict[str, Any]:
        return {"id": self.id, "displayName": self.display_name, "isEnabled": self.is_enabled,
                restrictions_key: {"passwordCredentials": [r.to_graph() for r in self.passwords]}}


def effective_password_restrictions(tenant: Tenant, app: Application) -> dict[str, tuple[PasswordRestriction, str]]:
    """Each enforced password restriction on the app with the id of the policy it comes from.

    An enabled policy applied to the app wins, restriction type by restriction type, over the tenant default
    (an app policy with a `disabled` restriction exempts the app from that restriction of the default).
    """
    found: dict[str, tuple[PasswordRestriction, str]] = {}
    for policy in (tenant.default_policy, app.policy):
        if policy is None or not policy.is_enabled:
            continue
        for restriction in policy.passwords:
            found[restriction.restriction_type] = (restriction, policy.id)
    return {k: v for k, v in found.items() if v[0].enforced_on(app)}


def new_secret_text() -> str:
    """A value shaped like an Entra client secret: 3 chars, "8Q~", 34 chars."""
    return "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(3)) + "8Q~" + "".join(
        secrets.choice(_SECRET_ALPHABET) for _ in range(34)
    )


@dataclass
class PasswordCredential:
    key_id: str
    display_name: str | None
    secret_text: str
    start: dt.datetime
    end: dt.datetime
    created_at: dt.datetime
    # How long after created_at the secret starts working; None: the world's global delay, judged when used.
    propagation_delay: dt.timedelta | None = None

    def to_graph(self, *, with_secret: bool = False) -> dict[str, Any]:
        return {
            "customKeyIdentifier": None,
            "displayName": self.display_name,
            "endDateTime": iso(self.end),
            "hint": self.secret_text[:3],
            "keyId": self.key_id,
            "secretText": self.secret_text if with_secret else None,
            "startDateTime": iso(self.start),
        }


@dataclass
class FederatedCredential:
    issuer: str
    subject: str
    audiences: list[str]


@dataclass
class Application:
    id: str
    app_id: str
    display_name: str
    sign_in_audience: str
    home_tenant_id: str
    created: dt.datetime
    owners: list[str] = field(default_factory=list)  # object ids of owning service principals
    passwords: list[PasswordCredential] = field(default_factory=list)
    federated: list[FederatedCredential] = field(default_factory=list)
    identifier_uris: list[str] = field(default_factory=list)
    required_resource_access: list[dict[str, Any]] = field(default_factory=list)
    policy: AppManagementPolicy | None = None  # an appManagementPolicy applied to this app
    redirect_uris: list[str] = field(default_factory=list)  # web.redirectUris

    def graph_roles(self) -> list[str]:
        """The Microsoft Graph application permissions (by name) its requiredResourceAccess lists."""
        return [
            GRAPH_APP_ROLES[access["id"]]
            for resource in self.required_resource_access if resource.get("resourceAppId") == GRAPH_APP_ID
            for access in resource.get("resourceAccess", [])
            if access.get("type") == "Role" and access.get("id") in GRAPH_APP_ROLES
        ]


@dataclass
class ServicePrincipal:
    id: str
    app_id: str
    display_name: str
    app_owner_tenant_id: str | None
    kind: str = "Application"  # or "ManagedIdentity"
    roles: list[str] = field(default_factory=list)


@dataclass
class Tenant:
    id: str
    name: str
    default_policy: AppManagementPolicy | None = None  # policies/defaultAppManagementPolicy
    consent_decision: str = "accept"  # what its admin answers on the admin-consent page: accept | decline
    applications: dict[str, Application] = field(default_factory=dict)  # by object id
    service_principals: dict[str, ServicePrincipal] = field(default_factory=dict)  # by appId


class Directory:
    """Tenants, their applications and service principals (the Entra ID stand-in's data)."""

    def __init__(self, world: World) -> None:
        self._world = world
        self.tenants: dict[str, Tenant] = {}
        self.reset()

    def reset(self) -> None:
        self.tenants = {}
        now = self._world.now()
        msp = Tenant(MSP_TENANT_ID, MSP_TENANT_NAME)
        self.tenants[msp.id] = msp
        app = Application(
            id=MSP_APP_OBJECT_ID,
            app_id=MSP_APP_ID,
            display_name=MSP_APP_NAME,
            sign_in_audience="AzureADMultipleOrgs",
            home_tenant_id=msp.id,
            created=now,
            federated=[FederatedCredential(self._world.issuer(msp.id), MI_PRINCIPAL_ID, [EXCHANGE_AUDIENCE])],
            # What infra/scripts/create-msp-app.sh registers: Graph's Application.ReadWrite.OwnedBy, the redirect URI.
            required_resource_access=[
                {"resourceAppId": GRAPH_APP_ID, "resourceAccess": [{"id": OWNED_BY_ROLE_ID, "type": "Role"}]}
            ],
            redirect_uris=[DEFAULT_CONSENT_REDIRECT_URI],
        )
        msp.applications[app.id] = app
        msp.service_principals[MSP_APP_ID] = ServicePrincipal(MSP_APP_SP_ID, MSP_APP_ID, MSP_APP_NAME, msp.id)
        msp.service_principals[MI_CLIENT_ID] = ServicePrincipal(
            MI_PRINCIPAL_ID, MI_CLIENT_ID, MI_NAME, None, kind="ManagedIdentity", roles=[KEY_VAULT_ROLE]
        )

    def resolve_app_id(self, name: str) -> str:
        """Seed documents may say "msp-app" or "managed-identity" instead of a GUID."""
        return {"msp-app": MSP_APP_ID, "managed-identity": MI_CLIENT_ID}.get(name, name)

    def find_application(self, app_id: str) -> Application | None:
        """The application object with that appId, in its home tenant."""
        for tenant in self.tenants.values():
            for app in tenant.applications.values():
                if app.app_id == app_id:
                    return app
        return None

    def ensure_service_principal(self, tenant: Tenant, app_id: str) -> ServicePrincipal:
        """The app's service principal in the tenant, created if missing (admin consent)."""
        sp = tenant.service_principals.get(app_id)
        if sp is None:
            if app_id == MI_CLIENT_ID:
                sp = ServicePrincipal(MI_PRINCIPAL_ID, MI_CLIENT_ID, MI_NAME, None, kind="ManagedIdentity")
            else:
                app = self.find_application(app_id)
                name = app.display_name if app else app_id
                sp = ServicePrincipal(str(uuid.uuid4()), app_id, name, app.home_tenant_id if app else None)
            tenant.service_principals[app_id] = sp
        return sp

    def grant_admin_consent(self, tenant: Tenant, app: Application) -> ServicePrincipal:
        """What an admin's consent does: the app's service principal in the tenant, with the application
        permissions its requiredResourceAccess lists assigned to it."""
        sp = self.ensure_service_principal(tenant, app.app_id)
        for role in app.graph_roles():
            if role not in sp.roles:
                sp.roles.append(role)
        return sp

    def seed(self, section: list[dict[str, Any]]) -> None:
        for tenant_doc in section:
            tenant = self.tenants.get(tenant_doc["id"])
            if tenant is None:
                tenant = Tenant(tenant_doc["id"], tenant_doc.get("name", tenant_doc["id"]))
                self.tenants[tenant.id] = tenant
            if "name" in tenant_doc:
                tenant.name = tenant_doc["name"]
            if "consentDecision" in tenant_doc:
                if tenant_doc["consentDecision"] not in ("accept", "decline"):
                    raise ValueError("consentDecision must be accept or decline")
                tenant.consent_decision = tenant_doc["consentDecision"]
            if "defaultAppManagementPolicy" in tenant_doc:
                tenant.default_policy = AppManagementPolicy.from_seed(
                    tenant_doc["defaultAppManagementPolicy"], DEFAULT_POLICY_ID
                )
            if tenant_doc.get("maxSecretLifetimeDays") is not None:
                # Shorthand: an enabled tenant default policy with only a passwordLifetime restriction.
                tenant.default_policy = AppManagementPolicy(
                    DEFAULT_POLICY_ID, "Default app management policy", True,
                    [PasswordRestriction("passwordLifetime", dt.timedelta(days=tenant_doc["maxSecretLifetimeDays"]))],
                )
            for app_doc in tenant_doc.get("applications", []):
                self._seed_application(tenant, app_doc)
            for grant in tenant_doc.get("grants", []):
                sp = self.ensure_service_principal(tenant, self.resolve_app_id(grant["appId"]))
                for role in grant.get("roles", []):
                    if role not in sp.roles:
                        sp.roles.append(role)
            # Owners may name apps granted later in the same document, so resolve them last.
            for app_doc in tenant_doc.get("applications", []):
                app = next(a for a in tenant.applications.values() if a.app_id == self.resolve_app_id(app_doc["appId"]))
                for owner in app_doc.get("owners", []):
                    sp = self.ensure_service_principal(tenant, self.resolve_app_id(owner))
                    if sp.id not in app.owners:
                        app.owners.append(sp.id)

    def _seed_application(self, tenant: Tenant, doc: dict[str, Any]) -> None:
        now = self._world.now()
        doc = {**doc, "appId": self.resolve_app_id(doc["appId"])}
        app = next((a for a in tenant.applications.values() if a.app_id == doc["appId"]), None)
        if app is None:
            app = Application(
                id=doc.get("id") or str(uuid.uuid4()),
                app_id=doc["appId"],
                display_name=doc.get("displayName", doc["appId"]),
                sign_in_audience=doc.get("signInAudience", "AzureADMyOrg"),
                home_tenant_id=tenant.id,
                created=now - dt.timedelta(days=400),
            )
            tenant.applications[app.id] = app
        app.display_name = doc.get("displayName", app.display_name)
        app.sign_in_audience = doc.get("signInAudience", app.sign_in_audience)
        app.identifier_uris = doc.get("identifierUris", app.identifier_uris)
        app.required_resource_access = doc.get("requiredResourceAccess", app.required_resource_access)
        if "web" in doc:
            app.redirect_uris = list(doc["web"].get("redirectUris", app.redirect_uris))
        if doc.get("createdDateTime"):
            app.created = seeddates.resolve(doc["createdDateTime"], now)
        if "appManagementPolicy" in doc:
            app.policy = AppManagementPolicy.from_seed(doc["appManagementPolicy"], str(uuid.uuid4()))
        # Entra creates the service principal in the home tenant along with the registration.
        self.ensure_service_principal(tenant, app.app_id).display_name = app.display_name
        for cred in doc.get("passwordCredentials", []):
            end = seeddates.resolve(cred["endDateTime"], now)
            app.passwords.append(
                PasswordCredential(
                    key_id=cred.get("keyId") or str(uuid.uuid4()),
                    display_name=cred.get("displayName"),
                    secret_text=cred.get("secretText") or new_secret_text(),
                    start=seeddates.resolve(cred["startDateTime"], now) if cred.get("startDateTime") else min(now, end),
                    end=end,
                    # Seeded secrets are old enough to have propagated long ago.
                    created_at=now - dt.timedelta(days=1),
                )
            )

    def dump(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for tenant in self.tenants.values():
            out.append(
                {
                    "id": tenant.id,
                    "name": tenant.name,
                    "consentDecision": tenant.consent_decision,
                    "defaultAppManagementPolicy": (
                        tenant.default_policy.to_graph("applicationRestrictions") if tenant.default_policy else None
                    ),
                    "applications": [
                        {
                            "id": app.id,
                            "appId": app.app_id,
                            "displayName": app.display_name,
                            "signInAudience": app.sign_in_audience,
                            "owners": list(app.owners),
                            "web": {"redirectUris": list(app.redirect_uris)},
                            "appManagementPolicy": app.policy.to_graph("restrictions") if app.policy else None,
                            "passwordCredentials": [
                                {**p.to_graph(with_secret=True), "propagationDelaySeconds": (
                                    None if p.propagation_delay is None else p.propagation_delay.total_seconds())}
                                for p in app.passwords
                            ],
                        }
                        for app in tenant.applications.values()
                    ],
                    "servicePrincipals": [
                        {"id": sp.id, "appId": sp.app_id, "displayName": sp.display_name, "roles": list(sp.roles)}
                        for sp in tenant.service_principals.values()
                    ],
                }
            )
        return out


def _seconds(value: object) -> dt.timedelta:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"a delay must be a non-negative number of seconds, not {value!r}")
    return dt.timedelta(seconds=float(value))


class RandomPropagation:
    """Seeded random propagation delays, uniform in [low, high], one draw per new secret (reproducible order)."""

    def __init__(self, seed: int, low: dt.timedelta, high: dt.timedelta) -> None:
        if high < low:
            raise ValueError("max_seconds must not be below min_seconds")
        self.seed, self.low, self.high = seed, low, high
        self._random = random.Random(seed)  # test equipment: reproducible on purpose

    def draw(self) -> dt.timedelta:
        return dt.timedelta(seconds=self._random.uniform(self.low.total_seconds(), self.high.total_seconds()))


class World:
    """Everything the sandbox's services share: clock, token keys, directory, service states."""

    def __init__(self) -> None:
        self.clock_offset = dt.timedelta(0)
        self.propagation_delay = dt.timedelta(0)
        self.propagation_delays: dict[str, dt.timedelta] = {}  # per appId (lower case), fixed at addPassword
        self.random_propagation: RandomPropagation | None = None
        self.urls: dict[str, str] = {"entra": "https://127.0.0.1"}
        self.identity_header = secrets.token_urlsafe(24)
        self.msp_tenant_id = MSP_TENANT_ID
        self._signing_key = secrets.token_bytes(32)
        self.directory = Directory(self)
        self.keyvault: ServiceState = _EmptyState()
        self.proofpoint: ServiceState = _EmptyState()
        self.portal: ServiceState = _EmptyState()

    def now(self) -> dt.datetime:
        """The sandbox clock: real UTC now plus the offset set through the control API."""
        return dt.datetime.now(dt.UTC) + self.clock_offset

    def issuer(self, tenant_id: str) -> str:
        return f"{self.urls['entra']}/{tenant_id}/v2.0"

    def _states(self) -> dict[str, ServiceState]:
        return {"keyvault": self.keyvault, "proofpoint": self.proofpoint, "portal": self.portal}

    def reset(self) -> None:
        """Empty everything; the MSP tenant and its identities are re-created."""
        self.clock_offset = dt.timedelta(0)
        self.propagation_delay = dt.timedelta(0)
        self.propagation_delays = {}
        self.random_propagation = None
        self.directory.reset()
        for state in self._states().values():
            state.reset()

    def seed(self, doc: dict[str, Any]) -> None:
        """Add the contents of a seed document (see sandbox/README.md)."""
        self.directory.seed(doc.get("tenants", []))
        for name, state in self._states().items():
            if name in doc:
                state.seed(doc[name])

    def dump(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "clockOffsetSeconds": self.clock_offset.total_seconds(),
            "propagationDelaySeconds": self.propagation_delay.total_seconds(),
            "propagationDelays": {k: v.total_seconds() for k, v in self.propagation_delays.items()},
            "tenants": self.directory.dump(),
        }
        for name, service in self._states().items():
            state[name] = service.dump()
        return state

    # Propagation delay of new secrets

    def new_secret_delay(self, app_id: str) -> dt.timedelta | None:
        """The delay a secret added now to that app gets: the app's own, else a seeded random draw, else None."""
        own = self.propagation_delays.get(app_id.lower())
        if own is not None:
            return own
        if self.random_propagation is not None:
            return self.random_propagation.draw()
        return None

    def configure_propagation(self, doc: dict[str, Any]) -> None:
        """Apply the propagation keys of a POST /settings document (ValueError/TypeError when malformed)."""
        if "propagation_delay_seconds" in doc:
            self.propagation_delay = _seconds(doc["propagation_delay_seconds"])
        delays = doc.get("propagation_delays")
        if delays is not None:
            if not isinstance(delays, dict):
                raise TypeError("propagation_delays must map appId to seconds (null removes)")
            for app_id, seconds in delays.items():
                if seconds is None:
                    self.propagation_delays.pop(str(app_id).lower(), None)
                else:
                    self.propagation_delays[str(app_id).lower()] = _seconds(seconds)
        if "random_propagation" in doc:
            spec = doc["random_propagation"]
            self.random_propagation = None if spec is None else RandomPropagation(
                int(spec["seed"]), _seconds(spec.get("min_seconds", 0)), _seconds(spec["max_seconds"])
            )

    def propagation_settings(self) -> dict[str, Any]:
        rnd = self.random_propagation
        return {
            "propagation_delay_seconds": self.propagation_delay.total_seconds(),
            "propagation_delays": {k: v.total_seconds() for k, v in self.propagation_delays.items()},
            "random_propagation": None if rnd is None else {
                "seed": rnd.seed, "min_seconds": rnd.low.total_seconds(), "max_seconds": rnd.high.total_seconds()
            },
        }

    # Tokens

    def mint_token(
        self, *, tenant_id: str, app_id: str, object_id: str, audience: str, roles: list[str]
    ) -> tuple[str, dt.datetime]:
        """An access token (JWT, HS256) shaped like Entra's app-only tokens, and its expiry."""
        now = self.now()
        expires = now + TOKEN_LIFETIME
        claims = {
            "iss": self.issuer(tenant_id),
            "aud": audience,
            "sub": object_id,
            "tid": tenant_id,
            "appid": app_id,
            "azp": app_id,
            "oid": object_id,
            "roles": roles,
            "iat": int(now.timestamp()),
            "nbf": int(now.timestamp()) - 300,
            "exp": int(expires.timestamp()),
            "idtyp": "app",
            "uti": uuid.uuid4().hex,
        }
        return jwt.encode(claims, self._signing_key, algorithm="HS256"), expires

    def decode_token(self, token: str) -> dict[str, Any]:
        """The claims of a token this sandbox signed; raises AuthError when invalid or expired."""
        try:
            claims: dict[str, Any] = jwt.decode(
                token, self._signing_key, algorithms=["HS256"],
                options={"verify_exp": False, "verify_nbf": False, "verify_iat": False, "verify_aud": False},
            )
        except jwt.PyJWTError as exc:
            raise AuthError(401, "InvalidAuthenticationToken", "Access token validation failure.") from exc
        # The whole lifetime (nbf, exp) is judged by the sandbox clock so that tests can move time forward: PyJWT
        # would judge nbf and iat by the real clock and refuse every token minted after the clock moved ahead.
        now = self.now().timestamp()
        if claims.get("exp", 0) <= now:
            raise AuthError(401, "InvalidAuthenticationToken", "Lifetime validation failed, the token is expired.")
        if claims.get("nbf", 0) > now:
            raise AuthError(401, "InvalidAuthenticationToken",
                            "Lifetime validation failed, the token is not yet valid.")
        return claims

    def verify_bearer(self, authorization_header: str | None, audience: str) -> Claims:
        """Check an Authorization header for a valid sandbox token for that audience."""
        if not authorization_header:
            raise AuthError(401, "InvalidAuthenticationToken", "Access token is empty.")
        scheme, _, token = authorization_header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError(401, "InvalidAuthenticationToken", "Access token is empty.")
        claims = self.decode_token(token.strip())
        if claims.get("aud") != audience:
            raise AuthError(401, "InvalidAuthenticationToken", "Access token validation failure. Invalid audience.")
        return Claims(
            tenant_id=claims["tid"],
            app_id=claims["appid"],
            object_id=claims["oid"],
            audience=claims["aud"],
            roles=list(claims.get("roles", [])),
            expires_at=dt.datetime.fromtimestamp(claims["exp"], dt.UTC),
        )

    # Client credentials

    def app_in_tenant(self, tenant_id: str, app_id: str) -> tuple[Tenant, Application, ServicePrincipal]:
        """The tenant, the app's registration and its service principal there; EntraError when absent."""
        tenant = self.directory.tenants.get(tenant_id)
        if tenant is None:
            raise EntraError(
                400, "invalid_request", 90002, f"Tenant '{tenant_id}' not found. Check to make sure you have the "
                "correct tenant ID and are signing into the correct cloud."
            )
        app = self.directory.find_application(app_id)
        sp = tenant.service_principals.get(app_id)
        if app is None or sp is None:
            raise EntraError(
                400, "unauthorized_client", 700016, f"Application with identifier '{app_id}' was not found in the "
                f"directory '{tenant.name}'. This can happen if the application has not been installed by the "
                "administrator of the tenant or consented to by any user in the tenant."
            )
        return tenant, app, sp

    def authenticate_secret(
        self, tenant_id: str, app_id: str, secret: str, at: dt.datetime | None = None
    ) -> ServicePrincipal:
        """The service principal a client secret signs in as (now, or at `at`); EntraError as Entra would refuse."""
        _, app, sp = self.app_in_tenant(tenant_id, app_id)
        now = at or self.now()
        for cred in app.passwords:
            if not secrets.compare_digest(cred.secret_text, secret):
                continue
            if cred.end <= now:
                raise EntraError(
                    401, "invalid_client", 7000222, f"The provided client secret keys for app '{app_id}' are "
                    "expired. Visit the Azure portal to create new keys for your app."
                )
            delay = self.propagation_delay if cred.propagation_delay is None else cred.propagation_delay
            if cred.start <= now and now - cred.created_at >= delay:
                return sp
            break
        raise EntraError(
            401, "invalid_client", 7000215, "Invalid client secret provided. Ensure the secret being sent in the "
            f"request is the client secret value, not the client secret ID, for a secret added to app '{app_id}'."
        )

    def check_client_secret(
        self, tenant_id: str, app_id: str, secret: str, at: dt.datetime | None = None
    ) -> str | None:
        """None when Entra would issue a token for the app in the tenant with that secret now (or at `at`)."""
        try:
            self.authenticate_secret(tenant_id, app_id, secret, at)
        except EntraError as exc:
            return exc.aadsts
        return None
