"""The sandbox's shared in-memory world: the directory, the clock, tokens, and every service's state."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import random
import re
import secrets
import string
import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from sandbox import seeddates

GRAPH_AUDIENCE = "https://graph.microsoft.com"
VAULT_AUDIENCE = "https://vault.azure.net"
EXCHANGE_AUDIENCE = "api://AzureADTokenExchange"
# Partner Center's resource: tokens for `https://api.partnercenter.microsoft.com/user_impersonation` (Partner Center
# REST "Authentication": App+User tokens for this audience).
PARTNER_CENTER_AUDIENCE = "https://api.partnercenter.microsoft.com"
AUDIENCES = (GRAPH_AUDIENCE, VAULT_AUDIENCE, EXCHANGE_AUDIENCE, PARTNER_CENTER_AUDIENCE)

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
# The MSP app is also the rotator's own API (App Service Authentication's client id): its app roles, its delegated
# scope, the MSP's users and automation principals that call it (sandbox/README.md, "The rotator's API").
ROLE_READ = "Rotator.Read"
ROLE_OPERATE = "Rotator.Operate"
# The app roles' and the scope's fixed ids are the ones infra/scripts/create-msp-app.sh registers on the real app.
ROLE_READ_ID = "5d0c3f0e-7c4b-4f2a-9a51-2f6e8b1c7a01"
ROLE_OPERATE_ID = "9b7e2a64-1d3f-4c8e-b0a2-6c5d4e3f2a02"
SCOPE_ID = "3f1c6a2e-8d4b-4e7a-9c15-0b2d7e6f4a03"
API_SCOPE = "user_impersonation"
# (object id, userPrincipalName, displayName, app role or None)
MSP_USERS = (
    ("5a1d0000-0000-4000-8000-000000000020", "operator@msp.example", "Olivia Operator", ROLE_OPERATE),
    ("5a1d0000-0000-4000-8000-000000000021", "reader@msp.example", "Rafael Reader", ROLE_READ),
    ("5a1d0000-0000-4000-8000-000000000022", "nobody@msp.example", "Nora Nobody", None),
)
# Automation callers: their own app registrations in the MSP tenant, (appId, object id, SP id, name, app role).
AUTOMATION_APPS = (
    ("5a1d0000-0000-4000-8000-000000000030", "5a1d0000-0000-4000-8000-000000000031",
     "5a1d0000-0000-4000-8000-000000000032", "Rotator automation (operate)", ROLE_OPERATE),
    ("5a1d0000-0000-4000-8000-000000000033", "5a1d0000-0000-4000-8000-000000000034",
     "5a1d0000-0000-4000-8000-000000000035", "Rotator automation (read)", ROLE_READ),
)
KEY_VAULT_ROLE = "Key Vault Secrets Officer"
# The partner (MSP) tenant's admin who onboards customers through GDAP, and the partner security groups the GDAP
# relationships' access assignments name (issue 23's contract GUIDs). The admin may operate the rotator.
PARTNER_ADMIN_ID = "5a1d0000-0000-4000-8000-000000000040"
PARTNER_ADMIN_UPN = "partner-admin@msp.example"
PARTNER_ADMIN_NAME = "Paula Partner-Admin"
# The partner tenant's admin consent for the MSP app's sign-in (infra/scripts/create-msp-app.sh, SIGN_IN_GRAPH_SCOPES:
# a test holds them equal), which the default world holds as a deployment that ran the script does.
PARTNER_SIGN_IN_GRAPH_SCOPES = ("DelegatedAdminRelationship.Read.All", "User.Read", "offline_access", "openid",
                                "profile")
PARTNER_GROUPS = (("5a1d0000-0000-4000-8000-000000000041", "GDAP App Admins"),
                  ("5a1d0000-0000-4000-8000-000000000042", "GDAP Privileged Role Admins"))
# Partner Center's "Admin agent" role is membership of the partner tenant's AdminAgents group (Partner Center,
# "Assign roles and permissions to users": the roles are security groups of the partner tenant).
ADMIN_AGENTS_GROUP = ("5a1d0000-0000-4000-8000-000000000043", "AdminAgents")
# Microsoft Graph's appId and the ids of its application permissions the rotator asks for (the permissions
# reference, learn.microsoft.com/graph/permissions-reference): consent grants the roles an app's
# requiredResourceAccess lists.
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
GRAPH_APP_ROLES = {
    "18a4783c-866b-4cc7-a460-3d5e5662c884": "Application.ReadWrite.OwnedBy",
    "1bfefb4e-e0b5-418b-a88f-73c46d2cc8e9": "Application.ReadWrite.All",
    "9a5d68dd-52b0-4cc2-bd40-abcf44ac3a30": "Application.Read.All",
    # The sign-in log's two permissions (signin-list.md: "AuditLog.Read.All and Directory.Read.All").
    "b0afded3-3588-46d8-8b3d-9842eff778da": "AuditLog.Read.All",
    "7ab1d382-f21e-4acd-a863-ba3e13f7da61": "Directory.Read.All",
}
OWNED_BY_ROLE_ID = "18a4783c-866b-4cc7-a460-3d5e5662c884"
AUDIT_LOG_ROLE_ID = "b0afded3-3588-46d8-8b3d-9842eff778da"
DIRECTORY_READ_ROLE_ID = "7ab1d382-f21e-4acd-a863-ba3e13f7da61"
# The consent redirect URI registered on the sandbox's MSP app by default: `func start`'s (and
# `python -m shared serve`'s) default address, as infra/scripts/create-msp-app.sh registers the app's own.
DEFAULT_CONSENT_REDIRECT_URI = "http://localhost:7071/api/consent"

TOKEN_LIFETIME = dt.timedelta(hours=1)
# "Authorization codes are short lived. Typically, they expire after about 10 minutes." (v2-oauth2-auth-code-flow.md)
CODE_LIFETIME = dt.timedelta(minutes=10)
# The tenant default app management policy (policies/defaultAppManagementPolicy) has this fixed id in Graph.
DEFAULT_POLICY_ID = "00000000-0000-0000-0000-000000000000"
_DURATION = re.compile(
    r"^P(?:(?P<w>\d+)W)?(?:(?P<d>\d+)D)?(?:T(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$"
)
_SECRET_ALPHABET = string.ascii_letters + string.digits + "~_.-"
# Entra's sign-in logs (sandbox/README.md, "Sign-in logs"): a record appears minutes after the sign-in ("Sign-ins:
# 2 mins P95, 5 mins P99", reference-reports-latencies.md) and is kept 30 days with Entra ID P1/P2 (7 days free,
# reference-reports-data-retention.md; the free tier cannot read them over Graph at all).
DEFAULT_SIGN_IN_DELAY = dt.timedelta(minutes=2)
SIGN_IN_RETENTION = dt.timedelta(days=30)
ENTRA_LICENSES = ("free", "P1", "P2")
# Where the sign-ins of Proofpoint's stand-in come from by default: an address of TEST-NET-2 (RFC 5737), public-looking
# and never the loopback address the rotator's own requests come from. Not a claim about Proofpoint's real ranges.
DEFAULT_PROOFPOINT_ADDRESS = "198.51.100.25"
# Resources a client-credentials token can be for, as the sign-in log names them (resourceId = the resource's appId).
RESOURCE_NAMES = {
    GRAPH_AUDIENCE: ("00000003-0000-0000-c000-000000000000", "Microsoft Graph"),
    VAULT_AUDIENCE: ("cfa8b339-82a2-471a-a3c9-0fc0be7a4093", "Azure Key Vault"),
    EXCHANGE_AUDIENCE: ("", "api://AzureADTokenExchange"),  # not a resource application: no id to name
}


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
    # A delegated (user) token: its `scp` scopes, and the issuer of the user's home tenant when the user signs in
    # to another tenant (a GDAP foreign principal: `idp`).
    scopes: tuple[str, ...] = ()
    delegated: bool = False
    identity_provider: str | None = None


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


@dataclass(frozen=True)
class AppRole:
    """One of an application's appRoles."""

    id: str
    value: str
    allowed_member_types: tuple[str, ...] = ("User", "Application")

    def to_graph(self) -> dict[str, Any]:
        return {"id": self.id, "value": self.value, "displayName": self.value, "description": self.value,
                "allowedMemberTypes": list(self.allowed_member_types), "isEnabled": True}


