"""Microsoft Graph for a signed-in user (delegated tokens): the GDAP reads of the partner tenant, /me, /domains, and
the customer-tenant writes the partner admin makes under GDAP (service principals, app role assignments, owners).

Graph allows a delegated call when the token's `scp` holds a permission the API page lists AND the signed-in user
holds a directory role that may do the task ("In delegated scenarios ... the signed-in user must be assigned a
supported Microsoft Entra role"; permissions-overview.md "Delegated permissions"). The roles are read from the world
at each request, not from the token: a GDAP role removed after sign-in stops the next call (the strictest reading).
For the partner admin in a customer tenant the roles are those of its active GDAP relationships there; for a
customer's own admin, the directory roles seeded on the user. Sources per endpoint: sandbox/README.md.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from typing import Any

from aiohttp import web

from sandbox.world import (
    GRAPH_APP_ID,
    GRAPH_APP_ROLES,
    ROLE_TEMPLATE_IDS,
    Claims,
    ServicePrincipal,
    Tenant,
    World,
    iso,
)

GLOBAL_ADMIN = ROLE_TEMPLATE_IDS["Global Administrator"]
PRIVILEGED_ROLE_ADMIN = ROLE_TEMPLATE_IDS["Privileged Role Administrator"]
APP_ADMIN = ROLE_TEMPLATE_IDS["Application Administrator"]
CLOUD_APP_ADMIN = ROLE_TEMPLATE_IDS["Cloud Application Administrator"]
# delegate-by-task.md ("Least privileged roles by task", Enterprise applications): "Create enterprise application"
# and "Update enterprise application owners": Cloud Application Administrator, Application Administrator; "Consent to
# application permissions to Microsoft Graph": Privileged Role Administrator only (permissions-reference.md,
# Application Administrator: "with the exception of application permissions for Microsoft Graph"). Global
# Administrator may do all.
APP_MANAGERS = {GLOBAL_ADMIN, APP_ADMIN, CLOUD_APP_ADMIN}
GRAPH_GRANTERS = {GLOBAL_ADMIN, PRIVILEGED_ROLE_ADMIN}
# Graph's own service principal: one per tenant, with the application permissions as its app roles.
_GRAPH_SP_NS = uuid.UUID("5a1d0000-0000-4000-8000-00000000a000")

GDAP_READ = {"DelegatedAdminRelationship.Read.All", "DelegatedAdminRelationship.ReadWrite.All"}
APP_READ = {"Application.Read.All", "Application.ReadWrite.All", "Directory.Read.All", "Directory.ReadWrite.All"}
APP_WRITE = {"Application.ReadWrite.All", "Directory.ReadWrite.All"}
ASSIGN = {"AppRoleAssignment.ReadWrite.All"}
DOMAIN_READ = {"Domain.Read.All", "Domain.ReadWrite.All", "Directory.Read.All", "Directory.ReadWrite.All"}
MEMBER_READ = {"User.Read", "GroupMember.Read.All", "Directory.Read.All", "Directory.ReadWrite.All"}

_RELATIONSHIP = re.compile(r"^/tenantRelationships/delegatedAdminRelationships/(?P<id>[^/]+)"
                           r"(?P<sub>/accessAssignments)?$")
_SP = re.compile(r"^/servicePrincipals(?:/(?P<id>[^/()]+)|\(appId='(?P<app_id>[^']*)'\))"
                 r"(?:(?P<sub>/appRoleAssignedTo(?:/(?P<assignment>[^/]+))?)|(?P<held>/appRoleAssignments))?$")
_OWNER_REF = re.compile(r"^/applications(?:/(?P<id>[^/()]+)|\(appId='(?P<app_id>[^']*)'\))/owners"
                        r"(?:/(?P<owner>[^/]+))?/\$ref$")


class Denied(Exception):
    """Raised as Graph's 403 Authorization_RequestDenied by the caller (graph.py turns it into its error body)."""


