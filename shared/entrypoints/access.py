"""Who may call: the caller from App Service Authentication's `X-MS-CLIENT-PRINCIPAL` header, and its app roles.

With Easy Auth in front of the app (infra: authsettingsV2, requireAuthentication), the platform signs the caller in
with the MSP's Entra app and injects `X-MS-CLIENT-PRINCIPAL`: base64 of the JSON `{"auth_typ", "name_typ",
"role_typ", "claims": [{"typ", "val"}]}`. App roles arrive as claims whose `typ` is `roles` (or the role claim type
App Service names in `role_typ`). External requests cannot set the header: the platform removes it
(learn.microsoft.com/azure/app-service/configure-authentication-user-identities). Every HTTP function is ANONYMOUS
at the Functions host (a FUNCTION-level trigger would need a key, which a signed-in caller never carries:
azure-functions-host `FunctionAuthorizationHandler.cs`, `AuthUtility.cs`), and App Service Authentication lets
unauthenticated requests through (infra/app/easy-auth.json, AllowAnonymous): the code enforces the roles itself and
refuses a request without the header. Automation signs in too: an Entra token of its own service principal holding
an app role (client credentials), validated by the platform like a person's.

Only what the deployment configures is trusted: the principal's `auth_typ` ("the name of the identity provider that
App Service authentication uses", learn.microsoft.com/azure/app-service/configure-authentication-user-identities,
"Decode the client principal header") must be `aad`, the provider name App Service gives Microsoft Entra ID
(`/.auth/login/aad`, `X-MS-TOKEN-AAD-*`, `X-MS-CLIENT-PRINCIPAL-IDP: aad`): the only provider infra configures. A role
is an exact string, compared as it arrives: a value with a space, a tab, a newline, a no-break space or a
zero-width character around or inside it is not the role.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from dataclasses import dataclass
from enum import Enum
from typing import Any

import azure.functions as func

from shared.domain import ACTOR_NAME_MAX, unprintable
from shared.entrypoints.web import HttpError

PRINCIPAL_HEADER = "X-MS-CLIENT-PRINCIPAL"
PRINCIPAL_NAME_HEADER = "X-MS-CLIENT-PRINCIPAL-NAME"
ROLE_CLAIM = "roles"
# The claim types that name a person (after App Service's default claim mapping) or, for an app-only token, an app.
_LOGIN_CLAIMS = (
    "preferred_username",
    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn",
    "upn",
    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress",
    "email",
)
_DISPLAY_CLAIMS = ("name", "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name")
_APP_CLAIMS = ("appid", "azp")
_SCOPE_CLAIMS = ("scp", "http://schemas.microsoft.com/identity/claims/scope")
_OBJECT_ID_CLAIMS = ("http://schemas.microsoft.com/identity/claims/objectidentifier", "oid")
PROVIDER_HEADER = "X-MS-CLIENT-PRINCIPAL-IDP"
# The identity providers this deployment configures in App Service Authentication (infra: azureActiveDirectory only).
ACCEPTED_PROVIDERS = frozenset({"aad"})
_MAX_HEADER = 16 * 1024
_MAX_NAME = ACTOR_NAME_MAX


class Role(str, Enum):
    """The app roles of the MSP's Entra app that this API checks."""

    READ = "Rotator.Read"  # status, discovery, the registry view, OpenAPI, the dashboard
    OPERATE = "Rotator.Operate"  # registry changes, rotations, acknowledgements, direct pushes (includes READ)


@dataclass(frozen=True)
class Caller:
    """A signed-in caller: its name (UPN, or app:<client id>), its app roles, and how it signed in."""

    name: str
    roles: frozenset[str]
    kind: str  # "user" | "app"

    def has(self, role: Role) -> bool:
        # Operate includes Read: an operator who may rotate may also look.
        return role.value in self.roles or (role is Role.READ and Role.OPERATE.value in self.roles)


def _unauthenticated(message: str) -> HttpError:
    return HttpError(401, "Unauthenticated", message)


def _clean(value: str) -> str:
    """A claim value fit for audit rows and responses: no control characters, bounded."""
    text = "".join(c for c in value if not unprintable(c)).strip()
    return text[:_MAX_NAME].strip()


def _claims(raw: str) -> dict[str, Any]:
    if len(raw) > _MAX_HEADER:
        raise _unauthenticated(f"{PRINCIPAL_HEADER} is too large")
    try:
        decoded = base64.b64decode(raw.strip(), validate=True)
        doc = json.loads(decoded.decode("utf-8"))
    except (binascii.Error, ValueError, UnicodeDecodeError, RecursionError):
        raise _unauthenticated(f"{PRINCIPAL_HEADER} is not the base64 JSON App Service Authentication sends") from None
    claims = doc.get("claims") if isinstance(doc, dict) else None
    if not isinstance(claims, list) or not all(
        isinstance(c, dict) and isinstance(c.get("typ"), str) and isinstance(c.get("val"), str) for c in claims
    ):
        raise _unauthenticated(f"{PRINCIPAL_HEADER} carries no claims list of {{typ, val}}")
    provider = doc.get("auth_typ")
    if not isinstance(provider, str) or provider not in ACCEPTED_PROVIDERS:
        # Exact: " aad", "AAD" or "aad\n" is not what the platform writes for an Entra ID sign-in.
        raise _unauthenticated(f"{PRINCIPAL_HEADER} is not from an identity provider this deployment accepts "
                               f"({', '.join(sorted(ACCEPTED_PROVIDERS))})")
    principal: dict[str, Any] = doc
    return principal


