"""The Microsoft Graph stand-in: applications, their password credentials, service principals."""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from sandbox import graph_delegated, inventory, seeddates, signinlog, signinreports
from sandbox.world import (
    GRAPH_AUDIENCE,
    Application,
    AuthError,
    Claims,
    PasswordCredential,
    ServicePrincipal,
    Tenant,
    World,
    effective_password_restrictions,
    iso,
    new_secret_text,
)

READ_ALL = {"Application.Read.All", "Application.ReadWrite.All", "Directory.Read.All", "Directory.ReadWrite.All"}
WRITE_ALL = {"Application.ReadWrite.All", "Directory.ReadWrite.All"}
OWNED_BY = "Application.ReadWrite.OwnedBy"
DEFAULT_PAGE = 100
MAX_PAGE = 999
DEFAULT_SECRET_LIFETIME = dt.timedelta(days=730)

_APP_PATH = re.compile(
    r"^/applications(?:/(?P<id>[^/()]+)|\(appId='(?P<app_id>[^']*)'\))"
    r"(?:/(?:microsoft\.graph\.)?(?P<action>addPassword|removePassword|owners))?$"
)
_SIGN_INS = re.compile(r"^/(?P<version>v1\.0|beta)/auditLogs/signIns/?$", re.IGNORECASE)
# DELETE /applications/{id}/owners/{id}/$ref (application-delete-owners.md): removing an owner reference.
_OWNER_REF_PATH = re.compile(
    r"^/applications(?:/(?P<id>[^/()]+)|\(appId='(?P<app_id>[^']*)'\))/owners/(?P<owner>[^/]+)/\$ref$"
)
_SP_PATH = re.compile(r"^/servicePrincipals(?:/(?P<id>[^/()]+)|\(appId='(?P<app_id>[^']*)'\))$")
_EQ = re.compile(r"^(?P<field>\w+)\s+eq\s+'(?P<value>(?:[^']|'')*)'$")
_STARTSWITH = re.compile(r"^startswith\(\s*(?P<field>\w+)\s*,\s*'(?P<value>(?:[^']|'')*)'\s*\)$")
_OWNER_COUNT = re.compile(r"^owners/\$count\s+eq\s+(?P<value>\d+)$")


class GraphError(Exception):
    """A Graph error response: status, code and message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


def error_body(code: str, message: str, request_id: str | None = None) -> dict[str, Any]:
    """Graph's error format (contracts/graph/errors.md)."""
    rid = request_id or str(uuid.uuid4())
    return {
        "error": {
            "code": code,
            "message": message,
            "innerError": {
                "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S"),
                "request-id": rid,
                "client-request-id": rid,
            },
        }
    }


def fault_body(status: int, code: str | None, message: str | None) -> dict[str, Any]:
    """An injected fault in Graph's format; 429 as in contracts/graph/throttling.md."""
    if status == 429:
        return error_body(code or "TooManyRequests", message or "Please retry again later.")
    return error_body(code or "generalException", message or "Injected fault.")