def graph_service_principal(tenant: Tenant) -> ServicePrincipal:
    """Microsoft Graph's service principal in the tenant (made on first use; its id is stable per tenant)."""
    sp = tenant.service_principals.get(GRAPH_APP_ID)
    if sp is None:
        sp = ServicePrincipal(str(uuid.uuid5(_GRAPH_SP_NS, tenant.id)), GRAPH_APP_ID, "Microsoft Graph", None)
        sp.app_owner_tenant_id = "f8cdef31-a31e-4b4a-93e4-5f571e91255a"  # Microsoft's services tenant
        tenant.service_principals[GRAPH_APP_ID] = sp
    return sp


def graph_app_roles() -> list[dict[str, Any]]:
    return [{"id": i, "value": v, "displayName": v, "description": v, "allowedMemberTypes": ["Application"],
             "isEnabled": True, "origin": "Application"} for i, v in GRAPH_APP_ROLES.items()]


def roles_of_user(world: World, tenant: Tenant, claims: Claims) -> set[str]:
    """The directory roles the signed-in user holds in the tenant now (GDAP for a partner user elsewhere)."""
    if claims.identity_provider is not None or claims.object_id not in tenant.users:
        return world.gdap.roles_in(tenant.id, claims.object_id)
    return set(tenant.directory_roles.get(claims.object_id, set()))


def require(claims: Claims, scopes: set[str], roles: set[str] | None = None, held: set[str] | None = None) -> None:
    """403 unless the token has one of the scopes and (when roles are given) the user holds one of the roles."""
    if not set(claims.scopes) & scopes:
        raise Denied
    if roles is not None and not (held or set()) & roles:
        raise Denied


