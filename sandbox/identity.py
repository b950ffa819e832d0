"""App Service's local managed identity endpoint, for the MSP's user-assigned managed identity."""

from __future__ import annotations

import secrets

from aiohttp import web

from sandbox.world import AUDIENCES, MI_CLIENT_ID, MI_PRINCIPAL_ID, MSP_TENANT_ID, World


def build_app(world: World) -> web.Application:
    """`GET /msi/token?resource=...&api-version=2019-08-01[&client_id=...]` with `X-IDENTITY-HEADER`."""
    routes = web.RouteTableDef()

    @routes.get("/msi/token")
    async def token(request: web.Request) -> web.Response:
        header = request.headers.get("X-IDENTITY-HEADER", "")
        if not secrets.compare_digest(header, world.identity_header):
            return web.json_response({"statusCode": 401, "message": "The identity header is missing or wrong."},
                                     status=401)
        resource = request.query.get("resource", "").removesuffix("/.default").rstrip("/")
        if resource not in AUDIENCES:
            return web.json_response({"statusCode": 400, "message": f"Unknown resource '{resource}'."}, status=400)
        client_id = request.query.get("client_id")
        if client_id not in (None, MI_CLIENT_ID):
            return web.json_response(
                {"statusCode": 400, "message": "Unable to load the proper Managed Identity."}, status=400
            )
        sp = world.directory.tenants[MSP_TENANT_ID].service_principals.get(MI_CLIENT_ID)
        # An api://AzureADTokenExchange token is the assertion the MSP app's federated credential trusts.
        access_token, expires = world.mint_token(
            tenant_id=MSP_TENANT_ID, app_id=MI_CLIENT_ID, object_id=MI_PRINCIPAL_ID, audience=resource,
            roles=list(sp.roles) if sp else [],
        )
        return web.json_response(
            {
                "access_token": access_token,
                "expires_on": str(int(expires.timestamp())),
                "resource": resource,
                "token_type": "Bearer",
                "client_id": MI_CLIENT_ID,
            }
        )

    app = web.Application()
    app.add_routes(routes)
    return app