@dataclass(frozen=True)
class AppRoleAssignment:
    """An appRoleAssignment on a resource's service principal: a user or service principal holds one app role."""

    principal_id: str
    principal_type: str  # User | ServicePrincipal
    app_role_id: str


@dataclass
class User:
    id: str
    user_principal_name: str
    display_name: str


@dataclass(frozen=True)
class SignInSource:
    """Where a sign-in comes from and what it is for, as the sign-in log records it."""

    ip_address: str
    resource_id: str = RESOURCE_NAMES[GRAPH_AUDIENCE][0]
    resource_display_name: str = RESOURCE_NAMES[GRAPH_AUDIENCE][1]
    # beta signIn.clientCredentialType: clientSecret | federatedIdentityCredential
    credential_type: str = "clientSecret"
    # The token request's `client-request-id` (a GUID), which the log keeps as correlationId ("The identifier the
    # client sends when sign-in is initiated", signin.md); None: Entra makes one up.
    correlation_id: str | None = None


@dataclass(frozen=True)
class SignInRecord:
    """One service-principal sign-in as Entra's sign-in log keeps it (beta signIn, event type servicePrincipal)."""

    id: str
    created: dt.datetime
    tenant_id: str  # the tenant the service principal signed in to (resourceTenantId): the log it lands in
    app_id: str
    app_display_name: str
    service_principal_id: str
    key_id: str | None  # servicePrincipalCredentialKeyId: the credential used (None when no credential matched)
    source: SignInSource
    error_code: int = 0
    failure_reason: str | None = None

    def to_graph(self) -> dict[str, Any]:
        """The record in the beta signIn resource's shape (signin.md), service-principal properties filled."""
        ok = self.error_code == 0
        return {
            "id": self.id,
            "createdDateTime": _fraction(self.created),
            "appId": self.app_id,
            "appDisplayName": self.app_display_name,
            "servicePrincipalId": self.service_principal_id,
            "servicePrincipalName": self.app_display_name,
            "servicePrincipalCredentialKeyId": self.key_id,
            "servicePrincipalCredentialThumbprint": "",
            "clientCredentialType": self.source.credential_type,
            "ipAddress": self.source.ip_address,
            "resourceDisplayName": self.source.resource_display_name,
            "resourceId": self.source.resource_id,
            "resourceTenantId": self.tenant_id,
            # "Not applicable in Managed Identity or service principal sign ins" (signin.md, homeTenantId).
            "homeTenantId": None,
            "federatedCredentialId": None,
            "userId": "",
            "userDisplayName": None,
            "userPrincipalName": None,
            "isInteractive": False,
            "signInEventTypes": ["servicePrincipal"],
            "authenticationProtocol": "none",
            "conditionalAccessStatus": "notApplied",
            "correlationId": self.source.correlation_id or str(uuid.uuid5(uuid.NAMESPACE_URL, self.id)),
            "uniqueTokenIdentifier": base64.urlsafe_b64encode(uuid.UUID(self.id).bytes).rstrip(b"=").decode(),
            "status": {
                "errorCode": self.error_code,
                "failureReason": None if ok else self.failure_reason,
                "additionalDetails": None,
            },
            "location": {"city": None, "state": None, "countryOrRegion": None, "geoCoordinates": None},
        }

    def dump(self, delay: dt.timedelta) -> dict[str, Any]:
        return {"id": self.id, "createdDateTime": _fraction(self.created), "visibleAt": _fraction(self.created + delay),
                "appId": self.app_id, "keyId": self.key_id, "ipAddress": self.source.ip_address,
                "resourceDisplayName": self.source.resource_display_name, "errorCode": self.error_code,
                "clientCredentialType": self.source.credential_type,
                "correlationId": self.to_graph()["correlationId"]}


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
    app_roles: list[AppRole] = field(default_factory=list)  # appRoles
    scopes: dict[str, str] = field(default_factory=dict)  # api.oauth2PermissionScopes: value -> id
    access_token_version: int | None = None  # api.requestedAccessTokenVersion (None = 1)
    id_token_issuance: bool = False  # web.implicitGrantSettings.enableIdTokenIssuance (the hybrid flow needs it)
    # isFallbackPublicClient: "Allow public client flows" (the device code flow redeems without a client credential)
    is_fallback_public_client: bool = False

    def role(self, value: str) -> AppRole | None:
        return next((r for r in self.app_roles if r.value == value), None)

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
    # As a resource: whether callers need an app role assignment, and the assignments to it (appRoleAssignedTo).
    app_role_assignment_required: bool = False
    assigned_to: list[AppRoleAssignment] = field(default_factory=list)
    account_enabled: bool = True  # Graph's servicePrincipal.accountEnabled: false refuses its sign-ins (7000112)
    created_at: dt.datetime | None = None  # set when made at run time (Graph, Partner Center): see sp_delay