async def route(world: World, request: web.Request, claims: Claims, tenant: Tenant, path: str,
                page: Callable[[web.Request, list[dict[str, Any]], Any, str], web.Response],
                query: Callable[[web.Request], Any], errors: Any, sp_json: Callable[[ServicePrincipal], dict[str, Any]],
                ) -> web.Response | None:
    """Answer a delegated request on the routes modelled here; None for the app-only routes' handling."""
    method = request.method
    held = roles_of_user(world, tenant, claims)
    base = world.urls["graph"] + "/v1.0"

    if path == "/me" and method == "GET":
        require(claims, MEMBER_READ)
        user = tenant.users.get(claims.object_id)
        if user is None:
            raise errors.not_found(claims.object_id)
        return web.json_response({"@odata.context": f"{base}/$metadata#users/$entity", "id": user.id,
                                  "userPrincipalName": user.user_principal_name, "displayName": user.display_name,
                                  "mail": user.user_principal_name})
    if path in ("/me/transitiveMemberOf", "/me/memberOf") and method == "GET":
        require(claims, MEMBER_READ)
        groups = [{"@odata.type": "#microsoft.graph.group", "id": g.id, "displayName": g.display_name,
                   "securityEnabled": True, "mailEnabled": False}
                  for g in tenant.groups.values() if claims.object_id in g.members]
        return page(request, groups, query(request), path.strip("/"))
    if path == "/domains" and method == "GET":
        require(claims, DOMAIN_READ)
        if not held and claims.object_id not in tenant.users:
            raise Denied
        names = [tenant.initial_domain(), *tenant.domains]
        # The default domain: the first verified custom domain, else the initial one (domain.md isDefault).
        default = names[1] if len(names) > 1 else names[0]
        value = [{"id": n, "authenticationType": "Managed", "isDefault": n == default,
                  "isInitial": n == names[0], "isRoot": True, "isVerified": True,
                  "supportedServices": ["Email"] if n != names[0] else ["Email", "OfficeCommunicationsOnline"]}
                 for n in names]
        return page(request, value, query(request), "domains")
    if path.startswith("/tenantRelationships/"):
        require(claims, GDAP_READ)
        top = request.query.get("$top", "")
        if top.isdigit() and int(top) > 300:  # the GDAP list pages: "$top supports up to 300 objects"
            raise errors.bad_request("Request_BadRequest", "The $top value must be at most 300.")
        if tenant.id != world.msp_tenant_id:
            raise Denied  # the relationships are the partner tenant's
        now = world.now()
        if path == "/tenantRelationships/delegatedAdminRelationships" and method == "GET":
            rows = [r.to_graph(now) for r in world.gdap.relationships.values()]
            q = query(request)
            rows = [r for r in rows if not q.filter or q.filter(r, 0)]
            return page(request, rows, q, "tenantRelationships/delegatedAdminRelationships")
        if path == "/tenantRelationships/delegatedAdminCustomers" and method == "GET":
            seen: dict[str, dict[str, Any]] = {}
            for r in world.gdap.relationships.values():
                seen.setdefault(r.customer_tenant_id, {"id": r.customer_tenant_id, "tenantId": r.customer_tenant_id,
                                                       "displayName": r.customer_name})
            return page(request, list(seen.values()), query(request), "tenantRelationships/delegatedAdminCustomers")
        if (match := _RELATIONSHIP.match(path)) and method == "GET":
            relationship = world.gdap.relationships.get(match["id"])
            if relationship is None:
                raise errors.not_found(match["id"])
            if not match["sub"]:
                return web.json_response({"@odata.context": f"{base}/$metadata#delegatedAdminRelationships/$entity",
                                          **relationship.to_graph(now)})
            rows = [{"@odata.type": "#microsoft.graph.delegatedAdminAccessAssignment", "id": a.id, "status": a.status,
                     "accessContainer": {"accessContainerId": a.group_id, "accessContainerType": "securityGroup"},
                     "accessDetails": {"unifiedRoles": [{"roleDefinitionId": r} for r in a.roles]},
                     "createdDateTime": iso(relationship.created), "lastModifiedDateTime": iso(relationship.created)}
                    for a in relationship.assignments]
            return page(request, rows, query(request),
                        f"tenantRelationships/delegatedAdminRelationships/{relationship.id}/accessAssignments")
        return None

    if path == "/servicePrincipals" and method == "POST":
        require(claims, APP_WRITE, APP_MANAGERS, held)
        doc = await _body(request, errors)
        app_id = str(doc.get("appId") or "")
        app = world.directory.find_application(app_id)
        if app is None or (app.sign_in_audience == "AzureADMyOrg" and app.home_tenant_id != tenant.id):
            raise errors.bad_request("Request_BadRequest", f"The appId '{app_id}' of the service principal does not "
                                     "reference a valid application object.")
        if app_id in tenant.service_principals:
            # Assumed (not on the API page): the duplicate is refused as a uniqueness conflict, nothing changes.
            raise errors.error(409, "Request_MultipleObjectsWithSameKeyValue", "Another object with the same value "
                               "for property servicePrincipalNames already exists.")
        sp = world.directory.ensure_service_principal(tenant, app_id)
        sp.created_at = world.now()
        return web.json_response({"@odata.context": f"{base}/$metadata#servicePrincipals/$entity", **sp_json(sp)},
                                 status=201)
    if match := _SP.match(path):
        if (match["app_id"] is not None and match["app_id"].lower() == GRAPH_APP_ID) or match["id"] == str(
                uuid.uuid5(_GRAPH_SP_NS, tenant.id)):
            graph_service_principal(tenant)
        found = next((s for s in tenant.service_principals.values()
                      if s.id == match["id"] or (match["app_id"] is not None
                                                 and s.app_id.lower() == match["app_id"].lower())), None)
        if found is None:
            raise errors.not_found(match["id"] or match["app_id"] or "")
        sp = found
        if method == "GET" and match["held"]:
            # The app role assignments the principal holds (servicePrincipal-list-approleassignments.md).
            require(claims, APP_READ)
            graph = graph_service_principal(tenant)
            rows = [a for a in _assignments(tenant, graph) if a["principalId"] == sp.id]
            return page(request, rows, query(request), f"servicePrincipals/{sp.id}/appRoleAssignments")
        if match["held"]:
            return None
        if method == "GET" and not match["sub"]:
            require(claims, APP_READ)
            return web.json_response({"@odata.context": f"{base}/$metadata#servicePrincipals/$entity",
                                      **_sp_with_roles(sp, sp_json)})
        if method == "DELETE" and not match["sub"]:
            require(claims, APP_WRITE, APP_MANAGERS, held)
            del tenant.service_principals[sp.app_id]
            for app in tenant.applications.values():
                if sp.id in app.owners:
                    app.owners.remove(sp.id)
            tenant.delegated_grants.pop(sp.app_id, None)
            return web.Response(status=204)
        if match["sub"] and method == "GET" and not match["assignment"]:
            require(claims, APP_READ)
            return page(request, _assignments(tenant, sp), query(request),
                        f"servicePrincipals/{sp.id}/appRoleAssignedTo")
        if match["sub"] and method == "POST" and not match["assignment"]:
            grants_graph = sp.app_id == GRAPH_APP_ID
            require(claims, ASSIGN, GRAPH_GRANTERS if grants_graph else APP_MANAGERS | GRAPH_GRANTERS, held)
            doc = await _body(request, errors)
            principal = next((s for s in tenant.service_principals.values() if s.id == doc.get("principalId")), None)
            if principal is None:
                raise errors.not_found(str(doc.get("principalId")))
            if doc.get("resourceId") != sp.id:
                raise errors.bad_request("Request_BadRequest", "The resourceId must be the service principal of "
                                         "the request's path.")
            role = GRAPH_APP_ROLES.get(str(doc.get("appRoleId"))) if grants_graph else None
            if role is None:
                raise errors.bad_request("Request_BadRequest", "Permission being assigned was not found on "
                                         f"application '{sp.app_id}'.")
            if role in principal.roles:
                raise errors.bad_request("Request_BadRequest", "Permission being assigned already exists on the "
                                         "object")
            principal.roles.append(role)
            created = next(a for a in _assignments(tenant, sp) if a["principalId"] == principal.id
                           and a["appRoleId"] == doc["appRoleId"])
            return web.json_response({"@odata.context": f"{base}/$metadata#appRoleAssignments/$entity", **created},
                                     status=201)
        return None
    if match := _OWNER_REF.match(path):
        app = next((a for a in tenant.applications.values()
                    if a.id == match["id"] or (match["app_id"] is not None and a.app_id == match["app_id"])), None)
        if app is None:
            raise errors.not_found(match["id"] or match["app_id"] or "")
        if method == "POST" and not match["owner"]:
            require(claims, APP_WRITE, APP_MANAGERS, held)
            ref = str((await _body(request, errors)).get("@odata.id") or "")
            owner_id = ref.rstrip("/").rpartition("/")[2]
            if owner_id not in {s.id for s in tenant.service_principals.values()} | set(tenant.users):
                raise errors.not_found(owner_id)
            if owner_id in app.owners:
                raise errors.bad_request("Request_BadRequest", "One or more added object references already exist "
                                         "for the following modified properties: 'owners'.")
            app.owners.append(owner_id)
            return web.Response(status=204)
        if method == "DELETE" and match["owner"]:
            require(claims, APP_WRITE, APP_MANAGERS, held)
            if match["owner"] not in app.owners:
                raise errors.not_found(match["owner"])
            app.owners.remove(match["owner"])
            return web.Response(status=204)
    return None


