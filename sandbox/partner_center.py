"""Partner Center's application-consent API for control-panel vendors (CPV), as CIPP calls it.

Microsoft's page "Control Panel Vendor (CPV) APIs" (learn.microsoft.com/partner-center/developer/control-panel-vendor-
apis): `POST /v1/customers/{customer_id}/applicationconsents` with `applicationId` and `applicationGrants`
(`enterpriseApplicationId`, `scope`: comma-separated delegated permissions of that resource), an access token for the
audience `https://api.partnercenter.microsoft.com`; CIPP (KelvinTegelaar/CIPP-API, Set-CIPPCPVConsent.ps1) deletes
`/applicationconsents/{applicationId}` first and POSTs again, and afterwards grants the app's application
permissions with Graph (app role assignments) in the customer tenant: the consent itself makes the service principal
and admin-consents the DELEGATED scopes only.

Assumed, the strictest plausible (Microsoft does not publish the refusals): only an App+User token of the partner
tenant is served (app-only: 403); the user must hold Partner Center's Admin agent role (the AdminAgents group of the
partner tenant; else 403 "The supplied role does not have the rights to perform the requested operation.", the text
Partner Center gives a user without the role an operation needs); the customer must have an active GDAP
relationship (else 403) in which the user holds Application Administrator, Cloud Application Administrator or
Global Administrator ("Least privileged roles by task", Enterprise applications: "Create enterprise application" and
"Consent to any delegated permissions" are Cloud Application Administrator's, with Application Administrator; else
403); a second POST for the same application answers 409. Error bodies carry Partner Center's fields `code`,
`description`, `data`, `source`.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from aiohttp import web

from sandbox.gdap import Consent
from sandbox.graph_delegated import APP_MANAGERS
from sandbox.world import ADMIN_AGENTS_GROUP, PARTNER_CENTER_AUDIENCE, AuthError, Claims, World

CONSENTING_ROLES = APP_MANAGERS


class PartnerCenterError(Exception):
    def __init__(self, status: int, code: int, description: str) -> None:
        super().__init__(f"{status} {code}: {description}")
        self.status, self.code, self.description = status, code, description


def error_body(code: int, description: str) -> dict[str, Any]:
    return {"code": code, "description": description, "data": [], "source": "PartnerFD"}


def fault_body(status: int, code: str | None, message: str | None) -> dict[str, Any]:
    return error_body(status, message or "Injected fault.")


def _consent_json(customer_id: str, consent: Consent) -> dict[str, Any]:
    return {"applicationId": consent.application_id, "displayName": consent.display_name,
            "applicationGrants": consent.grants, "customerTenantId": customer_id}


def build_app(world: World) -> web.Application:
    routes = web.RouteTableDef()

    def caller(request: web.Request) -> Claims:
        claims = world.verify_bearer(request.headers.get("Authorization"), PARTNER_CENTER_AUDIENCE)
        if not claims.delegated:
            raise PartnerCenterError(403, 403, "This API supports App+User authentication only.")
        if claims.tenant_id != world.msp_tenant_id:
            raise PartnerCenterError(403, 403, "The caller is not a user of the partner tenant.")
        agents = world.directory.tenants[world.msp_tenant_id].groups.get(ADMIN_AGENTS_GROUP[0])
        if agents is None or claims.object_id not in agents.members:
            # Partner Center's answer to a user without the Partner Center role the operation needs (as
            # Partner-Center-PowerShell#61 and Partner-Center-SDK-Samples#35 quote it).
            raise PartnerCenterError(403, 403, "The supplied role does not have the rights to perform the requested "
                                     "operation.")
        return claims

    def customer(request: web.Request, claims: Claims) -> str:
        customer_id = request.match_info["customer"].lower()
        if customer_id not in world.directory.tenants or not any(
                r.customer_tenant_id == customer_id for r in world.gdap.relationships.values()):
            raise PartnerCenterError(404, 404, f"Customer {customer_id} was not found for this partner.")
        if not world.gdap.active_relationships(customer_id):
            raise PartnerCenterError(403, 403, f"The partner has no active delegated admin relationship with "
                                     f"customer {customer_id}.")
        if not world.gdap.roles_in(customer_id, claims.object_id) & CONSENTING_ROLES:
            raise PartnerCenterError(403, 403, "The user does not hold a role in the customer tenant that may "
                                     "consent to applications (Application Administrator, Cloud Application "
                                     "Administrator or Global Administrator).")
        return customer_id

    async def answer(request: web.Request, work: Any) -> web.Response:
        request_id = request.headers.get("ms-correlationid") or str(uuid.uuid4())
        try:
            response: web.Response = await work(caller(request))
        except AuthError as exc:
            response = web.json_response(error_body(401, exc.message), status=401)
        except PartnerCenterError as exc:
            response = web.json_response(error_body(exc.code, exc.description), status=exc.status)
        response.headers["MS-CorrelationId"] = request_id
        return response

    @routes.post("/v1/customers/{customer}/applicationconsents")
    async def create(request: web.Request) -> web.Response:
        async def work(claims: Claims) -> web.Response:
            customer_id = customer(request, claims)
            try:
                doc = await request.json()
            except json.JSONDecodeError as exc:
                raise PartnerCenterError(400, 400, "The request body is not valid JSON.") from exc
            app_id = str((doc or {}).get("applicationId") or "").lower() if isinstance(doc, dict) else ""
            grants = doc.get("applicationGrants") if isinstance(doc, dict) else None
            if not app_id or not isinstance(grants, list) or not grants or not all(
                    isinstance(g, dict) and g.get("enterpriseApplicationId") and isinstance(g.get("scope"), str)
                    for g in grants):
                raise PartnerCenterError(400, 400, "applicationId and applicationGrants (enterpriseApplicationId, "
                                         "scope) are required.")
            app = world.directory.find_application(app_id)
            if app is None or app.sign_in_audience == "AzureADMyOrg":
                raise PartnerCenterError(400, 400, f"Application {app_id} is not a multi-tenant application of the "
                                         "partner.")
            if (customer_id, app_id) in world.gdap.consents:
                raise PartnerCenterError(409, 409, f"Application consent for {app_id} already exists for this "
                                         "customer.")
            tenant = world.directory.tenants[customer_id]
            sp = world.directory.ensure_service_principal(tenant, app_id)
            if sp.created_at is None:
                sp.created_at = world.now()
            for grant in grants:
                scopes = {s.strip() for s in grant["scope"].split(",") if s.strip()}
                if str(grant["enterpriseApplicationId"]).lower() == "00000003-0000-0000-c000-000000000000":
                    tenant.delegated_grants.setdefault(app_id, set()).update(scopes)
            consent = Consent(app_id, str(doc.get("displayName") or app.display_name),
                              [{"enterpriseApplicationId": str(g["enterpriseApplicationId"]), "scope": g["scope"]}
                               for g in grants])
            world.gdap.consents[(customer_id, app_id)] = consent
            return web.json_response(_consent_json(customer_id, consent), status=201)

        return await answer(request, work)

    @routes.get("/v1/customers/{customer}/applicationconsents")
    async def list_consents(request: web.Request) -> web.Response:
        async def work(claims: Claims) -> web.Response:
            customer_id = customer(request, claims)
            items = [_consent_json(t, c) for (t, _), c in world.gdap.consents.items() if t == customer_id]
            return web.json_response({"totalCount": len(items), "items": items,
                                      "attributes": {"objectType": "Collection"}})

        return await answer(request, work)

    @routes.delete("/v1/customers/{customer}/applicationconsents/{app_id}")
    async def delete(request: web.Request) -> web.Response:
        async def work(claims: Claims) -> web.Response:
            customer_id = customer(request, claims)
            app_id = request.match_info["app_id"].lower()
            if world.gdap.consents.pop((customer_id, app_id), None) is None:
                raise PartnerCenterError(404, 404, f"No application consent for {app_id}.")
            tenant = world.directory.tenants[customer_id]
            # CIPP names this call "Delete Service Principal from tenant": the consent's service principal goes too.
            sp = tenant.service_principals.pop(app_id, None)
            tenant.delegated_grants.pop(app_id, None)
            if sp is not None:
                for application in tenant.applications.values():
                    if sp.id in application.owners:
                        application.owners.remove(sp.id)
            return web.Response(status=204)

        return await answer(request, work)

    app = web.Application()
    app.add_routes(routes)
    return app