def principal(req: func.HttpRequest) -> Caller | None:
    """The caller App Service Authentication signed in, or None when the request carries no principal."""
    raw = req.headers.get(PRINCIPAL_HEADER)
    if raw is None or raw == "":
        return None
    doc = _claims(raw)
    idp = req.headers.get(PROVIDER_HEADER)
    if idp is not None and idp != doc["auth_typ"]:
        raise _unauthenticated(f"{PROVIDER_HEADER} and {PRINCIPAL_HEADER} name different identity providers")
    claims: list[dict[str, str]] = doc["claims"]

    def first(*types: str) -> str:
        for typ in types:
            for claim in claims:
                if claim["typ"] == typ and _clean(claim["val"]):
                    return _clean(claim["val"])
        return ""

    # App roles only: the `roles` claim, or the role claim type App Service names in `role_typ` for Entra ID. A
    # role_typ naming another claim (groups, name, preferred_username) would make a group or a user name a role.
    role_types = {ROLE_CLAIM}
    if doc.get("role_typ") == ROLE_TYPE:
        role_types.add(ROLE_TYPE)
    # Exact values, never cleaned: a role that is only equal after trimming or removing characters is another role.
    roles = frozenset(c["val"] for c in claims if c["typ"] in role_types)
    name_typ = doc.get("name_typ") if isinstance(doc.get("name_typ"), str) else ""
    # An app-only token (client credentials) is told by `idtyp: app` only where the app registration asks for that
    # optional claim; without it, by what it lacks: a delegated access token always carries `scp` and an ID token
    # a sign-in name, an app-only one neither (learn.microsoft.com/entra/identity-platform/
    # access-token-claims-reference: `idtyp`, `scp`, `roles`).
    is_app = first("idtyp") == "app" or (
        not first(*_LOGIN_CLAIMS) and not first(*_SCOPE_CLAIMS) and bool(first(*_APP_CLAIMS)))
    person = ""
    if not is_app:
        # The sign-in name (UPN) first: it is what an auditor recognises; a display name last.
        person = (
            first(*_LOGIN_CLAIMS)
            or _clean(req.headers.get(PRINCIPAL_NAME_HEADER) or "")
            or (first(name_typ) if name_typ else "")
            or first(*_DISPLAY_CLAIMS)
        )
    if person:
        return Caller(person, roles, "user")
    app = first(*_APP_CLAIMS)
    if app and (is_app or not first(*_OBJECT_ID_CLAIMS)):  # a person named by nothing else is their object id
        return Caller(f"app:{app}", roles, "app")
    object_id = first(*_OBJECT_ID_CLAIMS)
    if object_id:
        return Caller(f"oid:{object_id}", roles, "app" if is_app else "user")
    raise _unauthenticated(f"{PRINCIPAL_HEADER} names nobody (no name, app id or object id claim)")


def caller(req: func.HttpRequest) -> Caller:
    """The signed-in caller (401 Unauthenticated without one)."""
    found = principal(req)
    if found is not None:
        return found
    raise _unauthenticated("sign in: this API needs an Entra ID caller (App Service Authentication)")


def authorize(req: func.HttpRequest, role: Role) -> Caller:
    """The caller, when it holds `role` (401 Unauthenticated without a caller, 403 Forbidden without the role)."""
    found = caller(req)
    if not found.has(role):
        raise HttpError(403, "Forbidden", f"this needs the app role {role.value}; ask an administrator to assign it")
    return found


# Claim types as App Service Authentication writes them for an Entra ID (aad) sign-in.
NAME_TYPE = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name"
ROLE_TYPE = "http://schemas.microsoft.com/ws/2008/06/identity/claims/role"


def platform_headers(name: str, roles: frozenset[str] | set[str] | list[str] | tuple[str, ...]) -> dict[str, str]:
    """The headers App Service Authentication injects for a signed-in Entra user: for tests that call the functions
    directly (what the platform hands the code). The local host (devhost/) strips them from clients, as Azure does."""
    claims = [
        {"typ": "http://schemas.microsoft.com/identity/claims/objectidentifier",
         "val": str(uuid.uuid5(uuid.NAMESPACE_URL, f"principal:{name}"))},
        {"typ": "name", "val": name.split("@")[0]},
        {"typ": "preferred_username", "val": name},
        {"typ": "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn", "val": name},
        *({"typ": ROLE_CLAIM, "val": role} for role in sorted(roles)),
    ]
    doc = {"auth_typ": "aad", "claims": claims, "name_typ": NAME_TYPE, "role_typ": ROLE_TYPE}
    return {
        PRINCIPAL_HEADER: base64.b64encode(json.dumps(doc).encode("utf-8")).decode("ascii"),
        PRINCIPAL_NAME_HEADER: name,
        PROVIDER_HEADER: "aad",
    }