def _sp_with_roles(sp: ServicePrincipal, sp_json: Callable[[ServicePrincipal], dict[str, Any]]) -> dict[str, Any]:
    body = sp_json(sp)
    if sp.app_id == GRAPH_APP_ID:
        body["appRoles"] = graph_app_roles()
    return body


def _assignments(tenant: Tenant, resource: ServicePrincipal) -> list[dict[str, Any]]:
    """appRoleAssignedTo of Graph's service principal: the Graph application permissions each principal holds."""
    if resource.app_id != GRAPH_APP_ID:
        return []
    by_value = {v: i for i, v in GRAPH_APP_ROLES.items()}
    return [{"id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{sp.id}:{role}")), "deletedDateTime": None,
             "appRoleId": by_value[role], "createdDateTime": None, "principalDisplayName": sp.display_name,
             "principalId": sp.id, "principalType": "ServicePrincipal", "resourceDisplayName": "Microsoft Graph",
             "resourceId": resource.id}
            for sp in tenant.service_principals.values() for role in sp.roles if role in by_value]


async def _body(request: web.Request, errors: Any) -> dict[str, Any]:
    if not request.body_exists:
        return {}
    try:
        doc = await request.json()
    except json.JSONDecodeError as exc:
        raise errors.bad_request("BadRequest", "Unable to read JSON request payload.") from exc
    if not isinstance(doc, dict):
        raise errors.bad_request("BadRequest", "Expected a JSON object.")
    return doc