@dataclass
class Group:
    """A security group of a tenant (the partner's groups that GDAP access assignments name)."""

    id: str
    display_name: str
    members: list[str] = field(default_factory=list)  # user object ids


@dataclass
class Tenant:
    id: str
    name: str
    default_policy: AppManagementPolicy | None = None  # policies/defaultAppManagementPolicy
    consent_decision: str = "accept"  # what its admin answers on the admin-consent page: accept | decline
    applications: dict[str, Application] = field(default_factory=dict)  # by object id
    service_principals: dict[str, ServicePrincipal] = field(default_factory=dict)  # by appId
    users: dict[str, User] = field(default_factory=dict)  # by object id
    # Conditional Access policies for workload identities, as seeded (Graph's conditionalAccessPolicy shape).
    conditional_access: list[dict[str, Any]] = field(default_factory=list)
    # Its Microsoft Entra ID edition: reading the sign-in logs over Graph needs P1 or P2.
    entra_license: str = "free"
    sign_ins: list[SignInRecord] = field(default_factory=list)  # its sign-in log, in the order the sign-ins happened
    groups: dict[str, Group] = field(default_factory=dict)  # by object id
    directory_roles: dict[str, set[str]] = field(default_factory=dict)  # user object id -> role template ids
    domains: list[str] = field(default_factory=list)  # verified domains besides the initial onmicrosoft.com one
    # oauth2PermissionGrants for all principals: client appId -> the Graph delegated scopes admin-consented
    delegated_grants: dict[str, set[str]] = field(default_factory=dict)
    # oauth2PermissionGrants for all principals on Partner Center: client appId -> its scopes (user_impersonation)
    partner_center_grants: dict[str, set[str]] = field(default_factory=dict)

    def initial_domain(self) -> str:
        return re.sub(r"[^a-z0-9]", "", self.name.lower()) + ".onmicrosoft.com"

    def user_by_name(self, upn: str) -> User | None:
        return next((u for u in self.users.values() if u.user_principal_name.lower() == upn.lower()), None)

    def blocked_by_conditional_access(self, app_id: str) -> bool:
        """An enabled policy whose grant control is `block` names this app's service principal (by appId, or all
        of them with ServicePrincipalsInMyTenant)."""
        for policy in self.conditional_access:
            if policy.get("state", "enabled") != "enabled":
                continue  # disabled, or report-only (enabledForReportingButNotEnforced): nothing is refused
            clients = (policy.get("conditions") or {}).get("clientApplications") or {}
            included = {str(i).lower() for i in clients.get("includeServicePrincipals", [])}
            excluded = {str(i).lower() for i in clients.get("excludeServicePrincipals", [])}
            controls = (policy.get("grantControls") or {}).get("builtInControls", [])
            if "block" in controls and app_id.lower() not in excluded \
                    and (app_id.lower() in included or "serviceprincipalsinmytenant" in included):
                return True
        return False


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
            # What infra/scripts/create-msp-app.sh registers: Graph's Application.ReadWrite.OwnedBy and the sign-in
            # log's AuditLog.Read.All and Directory.Read.All (consent grants all three), the redirect URI.
            required_resource_access=[
                {"resourceAppId": GRAPH_APP_ID, "resourceAccess": [
                    {"id": OWNED_BY_ROLE_ID, "type": "Role"}, {"id": AUDIT_LOG_ROLE_ID, "type": "Role"},
                    {"id": DIRECTORY_READ_ROLE_ID, "type": "Role"}]}
            ],
            redirect_uris=[DEFAULT_CONSENT_REDIRECT_URI, *self._world.run_time_redirect_uris.get(MSP_APP_ID, [])],
            # The rotator's API (App Service Authentication's client id): app roles for users and applications, one
            # delegated scope, v2.0 access tokens, and ID tokens from the authorize endpoint (the hybrid flow).
            identifier_uris=[f"api://{MSP_APP_ID}"],
            app_roles=[AppRole(ROLE_READ_ID, ROLE_READ), AppRole(ROLE_OPERATE_ID, ROLE_OPERATE)],
            scopes={API_SCOPE: SCOPE_ID},
            access_token_version=2,
            id_token_issuance=True,
            is_fallback_public_client=True,  # create-msp-app.sh allows public client flows (the CLI's device code)
        )
        msp.applications[app.id] = app
        api = ServicePrincipal(MSP_APP_SP_ID, MSP_APP_ID, MSP_APP_NAME, msp.id, app_role_assignment_required=True)
        msp.service_principals[MSP_APP_ID] = api
        msp.service_principals[MI_CLIENT_ID] = ServicePrincipal(
            MI_PRINCIPAL_ID, MI_CLIENT_ID, MI_NAME, None, kind="ManagedIdentity", roles=[KEY_VAULT_ROLE]
        )
        role_ids = {ROLE_READ: ROLE_READ_ID, ROLE_OPERATE: ROLE_OPERATE_ID}
        for user_id, upn, name, role in MSP_USERS:
            msp.users[user_id] = User(user_id, upn, name)
            if role is not None:
                api.assigned_to.append(AppRoleAssignment(user_id, "User", role_ids[role]))
        msp.users[PARTNER_ADMIN_ID] = User(PARTNER_ADMIN_ID, PARTNER_ADMIN_UPN, PARTNER_ADMIN_NAME)
        # create-msp-app.sh's one-time admin consent in the partner tenant to Partner Center's user_impersonation
        # (the partner admin's refresh for Partner Center needs it: AADSTS65001 otherwise).
        msp.partner_center_grants[MSP_APP_ID] = {"user_impersonation"}
        # and to the Graph scopes of the partner admin's sign-in (DelegatedAdminRelationship.Read.All needs it:
        # AADSTS65001 at sign-in otherwise), the same list as the script's SIGN_IN_GRAPH_SCOPES.
        msp.delegated_grants[MSP_APP_ID] = set(PARTNER_SIGN_IN_GRAPH_SCOPES)
        api.assigned_to.append(AppRoleAssignment(PARTNER_ADMIN_ID, "User", role_ids[ROLE_OPERATE]))
        for group_id, group_name in (*PARTNER_GROUPS, ADMIN_AGENTS_GROUP):
            msp.groups[group_id] = Group(group_id, group_name, [PARTNER_ADMIN_ID])
        for app_id, object_id, sp_id, name, role in AUTOMATION_APPS:
            automation = Application(
                id=object_id, app_id=app_id, display_name=name, sign_in_audience="AzureADMyOrg", home_tenant_id=msp.id,
                created=now - dt.timedelta(days=30),
                passwords=[PasswordCredential(
                    key_id=str(uuid.uuid5(uuid.NAMESPACE_URL, app_id)), display_name="automation",
                    secret_text=self._world.automation_secrets[app_id], start=now - dt.timedelta(days=1),
                    end=now + dt.timedelta(days=365), created_at=now - dt.timedelta(days=1),
                )],
            )
            msp.applications[automation.id] = automation
            msp.service_principals[app_id] = ServicePrincipal(sp_id, app_id, name, msp.id)
            api.assigned_to.append(AppRoleAssignment(sp_id, "ServicePrincipal", role_ids[role]))

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
            if "entraIdLicense" in tenant_doc:
                if tenant_doc["entraIdLicense"] not in ENTRA_LICENSES:
                    raise ValueError(f"entraIdLicense must be one of {ENTRA_LICENSES}")
                tenant.entra_license = tenant_doc["entraIdLicense"]
            for sign_in in tenant_doc.get("signIns", []):
                tenant.sign_ins.append(self._seed_sign_in(tenant, sign_in))
            if "conditionalAccessPolicies" in tenant_doc:
                policies = tenant_doc["conditionalAccessPolicies"]
                if not isinstance(policies, list) or not all(isinstance(p, dict) for p in policies):
                    raise TypeError("conditionalAccessPolicies must be a list of objects")
                tenant.conditional_access = list(policies)  # replaces the tenant's policies
            for grant in tenant_doc.get("grants", []):
                sp = self.ensure_service_principal(tenant, self.resolve_app_id(grant["appId"]))
                for role in grant.get("roles", []):
                    if role not in sp.roles:
                        sp.roles.append(role)
            for user_doc in tenant_doc.get("users", []):
                user = User(user_doc.get("id") or str(uuid.uuid4()), user_doc["userPrincipalName"],
                            user_doc.get("displayName", user_doc["userPrincipalName"]))
                tenant.users[user.id] = user
                if "directoryRoles" in user_doc:  # Entra built-in roles, by template id or display name
                    tenant.directory_roles[user.id] = {role_template_id(r) for r in user_doc["directoryRoles"]}
            for client, scopes in (tenant_doc.get("delegatedGrants") or {}).items():
                # oauth2PermissionGrants (consentType AllPrincipals) of a client on Microsoft Graph; [] withdraws
                # the client's grant (its scopes revoked, as deleting the oauth2PermissionGrant does)
                if not scopes:
                    tenant.delegated_grants.pop(self.resolve_app_id(client), None)
                    continue
                self.ensure_service_principal(tenant, self.resolve_app_id(client))
                tenant.delegated_grants.setdefault(self.resolve_app_id(client), set()).update(scopes)
            for client, scopes in (tenant_doc.get("partnerCenterGrants") or {}).items():
                # the client's grant on Partner Center for all principals, replaced ([] withdraws it)
                tenant.partner_center_grants[self.resolve_app_id(client)] = set(scopes)
            for domain in tenant_doc.get("domains", []):
                if domain.lower() not in (d.lower() for d in tenant.domains):
                    tenant.domains.append(domain)
            for group_doc in tenant_doc.get("groups", []):
                group = tenant.groups.setdefault(group_doc["id"], Group(group_doc["id"], group_doc["displayName"]))
                for upn in group_doc.get("members", []):
                    member = tenant.user_by_name(upn)
                    if member is None:
                        raise ValueError(f"group member {upn!r} is not a user of tenant {tenant.id}")
                    if member.id not in group.members:
                        group.members.append(member.id)
            for assignment in tenant_doc.get("appRoleAssignments", []):
                self.assign_app_role(tenant, assignment["principal"], self.resolve_app_id(assignment["resource"]),
                                     assignment["appRole"])
            for sp_doc in tenant_doc.get("servicePrincipals", []):
                sp = self.ensure_service_principal(tenant, self.resolve_app_id(sp_doc["appId"]))
                if "accountEnabled" in sp_doc:
                    if not isinstance(sp_doc["accountEnabled"], bool):
                        raise TypeError("accountEnabled must be true or false")
                    sp.account_enabled = sp_doc["accountEnabled"]
            # Owners may name apps granted later in the same document, so resolve them last.
            for app_doc in tenant_doc.get("applications", []):
                app = next(a for a in tenant.applications.values() if a.app_id == self.resolve_app_id(app_doc["appId"]))
                for owner in app_doc.get("owners", []):
                    sp = self.ensure_service_principal(tenant, self.resolve_app_id(owner))
                    if sp.id not in app.owners:
                        app.owners.append(sp.id)

    def _seed_sign_in(self, tenant: Tenant, doc: dict[str, Any]) -> SignInRecord:
        """A past sign-in of an app of the tenant (or of one consented to there), e.g. an old key's last use."""
        app_id = self.resolve_app_id(doc["appId"])
        sp = tenant.service_principals.get(app_id)
        if sp is None:
            raise ValueError(f"signIns: app {app_id} has no service principal in tenant {tenant.id}")
        now = self._world.now()
        error = doc.get("errorCode", 0)
        if not isinstance(error, int) or isinstance(error, bool):
            raise TypeError("signIns[].errorCode must be an integer (0 = success)")
        source = SignInSource(str(doc.get("ipAddress") or DEFAULT_PROOFPOINT_ADDRESS))
        if "resourceDisplayName" in doc:
            source = SignInSource(source.ip_address, str(doc.get("resourceId") or ""), str(doc["resourceDisplayName"]))
        return SignInRecord(
            id=str(uuid.uuid4()), created=seeddates.resolve(doc.get("createdDateTime") or "now", now),
            tenant_id=tenant.id, app_id=app_id, app_display_name=sp.display_name, service_principal_id=sp.id,
            key_id=str(doc["keyId"]).lower() if doc.get("keyId") else None, source=source, error_code=error,
            failure_reason=doc.get("failureReason") or (None if error == 0 else f"AADSTS{error}"),
        )

    def assign_app_role(self, tenant: Tenant, principal: str, resource_app_id: str, role_value: str) -> None:
        """Assign an app role of a resource to a user (by userPrincipalName) or an app's service principal (by
        appId) in the tenant, as `POST /servicePrincipals/{resource}/appRoleAssignedTo` does."""
        resource_app = self.find_application(resource_app_id)
        resource = tenant.service_principals.get(resource_app_id)
        role = resource_app.role(role_value) if resource_app else None
        if resource is None or role is None:
            raise ValueError(f"no app role {role_value!r} of {resource_app_id} in tenant {tenant.id}")
        user = tenant.user_by_name(principal)
        if user is not None:
            assignment = AppRoleAssignment(user.id, "User", role.id)
        else:
            if "Application" not in role.allowed_member_types:
                raise ValueError(f"app role {role_value!r} is not assignable to applications")
            sp = self.ensure_service_principal(tenant, self.resolve_app_id(principal))
            assignment = AppRoleAssignment(sp.id, "ServicePrincipal", role.id)
        if assignment not in resource.assigned_to:
            resource.assigned_to.append(assignment)

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
            for uri in self._world.run_time_redirect_uris.get(app.app_id, []):
                if uri not in app.redirect_uris:
                    app.redirect_uris.append(uri)
            grants = doc["web"].get("implicitGrantSettings", {})
            app.id_token_issuance = bool(grants.get("enableIdTokenIssuance", app.id_token_issuance))
        if "appRoles" in doc:
            app.app_roles = [AppRole(r.get("id") or str(uuid.uuid4()), r["value"],
                                     tuple(r.get("allowedMemberTypes", ["User", "Application"])))
                             for r in doc["appRoles"]]
        api_doc = doc.get("api", {})
        if "requestedAccessTokenVersion" in api_doc:
            app.access_token_version = api_doc["requestedAccessTokenVersion"]
        if "oauth2PermissionScopes" in api_doc:
            app.scopes = {s["value"]: s.get("id") or str(uuid.uuid4()) for s in api_doc["oauth2PermissionScopes"]}
        if doc.get("createdDateTime"):
            app.created = seeddates.resolve(doc["createdDateTime"], now)
        if "appManagementPolicy" in doc:
            app.policy = AppManagementPolicy.from_seed(doc["appManagementPolicy"], str(uuid.uuid4()))
        # Entra creates the service principal in the home tenant along with the registration.
        sp = self.ensure_service_principal(tenant, app.app_id)
        sp.display_name = app.display_name
        if "appRoleAssignmentRequired" in doc:
            sp.app_role_assignment_required = bool(doc["appRoleAssignmentRequired"])
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
                            "web": {"redirectUris": list(app.redirect_uris), "implicitGrantSettings": {
                                "enableIdTokenIssuance": app.id_token_issuance}},
                            "identifierUris": list(app.identifier_uris),
                            "appRoles": [r.to_graph() for r in app.app_roles],
                            "api": {"requestedAccessTokenVersion": app.access_token_version,
                                    "oauth2PermissionScopes": [{"id": i, "value": v} for v, i in app.scopes.items()]},
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
                        {"id": sp.id, "appId": sp.app_id, "displayName": sp.display_name, "roles": list(sp.roles),
                         "appRoleAssignmentRequired": sp.app_role_assignment_required,
                         "appRoleAssignedTo": [{"principalId": a.principal_id, "principalType": a.principal_type,
                                                "appRoleId": a.app_role_id} for a in sp.assigned_to],
                         "accountEnabled": sp.account_enabled}
                        for sp in tenant.service_principals.values()
                    ],
                    "users": [{"id": u.id, "userPrincipalName": u.user_principal_name, "displayName": u.display_name,
                               "directoryRoles": sorted(tenant.directory_roles.get(u.id, ()))}
                              for u in tenant.users.values()],
                    "groups": [{"id": g.id, "displayName": g.display_name, "members": list(g.members)}
                               for g in tenant.groups.values()],
                    "domains": [tenant.initial_domain(), *tenant.domains],
                    "delegatedGrants": {k: sorted(v) for k, v in tenant.delegated_grants.items()},
                    "partnerCenterGrants": {k: sorted(v) for k, v in tenant.partner_center_grants.items() if v},
                    "conditionalAccessPolicies": list(tenant.conditional_access),
                    "entraIdLicense": tenant.entra_license,
                    "signIns": [r.dump(self._world.sign_in_delay) for r in tenant.sign_ins],
                }
            )
        return out