def _denied() -> GraphError:
    return GraphError(403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation.")


def _not_found(what: str) -> GraphError:
    return GraphError(
        404, "Request_ResourceNotFound",
        f"Resource '{what}' does not exist or one of its queried reference-property objects are not present.",
    )


def _unsupported(detail: str) -> GraphError:
    return GraphError(400, "Request_UnsupportedQuery", f"Unsupported query: {detail}")


_ERRORS = SimpleNamespace(not_found=_not_found, error=GraphError,
                          bad_request=lambda code, message: GraphError(400, code, message))


def application_json(app: Application, tenant: Tenant) -> dict[str, Any]:
    """An application object with the properties of the reference page's full example."""
    return {
        "id": app.id,
        "deletedDateTime": None,
        "isFallbackPublicClient": None,
        "appId": app.app_id,
        "applicationTemplateId": None,
        "identifierUris": list(app.identifier_uris),
        "createdDateTime": iso(app.created),
        "description": None,
        "disabledByMicrosoftStatus": None,
        "displayName": app.display_name,
        "isDeviceOnlyAuthSupported": None,
        "groupMembershipClaims": None,
        "notes": None,
        "optionalClaims": None,
        "addIns": [],
        "publisherDomain": _domain(tenant),
        "samlMetadataUrl": None,
        "serviceManagementReference": None,
        "signInAudience": app.sign_in_audience,
        "verifiedPublisher": {"displayName": None, "verifiedPublisherId": None, "addedDateTime": None},
        "certification": None,
        "tags": [],
        "tokenEncryptionKeyId": None,
        "api": {
            "requestedAccessTokenVersion": None,
            "acceptMappedClaims": None,
            "knownClientApplications": [],
            "oauth2PermissionScopes": [],
            "preAuthorizedApplications": [],
        },
        "appRoles": [],
        "publicClient": {"redirectUris": []},
        "info": informational_urls(),
        "keyCredentials": [],
        "parentalControlSettings": {"countriesBlockedForMinors": [], "legalAgeGroupRule": "Allow"},
        "passwordCredentials": [p.to_graph() for p in app.passwords],
        "requiredResourceAccess": json.loads(json.dumps(app.required_resource_access)),
        "web": {
            "redirectUris": [],
            "homePageUrl": None,
            "logoutUrl": None,
            "implicitGrantSettings": {"enableIdTokenIssuance": False, "enableAccessTokenIssuance": False},
        },
    }


def informational_urls() -> dict[str, None]:
    """The `info` object of applications and service principals: the sandbox sets none of its URLs."""
    return dict.fromkeys(("termsOfServiceUrl", "supportUrl", "privacyStatementUrl", "marketingUrl", "logoUrl"))


def service_principal_json(sp: ServicePrincipal) -> dict[str, Any]:
    """A service principal with the properties of the reference page's example."""
    return {
        "id": sp.id,
        "deletedDateTime": None,
        "accountEnabled": True,
        "appDisplayName": sp.display_name,
        "appId": sp.app_id,
        "appOwnerOrganizationId": sp.app_owner_tenant_id,
        "appRoleAssignmentRequired": False,
        "displayName": sp.display_name,
        "homepage": None,
        "logoutUrl": None,
        "publisherName": None,
        "replyUrls": [],
        "servicePrincipalNames": [sp.app_id],
        "servicePrincipalType": sp.kind,
        "tags": [],
        "addIns": [],
        "appRoles": [],
        "info": informational_urls(),
        "keyCredentials": [],
        "oauth2PermissionScopes": [],
        "passwordCredentials": [],
    }


def _domain(tenant: Tenant) -> str:
    return re.sub(r"[^a-z0-9]", "", tenant.name.lower()) + ".onmicrosoft.com"


def _select(item: dict[str, Any], fields: list[str] | None) -> dict[str, Any]:
    if not fields:
        return item
    # Graph matches $select property names case-insensitively.
    wanted = {f.lower() for f in fields}
    return {k: v for k, v in item.items() if k.lower() in wanted}


def _unquote(value: str) -> str:
    return value.replace("''", "'")


Predicate = Callable[[dict[str, Any], int], bool]


def _clause(text: str) -> Predicate:
    text = text.strip()
    while text.startswith("(") and text.endswith(")") and not text.startswith("startswith"):
        text = text[1:-1].strip()
    if match := _EQ.match(text):
        field, value = match["field"], _unquote(match["value"])
        return lambda item, owners: str(item.get(field, "")).lower() == value.lower()
    if match := _STARTSWITH.match(text):
        field, value = match["field"], _unquote(match["value"])
        return lambda item, owners: str(item.get(field) or "").lower().startswith(value.lower())
    if match := _OWNER_COUNT.match(text):
        count = int(match["value"])
        return lambda item, owners: owners == count
    raise _unsupported(f"$filter clause '{text}'")


def parse_filter(text: str) -> Predicate:
    """A small $filter subset: `f eq 'v'`, `startswith(f,'v')`, `owners/$count eq n`, joined by or / and."""
    alternatives = []
    for alternative in re.split(r"\s+or\s+", text.strip()):
        clauses = [_clause(part) for part in re.split(r"\s+and\s+", alternative)]
        alternatives.append(clauses)
    return lambda item, owners: any(all(c(item, owners) for c in clauses) for clauses in alternatives)


class Query:
    """The OData query options a collection request carries."""

    def __init__(self, request: web.Request, count_only: bool = False) -> None:
        q = request.query
        self.raw = dict(q)
        self.select = [f.strip() for f in q["$select"].split(",")] if "$select" in q else None
        self.filter = parse_filter(q["$filter"]) if "$filter" in q else None
        self.search = q.get("$search", "").strip('"') or None
        self.count = q.get("$count", "").lower() == "true"
        self.orderby = q.get("$orderby")
        try:
            self.top = int(q.get("$top", DEFAULT_PAGE))
            self.skip = int(q.get("$skiptoken", "0").removeprefix("offset-"))
        except ValueError as exc:
            raise GraphError(400, "Request_BadRequest", "Invalid $top or $skiptoken.") from exc
        if not 1 <= self.top <= MAX_PAGE:
            raise GraphError(
                400, "Request_BadRequest", f"Invalid page size specified: '{self.top}'. Must be between 1 and 999."
            )
        advanced = count_only or self.count or self.search or "owners/$count" in q.get("$filter", "")
        # As in Graph, advanced queries on directory objects need the eventual consistency level.
        if advanced and request.headers.get("ConsistencyLevel", "").lower() != "eventual":
            raise _unsupported("$count, $search and owners/$count need the header 'ConsistencyLevel: eventual'.")


def build_app(world: World) -> web.Application:
    """One catch-all route: the SDK sends `/v1.0//applications`, so paths are collapsed before matching."""

    def graph_base() -> str:
        return world.urls["graph"] + "/v1.0"

    def context(entity_set: str, select: list[str] | None, single: bool = False) -> str:
        fields = f"({','.join(select)})" if select else ""
        return f"{graph_base()}/$metadata#{entity_set}{fields}{'/$entity' if single else ''}"

    def tenant_of(claims: Claims) -> Tenant:
        tenant = world.directory.tenants.get(claims.tenant_id)
        if tenant is None:
            raise GraphError(401, "InvalidAuthenticationToken", "Access token validation failure. Invalid tenant.")
        return tenant

    def owns(claims: Claims, app: Application) -> bool:
        return claims.object_id in app.owners

    def writable(claims: Claims, app: Application) -> bool:
        roles = set(claims.roles)
        return bool(roles & WRITE_ALL) or (OWNED_BY in roles and owns(claims, app))

    def require_some_role(claims: Claims) -> None:
        # permissions-reference.md: OwnedBy lists and reads every application and service principal of the
        # tenant (and their owners); only writes need ownership (see writable). A delegated token reads with the
        # same permissions as scopes (any member may read app registrations: users' default permissions).
        if not set(claims.roles) & (READ_ALL | {OWNED_BY}) and not set(claims.scopes) & READ_ALL:
            raise _denied()

    def find_app(tenant: Tenant, object_id: str | None, app_id: str | None) -> Application:
        for app in tenant.applications.values():
            if app.id == object_id or (app_id is not None and app.app_id == app_id):
                return app
        raise _not_found(object_id or app_id or "")

    def find_service_principal(tenant: Tenant, object_id: str | None, app_id: str | None) -> ServicePrincipal:
        for sp in tenant.service_principals.values():
            if sp.id == object_id or (app_id is not None and sp.app_id.lower() == app_id.lower()):
                return sp
        raise _not_found(object_id or app_id or "")

    def page(request: web.Request, items: list[dict[str, Any]], query: Query, entity_set: str) -> web.Response:
        chunk = items[query.skip : query.skip + query.top]
        body: dict[str, Any] = {"@odata.context": context(entity_set, query.select)}
        if query.count:
            body["@odata.count"] = len(items)
        if query.skip + query.top < len(items):
            params = {k: v for k, v in query.raw.items() if k != "$skiptoken"}
            params["$skiptoken"] = f"offset-{query.skip + query.top}"
            body["@odata.nextLink"] = f"{graph_base()}/{entity_set}?{urlencode(params)}"
        body["value"] = [_select(item, query.select) for item in chunk]
        return web.json_response(body)

    def list_applications(request: web.Request, claims: Claims, tenant: Tenant, count_only: bool) -> web.Response:
        require_some_role(claims)
        query = Query(request, count_only)
        rows = []
        for app in tenant.applications.values():
            item = application_json(app, tenant)
            if query.filter and not query.filter(item, len(app.owners)):
                continue
            if query.search:
                field, _, needle = query.search.partition(":")
                if needle.lower() not in str(item.get(field, "")).lower():
                    continue
            rows.append(item)
        if query.orderby:
            key = query.orderby.split()[0]
            rows.sort(key=lambda item: str(item.get(key) or "").lower(), reverse=query.orderby.endswith(" desc"))
        if count_only:
            return web.Response(text=str(len(rows)), content_type="text/plain")
        return page(request, rows, query, "applications")

    def check_password_policy(tenant: Tenant, app: Application, lifetime: dt.timedelta) -> None:
        """The tenant's app management policies refuse the addition before anything is created."""
        restrictions = effective_password_restrictions(tenant, app)
        if "passwordAddition" in restrictions:
            _, policy_id = restrictions["passwordAddition"]
            raise GraphError(
                400, "CredentialTypeNotAllowedAsPerAppPolicy",
                f"Credential type not allowed as per assigned policy '{policy_id}'.",
            )
        if "passwordLifetime" in restrictions:
            restriction, policy_id = restrictions["passwordLifetime"]
            if restriction.max_lifetime is not None and lifetime > restriction.max_lifetime:
                raise GraphError(
                    400, "CredentialInvalidLifetimeAsPerAppPolicy",
                    f"Credential lifetime exceeds the max value allowed as per assigned policy '{policy_id}'.",
                )

    async def add_password(request: web.Request, claims: Claims, tenant: Tenant, app: Application) -> web.Response:
        body = await json_body(request)
        doc = body.get("passwordCredential") or {}
        now = world.now()
        start = seeddates.resolve(doc["startDateTime"], now) if doc.get("startDateTime") else now
        end = seeddates.resolve(doc["endDateTime"], now) if doc.get("endDateTime") else start + DEFAULT_SECRET_LIFETIME
        if end <= start:
            raise GraphError(400, "Request_BadRequest", "Password credential endDateTime must be after startDateTime.")
        check_password_policy(tenant, app, end - start)
        credential = PasswordCredential(
            key_id=str(uuid.uuid4()), display_name=doc.get("displayName"), secret_text=new_secret_text(),
            start=start, end=end, created_at=now, propagation_delay=world.new_secret_delay(app.app_id),
        )
        app.passwords.append(credential)
        result = {"@odata.context": f"{graph_base()}/$metadata#microsoft.graph.passwordCredential"}
        result.update(credential.to_graph(with_secret=True))
        return web.json_response(result)

    async def remove_password(request: web.Request, app: Application) -> web.Response:
        key_id = (await json_body(request)).get("keyId")
        for credential in app.passwords:
            if credential.key_id == key_id:
                app.passwords.remove(credential)
                return web.Response(status=204)
        raise _not_found(str(key_id))

    def remove_owner(claims: Claims, tenant: Tenant, ref: re.Match[str]) -> web.Response:
        """application-delete-owners.md: application permission Application.ReadWrite.OwnedBy (on an app the caller
        owns) or Application.ReadWrite.All; 204 No Content. An object that is not an owner answers 404, as Graph
        answers a reference that is not there (Request_ResourceNotFound)."""
        require_some_role(claims)
        app = find_app(tenant, ref["id"], ref["app_id"])
        if not writable(claims, app):
            raise _denied()
        if ref["owner"] not in app.owners:
            raise _not_found(ref["owner"])
        app.owners.remove(ref["owner"])
        return web.Response(status=204)

    async def json_body(request: web.Request) -> dict[str, Any]:
        # Whether the request has a body, not whether its stream is still unread: the sandbox's fault and hold
        # middleware reads the body to match on it (aiohttp caches it), and the handler must see the same request.
        if not request.body_exists:
            return {}
        try:
            doc = await request.json()
        except json.JSONDecodeError as exc:
            raise GraphError(400, "BadRequest", "Unable to read JSON request payload.") from exc
        if not isinstance(doc, dict):
            raise GraphError(400, "BadRequest", "Expected a JSON object.")
        return doc

    async def route(request: web.Request, claims: Claims) -> web.Response:
        path = re.sub(r"/+", "/", request.path)
        if (log := _SIGN_INS.match(path)) and request.method == "GET":
            try:
                return signinlog.list_sign_ins(world, request, claims, tenant_of(claims), log["version"].lower())
            except signinlog.SignInQueryError as exc:
                raise GraphError(exc.status, exc.code, exc.message) from exc
        if (usage := signinreports.REPORTS.match(path)) and request.method == "GET":
            try:
                return signinreports.list_report(world, request, claims, tenant_of(claims), usage["report"])
            except signinlog.SignInQueryError as exc:
                raise GraphError(exc.status, exc.code, exc.message) from exc
        if not path.startswith("/v1.0/"):
            raise GraphError(400, "BadRequest", "Invalid version: only v1.0 (and beta's auditLogs/signIns and "
                             "sign-in activity reports) is served by the sandbox.")
        path = path.removeprefix("/v1.0").rstrip("/")
        tenant = tenant_of(claims)
        method = request.method
        if claims.delegated:
            answer = await graph_delegated.route(world, request, claims, tenant, path, page, Query, _ERRORS,
                                                 service_principal_json)
            if answer is not None:
                return answer
        if (delta := inventory.DELTA_PATH.match(path)) and method == "GET":
            require_some_role(claims)  # application-delta.md: Application.ReadWrite.OwnedBy is enough
            try:
                return inventory.handle_delta(world, request, tenant, delta["set"], graph_base(), claims.app_id)
            except inventory.DeltaError as exc:
                response = web.json_response(error_body(exc.code, exc.message), status=exc.status)
                response.headers.update(exc.headers)
                return response
        if (owned := inventory.OWNERS_PATH.match(path)) and method == "GET":
            require_some_role(claims)  # application-list-owners.md: Application.Read.All (OwnedBy reads too)
            try:
                answer = inventory.handle_owners(world, request, tenant, owned["set"], owned["id"], graph_base(),
                                                 claims.app_id)
            except inventory.DeltaError as exc:
                response = web.json_response(error_body(exc.code, exc.message), status=exc.status)
                response.headers.update(exc.headers)
                return response
            if answer is not None:
                return answer
        if path in ("/applications", "/servicePrincipals") and method == "GET" and any(
                k.lower() == "$expand" for k in request.query):
            require_some_role(claims)  # application-list.md, serviceprincipal-list.md: $expand supported
            try:
                return inventory.handle_expanded_list(world, request, tenant, path.strip("/"), graph_base(),
                                                      claims.app_id)
            except inventory.DeltaError as exc:
                response = web.json_response(error_body(exc.code, exc.message), status=exc.status)
                response.headers.update(exc.headers)
                return response
        if path in ("/applications", "/applications/$count") and method == "GET":
            return list_applications(request, claims, tenant, count_only=path.endswith("$count"))
        if path == "/servicePrincipals" and method == "GET":
            require_some_role(claims)
            query = Query(request)
            rows = [service_principal_json(sp) for sp in tenant.service_principals.values()]
            rows = [r for r in rows if not query.filter or query.filter(r, 0)]
            return page(request, rows, query, "servicePrincipals")
        if (sp_match := _SP_PATH.match(path)) and method == "GET":
            require_some_role(claims)
            sp = find_service_principal(tenant, sp_match["id"], sp_match["app_id"])
            select = Query(request).select
            body = {"@odata.context": context("servicePrincipals", select, single=True)}
            body.update(_select(service_principal_json(sp), select))
            return web.json_response(body)
        if (ref := _OWNER_REF_PATH.match(path)) and method == "DELETE":
            return remove_owner(claims, tenant, ref)
        match = _APP_PATH.match(path)
        if match is None:
            raise GraphError(400, "BadRequest", f"Resource not found for the segment '{path.strip('/')}'.")
        require_some_role(claims)
        app = find_app(tenant, match["id"], match["app_id"])
        action = match["action"]
        if method == "GET" and action is None:
            select = Query(request).select
            body = {"@odata.context": context("applications", select, single=True)}
            body.update(_select(application_json(app, tenant), select))
            return web.json_response(body)
        if method == "GET" and action == "owners":
            owners = [sp for sp in tenant.service_principals.values() if sp.id in app.owners]
            kind = {"@odata.type": "#microsoft.graph.servicePrincipal"}
            value = [{**kind, **service_principal_json(sp)} for sp in owners]
            return web.json_response({"@odata.context": context("directoryObjects", None), "value": value})
        if method == "POST" and action in ("addPassword", "removePassword"):
            if not writable(claims, app):
                raise _denied()
            if action == "addPassword":
                return await add_password(request, claims, tenant, app)
            return await remove_password(request, app)
        raise GraphError(405, "Request_BadRequest", f"The method {method} is not allowed on this resource.")

    async def handle(request: web.Request) -> web.Response:
        request_id = request.headers.get("client-request-id") or str(uuid.uuid4())
        try:
            claims = world.verify_bearer(request.headers.get("Authorization"), GRAPH_AUDIENCE)
            response = await route(request, claims)
        except AuthError as exc:
            response = web.json_response(error_body(exc.code, exc.message, request_id), status=exc.status)
        except GraphError as exc:
            response = web.json_response(error_body(exc.code, exc.message, request_id), status=exc.status)
        except graph_delegated.Denied:
            denied = _denied()
            response = web.json_response(error_body(denied.code, denied.message, request_id), status=denied.status)
        response.headers["request-id"] = request_id
        response.headers["client-request-id"] = request_id
        return response

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app