_DEFAULT_ADDRESSES: dict[str, str | None] = {"proofpoint": DEFAULT_PROOFPOINT_ADDRESS, "token_endpoint": None}


def _fraction(moment: dt.datetime) -> str:
    """A sign-in time as Graph writes it, with fractional seconds ("2020-03-13T19:15:41.6195833Z", signin-list.md)."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _matching_key(app: Application, secret: str) -> str | None:
    """The key id of the app's credential that is this secret (a refused one too: expired, not yet valid)."""
    return next((c.key_id for c in app.passwords if secrets.compare_digest(c.secret_text, secret)), None)


def _seconds(value: object) -> dt.timedelta:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"a delay must be a non-negative number of seconds, not {value!r}")
    return dt.timedelta(seconds=float(value))


def _b64uint(value: int) -> str:
    """A JWK integer (RFC 7518 section 6.3.1): big-endian bytes, base64url without padding."""
    return base64.urlsafe_b64encode(value.to_bytes((value.bit_length() + 7) // 8, "big")).rstrip(b"=").decode()


def _thumbprint(key: rsa.RSAPublicKey) -> str:
    """A key id shaped like Entra's (a base64url SHA-1 thumbprint, 27 characters)."""
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.urlsafe_b64encode(hashlib.sha1(der).digest()).rstrip(b"=").decode()  # noqa: S324 (an id, not security)


@dataclass
class AuthCode:
    """An authorization code Entra issued after a sign-in, redeemable once within CODE_LIFETIME."""

    client_id: str
    redirect_uri: str
    tenant_id: str
    user_id: str
    scopes: list[str]
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str
    issued_at: dt.datetime
    redeemed: bool = False


# "refresh tokens ... have a default lifetime of 90 days" (refresh-tokens.md, "Token lifetime")
REFRESH_LIFETIME = dt.timedelta(days=90)
# The device authorization response's defaults (v2-oauth2-device-code.md "Device authorization response"): the code
# lives 15 minutes and the client polls every 5 seconds.
DEVICE_CODE_LIFETIME = dt.timedelta(minutes=15)
DEVICE_CODE_INTERVAL = 5


@dataclass
class RefreshGrant:
    """What a refresh token stands for: a user's sign-in to a client, redeemable in other tenants and resources."""

    client_id: str
    user_id: str
    home_tenant_id: str
    public: bool  # issued to a public client (device code): redeemed without a client credential
    issued_at: dt.datetime
    scopes: tuple[str, ...] = ()  # what the user consented to at sign-in (`.default` later stands for these)


@dataclass
class DeviceCode:
    """A pending device authorization (RFC 8628) and what the user answered on the verification page."""

    user_code: str
    client_id: str
    tenant_id: str
    scopes: list[str]
    issued_at: dt.datetime
    interval: int
    last_poll: dt.datetime | None = None
    decision: str = "pending"  # pending | approved | declined | redeemed
    user_tenant_id: str | None = None
    user_id: str | None = None


# Entra built-in roles by display name (permissions-reference.md): seed documents may name a role either way.
ROLE_TEMPLATE_IDS = {
    "Global Administrator": "62e90394-69f5-4237-9190-012177145e10",
    "Privileged Role Administrator": "e8611ab8-c189-46e8-94e1-60213ab1f814",
    "Application Administrator": "9b895d92-2cd3-44c7-9d02-a6ac2d5ea5c3",
    "Cloud Application Administrator": "158c047a-c907-4556-b7ef-446551a6b5f7",
    "Directory Readers": "88d8e3e3-8f55-4a1e-953a-9b9898b8876b",
    "Helpdesk Administrator": "729827e3-9c14-49f7-bb1b-9608f156bbb8",
    "User Administrator": "fe930be7-5e62-47db-91af-98c3a49a38b1",
}


def role_template_id(name_or_id: str) -> str:
    """A role's template id from its display name or id (ValueError for an unknown name that is not a GUID)."""
    if name_or_id in ROLE_TEMPLATE_IDS:
        return ROLE_TEMPLATE_IDS[name_or_id]
    try:
        return str(uuid.UUID(name_or_id))
    except ValueError as exc:
        raise ValueError(f"unknown Entra role {name_or_id!r}: a template id or one of {sorted(ROLE_TEMPLATE_IDS)}") \
            from exc


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
        self.sign_in_delay = DEFAULT_SIGN_IN_DELAY
        # The zone the credential activity report writes its days in ("Z", or "-8:00" as the docs' examples).
        self.report_zone = "Z"
        # Where sign-ins come from: "proofpoint" (the stand-in's syncs and Save test), "token_endpoint" (any HTTP
        # client of the token endpoint; None = the request's peer address).
        self.sign_in_addresses: dict[str, str | None] = dict(_DEFAULT_ADDRESSES)
        self.urls: dict[str, str] = {"entra": "https://127.0.0.1"}
        self.identity_header = secrets.token_urlsafe(24)
        self.msp_tenant_id = MSP_TENANT_ID
        # One RSA key per process, as Entra signs with RS256 and publishes the public half at jwks_uri; never written.
        self._signing_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.key_id = _thumbprint(self._signing_key.public_key())
        # The automation principals' client secrets: made at start, kept across reset, given out by GET /msp/api.
        self.automation_secrets = {app_id: new_secret_text() for app_id, *_ in AUTOMATION_APPS}
        # Redirect URIs registered at run time (POST /applications/{appId}/redirectUris), kept across reset: the
        # local host registers its dynamic port once.
        self.run_time_redirect_uris: dict[str, list[str]] = {}
        self.auth_codes: dict[str, AuthCode] = {}
        self.sign_ins: dict[str, dict[str, str]] = {}  # pending authorize requests, by the sign-in page's ctx
        self.refresh_tokens: dict[str, RefreshGrant] = {}
        self.device_codes: dict[str, DeviceCode] = {}  # by device_code
        self.device_code_interval = DEVICE_CODE_INTERVAL
        # How long a service principal made at run time (Graph, Partner Center) stays unknown to the token endpoint.
        self.sp_delay = dt.timedelta(0)
        self.directory = Directory(self)
        from sandbox.gdap import GdapState  # the partner relationships (GDAP, Partner Center consents)

        self.gdap = GdapState(self)
        self.keyvault: ServiceState = _EmptyState()
        self.proofpoint: ServiceState = _EmptyState()
        self.portal: ServiceState = _EmptyState()
        self.webhooks: ServiceState = _EmptyState()
        self.psa_connectwise: ServiceState = _EmptyState()  # sandbox/psa_connectwise.py (ConnectWise Manage)
        self.inventory: ServiceState = _EmptyState()  # sandbox/inventory.py: delta queries, generated populations
        self.psa_autotask: ServiceState = _EmptyState()  # sandbox/psa_autotask.py: the Autotask PSA stand-in
        self.psa_halopsa: ServiceState = _EmptyState()  # sandbox/psa_halopsa.py: the HaloPSA stand-in

    def now(self) -> dt.datetime:
        """The sandbox clock: real UTC now plus the offset set through the control API."""
        return dt.datetime.now(dt.UTC) + self.clock_offset

    def issuer(self, tenant_id: str) -> str:
        return f"{self.urls['entra']}/{tenant_id}/v2.0"

    def _states(self) -> dict[str, ServiceState]:
        return {"keyvault": self.keyvault, "proofpoint": self.proofpoint, "portal": self.portal,
                "webhooks": self.webhooks, "gdap": self.gdap, "inventory": self.inventory,
                "psa_autotask": self.psa_autotask, "psa_halopsa": self.psa_halopsa,
                "psa_connectwise": self.psa_connectwise}

    def reset(self) -> None:
        """Empty everything; the MSP tenant and its identities are re-created."""
        self.clock_offset = dt.timedelta(0)
        self.propagation_delay = dt.timedelta(0)
        self.propagation_delays = {}
        self.random_propagation = None
        self.sign_in_delay = DEFAULT_SIGN_IN_DELAY
        self.report_zone = "Z"
        self.sign_in_addresses = dict(_DEFAULT_ADDRESSES)
        self.auth_codes = {}
        self.sign_ins = {}
        self.refresh_tokens = {}
        self.device_codes = {}
        self.device_code_interval = DEVICE_CODE_INTERVAL
        self.sp_delay = dt.timedelta(0)
        self.directory.reset()
        for state in self._states().values():
            state.reset()

    def seed(self, doc: dict[str, Any]) -> None:
        """Add the contents of a seed document (see sandbox/README.md)."""
        self.directory.seed(doc.get("tenants", []))
        for name, state in self._states().items():
            if name in doc:
                state.seed(doc[name])

    def catch_up(self) -> None:
        """Run what the sandbox clock says has happened by now elsewhere (Proofpoint's scheduled syncs, which sign in
        and so land in the sign-in log) before anything reads the directory's state."""
        run_due_syncs = getattr(self.proofpoint, "run_due_syncs", None)
        if run_due_syncs is not None:
            run_due_syncs()

    def dump(self) -> dict[str, Any]:
        self.catch_up()
        state: dict[str, Any] = {
            "clockOffsetSeconds": self.clock_offset.total_seconds(),
            "propagationDelaySeconds": self.propagation_delay.total_seconds(),
            "propagationDelays": {k: v.total_seconds() for k, v in self.propagation_delays.items()},
            "signInDelaySeconds": self.sign_in_delay.total_seconds(),
            "signInAddresses": dict(self.sign_in_addresses),
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
        if "service_principal_delay_seconds" in doc:
            self.sp_delay = _seconds(doc["service_principal_delay_seconds"])
        if "device_code_interval_seconds" in doc:
            self.device_code_interval = int(_seconds(doc["device_code_interval_seconds"]).total_seconds())
        if "random_propagation" in doc:
            spec = doc["random_propagation"]
            self.random_propagation = None if spec is None else RandomPropagation(
                int(spec["seed"]), _seconds(spec.get("min_seconds", 0)), _seconds(spec["max_seconds"])
            )

    def configure_sign_ins(self, doc: dict[str, Any]) -> None:
        """Apply the sign-in log keys of a POST /settings document (ValueError/TypeError when malformed)."""
        if "sign_in_delay_seconds" in doc:
            self.sign_in_delay = _seconds(doc["sign_in_delay_seconds"])
        if "report_zone" in doc:
            zone = doc["report_zone"]
            if not isinstance(zone, str) or not re.fullmatch(r"Z|[+-](?:1[0-4]|0?\d):[0-5]\d", zone):
                raise ValueError("report_zone must be Z or an offset such as -8:00 or +05:30")
            self.report_zone = zone
        addresses = doc.get("sign_in_addresses")
        if addresses is not None:
            if not isinstance(addresses, dict):
                raise TypeError("sign_in_addresses must map proofpoint / token_endpoint to an IP address")
            for name, value in addresses.items():
                if name not in _DEFAULT_ADDRESSES:
                    raise ValueError(f"sign_in_addresses: unknown source {name!r} (proofpoint, token_endpoint)")
                if value is not None:
                    ipaddress.ip_address(value)  # ValueError when not an address
                elif name == "proofpoint":
                    raise ValueError("sign_in_addresses.proofpoint must be an address")
                self.sign_in_addresses[name] = value

    def sign_in_settings(self) -> dict[str, Any]:
        return {"sign_in_delay_seconds": self.sign_in_delay.total_seconds(), "report_zone": self.report_zone,
                "sign_in_addresses": dict(self.sign_in_addresses)}

    def visible_sign_ins(self, tenant: Tenant) -> list[SignInRecord]:
        """The tenant's sign-in log as a reader sees it now: past the reporting delay, within retention."""
        now = self.now()
        return [r for r in tenant.sign_ins
                if r.created + self.sign_in_delay <= now and r.created >= now - SIGN_IN_RETENTION]

    def proofpoint_source(self) -> SignInSource:
        """Proofpoint's sync reads users and groups through Microsoft Graph."""
        return SignInSource(self.sign_in_addresses["proofpoint"] or DEFAULT_PROOFPOINT_ADDRESS)

    def _record_sign_in(self, tenant: Tenant, app: Application, sp: ServicePrincipal, key_id: str | None,
                        source: SignInSource, at: dt.datetime, error: EntraError | None) -> None:
        tenant.sign_ins.append(SignInRecord(
            id=str(uuid.uuid4()), created=at, tenant_id=tenant.id, app_id=sp.app_id,
            app_display_name=app.display_name, service_principal_id=sp.id, key_id=key_id, source=source,
            error_code=0 if error is None else error.code,
            failure_reason=None if error is None else error.description,
        ))

    def propagation_settings(self) -> dict[str, Any]:
        rnd = self.random_propagation
        return {
            "service_principal_delay_seconds": self.sp_delay.total_seconds(),
            "device_code_interval_seconds": self.device_code_interval,
            "propagation_delay_seconds": self.propagation_delay.total_seconds(),
            "propagation_delays": {k: v.total_seconds() for k, v in self.propagation_delays.items()},
            "random_propagation": None if rnd is None else {
                "seed": rnd.seed, "min_seconds": rnd.low.total_seconds(), "max_seconds": rnd.high.total_seconds()
            },
        }

    # Tokens

    def sign(self, claims: dict[str, Any]) -> str:
        """A JWT signed RS256 with the key published at jwks_uri (its `kid` in the header, as Entra's)."""
        return jwt.encode(claims, self._signing_key, algorithm="RS256", headers={"kid": self.key_id, "typ": "JWT"})

    def jwks(self, tenant_id: str) -> dict[str, Any]:
        """The JSON Web Key Set Entra serves at `/{tenant}/discovery/v2.0/keys`."""
        numbers = self._signing_key.public_key().public_numbers()
        return {"keys": [{
            "kty": "RSA", "use": "sig", "kid": self.key_id, "x5t": self.key_id,
            "n": _b64uint(numbers.n), "e": _b64uint(numbers.e),
            "issuer": f"{self.urls['entra']}/{tenant_id}/v2.0",
        }]}

    def mint_v2_token(self, claims: dict[str, Any], lifetime: dt.timedelta = TOKEN_LIFETIME) -> tuple[str, dt.datetime]:
        """A v2.0 token (access or ID) with the common claims (iat, nbf, exp, ver, uti) added; and its expiry."""
        now = self.now()
        expires = now + lifetime
        body = {
            "iss": self.issuer(claims["tid"]), "iat": int(now.timestamp()), "nbf": int(now.timestamp()),
            "exp": int(expires.timestamp()), **claims, "ver": "2.0", "uti": uuid.uuid4().hex,
        }
        return self.sign(body), expires

    def mint_token(
        self, *, tenant_id: str, app_id: str, object_id: str, audience: str, roles: list[str]
    ) -> tuple[str, dt.datetime]:
        """An access token (JWT, RS256) shaped like Entra's app-only tokens for a resource URI, and its expiry."""
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
        return self.sign(claims), expires

    def decode_token(self, token: str) -> dict[str, Any]:
        """The claims of a token this sandbox signed; raises AuthError when invalid or expired."""
        try:
            claims: dict[str, Any] = jwt.decode(
                token, self._signing_key.public_key(), algorithms=["RS256"],
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
            app_id=claims.get("appid") or claims["azp"],
            object_id=claims["oid"],
            audience=claims["aud"],
            roles=list(claims.get("roles", [])),
            expires_at=dt.datetime.fromtimestamp(claims["exp"], dt.UTC),
            scopes=tuple(str(claims.get("scp", "")).split()),
            delegated="scp" in claims,
            identity_provider=claims.get("idp"),
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
        if sp is not None and sp.created_at is not None and self.now() < sp.created_at + self.sp_delay:
            sp = None  # made moments ago: not yet replicated to the token service (an assumed, configurable delay)
        if app is None or sp is None:
            raise EntraError(
                400, "unauthorized_client", 700016, f"Application with identifier '{app_id}' was not found in the "
                f"directory '{tenant.name}'. This can happen if the application has not been installed by the "
                "administrator of the tenant or consented to by any user in the tenant."
            )
        return tenant, app, sp

    def authenticate_secret(
        self, tenant_id: str, app_id: str, secret: str, at: dt.datetime | None = None,
        source: SignInSource | None = None,
    ) -> ServicePrincipal:
        """The service principal a client secret signs in as (now, or at `at`); EntraError as Entra would refuse.

        With a `source`, the attempt lands in the tenant's sign-in log, success or failure, as Entra logs every
        service-principal sign-in (concept-service-principal-sign-ins.md); an unknown tenant or app leaves none.
        """
        tenant, app, sp = self.app_in_tenant(tenant_id, app_id)
        now = at or self.now()
        key_id: str | None = None
        try:
            if not sp.account_enabled:
                # The service principal is disabled (Graph: accountEnabled false), whatever the secret.
                raise EntraError(400, "unauthorized_client", 7000112,
                                 f"Application '{app_id}'({app.display_name}) is disabled.")
            key_id = self._check_secret(app, app_id, secret, now)
            if tenant.blocked_by_conditional_access(app_id):
                # Conditional Access applies to the signed-in principal: judged once the secret was accepted.
                raise EntraError(400, "invalid_grant", 53003, "Access has been blocked by Conditional Access "
                                 "policies. The access policy does not allow token issuance.")
        except EntraError as exc:
            if source is not None:
                self._record_sign_in(tenant, app, sp, key_id or _matching_key(app, secret), source, now, exc)
            raise
        if source is not None:
            self._record_sign_in(tenant, app, sp, key_id, source, now, None)
        return sp

    def record_assertion_sign_in(self, tenant_id: str, app_id: str, source: SignInSource) -> None:
        """A client-assertion (federated credential) sign-in: logged with no credential key id."""
        tenant, app, sp = self.app_in_tenant(tenant_id, app_id)
        self._record_sign_in(tenant, app, sp, None, source, self.now(), None)

    def _check_secret(self, app: Application, app_id: str, secret: str, now: dt.datetime) -> str:
        """The key id of the app's credential the secret is; EntraError unless it is one of the app's, started, not
        expired and propagated."""
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
                return cred.key_id
            break
        raise EntraError(
            401, "invalid_client", 7000215, "Invalid client secret provided. Ensure the secret being sent in the "
            f"request is the client secret value, not the client secret ID, for a secret added to app '{app_id}'."
        )

    def roles_of(self, tenant: Tenant, resource_app_id: str, principal_id: str) -> list[str] | None:
        """The app roles (values) a user or service principal holds on a resource in the tenant; None when the
        resource requires an assignment (appRoleAssignmentRequired) and the principal has none."""
        resource_sp = tenant.service_principals.get(resource_app_id)
        resource_app = self.directory.find_application(resource_app_id)
        if resource_sp is None or resource_app is None:
            return []
        by_id = {r.id: r.value for r in resource_app.app_roles}
        held = [by_id[a.app_role_id] for a in resource_sp.assigned_to
                if a.principal_id == principal_id and a.app_role_id in by_id]
        if not held and resource_sp.app_role_assignment_required:
            return None
        return sorted(set(held))

    def add_redirect_uri(self, app_id: str, uri: str) -> list[str]:
        """Register a web redirect URI on an app (as `az ad app update --web-redirect-uris` would); kept across
        reset. KeyError when no such app."""
        app = self.directory.find_application(app_id)
        if app is None:
            raise KeyError(app_id)
        uris = self.run_time_redirect_uris.setdefault(app_id, [])
        if uri not in uris:
            uris.append(uri)
        if uri not in app.redirect_uris:
            app.redirect_uris.append(uri)
        return list(app.redirect_uris)

    def check_client_secret(
        self, tenant_id: str, app_id: str, secret: str, at: dt.datetime | None = None,
        source: SignInSource | None = None,
    ) -> str | None:
        """None when Entra would issue a token for the app in the tenant with that secret now (or at `at`); with a
        `source` the attempt is a sign-in and lands in the tenant's sign-in log."""
        try:
            self.authenticate_secret(tenant_id, app_id, secret, at, source)
        except EntraError as exc:
            return exc.aadsts
        return None
