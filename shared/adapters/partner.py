"""PartnerSession over the real services: Microsoft Graph (GDAP reads in the partner tenant; service principals, app
role assignments and owners in customer tenants, as the signed-in partner admin) and Partner Center's
application-consent API (the control-panel-vendor path CIPP uses).

Which call needs which GDAP role (docs/onboarding.md has the table with its sources):
- Partner Center `applicationconsents` (makes the MSP app's service principal and consents its delegated Graph
  scopes): Cloud Application Administrator or Application Administrator ("Create enterprise application", "Consent
  to any delegated permissions"); Partner Center does not publish its check, the sandbox assumes this one.
- Graph `POST /servicePrincipals`, owners `$ref`, `DELETE /servicePrincipals/{id}`: Cloud Application
  Administrator or Application Administrator ("Least privileged roles by task", Enterprise applications).
- Graph `appRoleAssignedTo` on Microsoft Graph's service principal: Privileged Role Administrator ("Consent to
  application permissions to Microsoft Graph"; Application Administrator consents "with the exception of
  application permissions for Microsoft Graph", Entra built-in roles reference).
Global Administrator may do each.
Both install methods end with the Graph app role assignments: Partner Center consents delegated scopes only.

Every call is made with the admin's delegated token for that tenant (shared.adapters.delegated); no token leaves it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import aiohttp

from shared import partner_roles
from shared.adapters.delegated import GRAPH, PARTNER_CENTER, DelegatedSignIn
from shared.errors import Ambiguous, NotFound, PartnerRefused, RotationError, Throttled
from shared.ports import GdapCustomer, Installed, InstallMethod, PartnerAdmin
from shared.settings import Settings
from shared.tls import tls_context

log = logging.getLogger(__name__)

GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
# The delegated Graph scopes the Partner Center consent gives the MSP app in a customer tenant: what the admin's
# calls there need (create and delete its service principal, owners: Application.ReadWrite.All; grant its
# application permissions: AppRoleAssignment.ReadWrite.All; the tenant's domains: Domain.Read.All). CIPP's
# Set-CIPPCPVConsent asks for broader ones (Directory.ReadWrite.All, DelegatedPermissionGrant.ReadWrite.All).
CUSTOMER_DELEGATED_SCOPES = ("Application.ReadWrite.All", "AppRoleAssignment.ReadWrite.All", "Domain.Read.All")
_TIMEOUT = aiohttp.ClientTimeout(total=30)
# Relationships whose access assignments are read at once: one read each, so 200 customers take 200 reads; a few at
# a time keeps the wall time down without a burst Graph would throttle.
_READS_AT_ONCE = 8
_APP_ROLES = {partner_roles.APPLICATION_ADMINISTRATOR, partner_roles.CLOUD_APPLICATION_ADMINISTRATOR}


class _Answer(Exception):
    def __init__(self, status: int, code: str, message: str, retry_after: float | None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message, self.retry_after = status, code, message, retry_after


class GdapPartnerSession:
    """PartnerSession: a signed-in partner admin's changes in customer tenants through GDAP (and Partner Center)."""

    def __init__(self, sign_in: DelegatedSignIn, *, app_id: str, graph_base_url: str, partner_center_url: str,
                 session: aiohttp.ClientSession, ca_bundle: str = "") -> None:
        if sign_in.admin is None:
            raise ValueError("sign in before opening a partner session")
        self.admin: PartnerAdmin = sign_in.admin
        self._sign_in = sign_in
        self._app_id = app_id
        self._graph = graph_base_url.rstrip("/")
        self._partner_center = partner_center_url.rstrip("/")
        self._session = session
        self._tls = tls_context(ca_bundle)
        self._relationships: dict[str, tuple[str, ...]] = {}  # customer tenant -> active relationship ids

    @classmethod
    def for_settings(cls, settings: Settings, sign_in: DelegatedSignIn, session: aiohttp.ClientSession
                     ) -> GdapPartnerSession:
        """The session of a signed-in admin, against the endpoints the settings name."""
        return cls(sign_in, app_id=settings.msp_app_client_id, graph_base_url=settings.graph_base_url,
                   partner_center_url=settings.partner_center_url, session=session, ca_bundle=settings.ca_bundle)

    # PartnerSession

    async def customers(self) -> list[GdapCustomer]:
        try:
            return await self._customers()
        except PartnerRefused as refused:
            if refused.code != "MissingGdapRole":
                raise
            # These reads are in the partner's own tenant: no customer's relationship is missing a role (the fix a
            # customer tenant's 403 gets), the sign-in is missing what Graph asks for them.
            raise PartnerRefused(
                refused.message, code="GdapReadDenied",
                fix=f"Reading the partner tenant's GDAP relationships needs the MSP app's delegated "
                    f"DelegatedAdminRelationship.Read.All, admin-consented in the partner tenant (infra/scripts/"
                    f"create-msp-app.sh grants it; tenantrelationship-list-delegatedadminrelationships.md), and "
                    f"{self.admin.user_principal_name} signed in again to be asked for it; or sign in with a partner "
                    "admin whom Graph lets read them.") from None

    async def _customers(self) -> list[GdapCustomer]:
        home = self.admin.tenant_id
        relationships = await self._pages(home, "/tenantRelationships/delegatedAdminRelationships",
                                          {"$filter": "status eq 'active'"}, "reading the GDAP relationships")
        groups = {g["id"] for g in await self._pages(home, "/me/transitiveMemberOf", {"$select": "id"},
                                                     "reading the admin's groups")}
        active = [r for r in relationships if r.get("status") == "active"]
        bound = asyncio.Semaphore(_READS_AT_ONCE)

        async def assignments_of(relationship: dict[str, Any]) -> list[dict[str, Any]]:
            async with bound:
                return await self._pages(
                    home, f"/tenantRelationships/delegatedAdminRelationships/{quote(relationship['id'])}"
                    "/accessAssignments", None, "reading a relationship's access assignments")

        every = await asyncio.gather(*(assignments_of(r) for r in active))
        found: dict[str, GdapCustomer] = {}
        for relationship, assignments in zip(active, every, strict=True):
            granted = {r["roleDefinitionId"] for r in relationship.get("accessDetails", {}).get("unifiedRoles", [])}
            roles = {r["roleDefinitionId"] for a in assignments if a.get("status") == "active"
                     and a.get("accessContainer", {}).get("accessContainerId") in groups
                     for r in a.get("accessDetails", {}).get("unifiedRoles", [])} & granted
            customer = relationship["customer"]
            tenant_id = str(customer["tenantId"]).lower()
            known = found.get(tenant_id)
            found[tenant_id] = GdapCustomer(
                tenant_id=tenant_id, display_name=str(customer.get("displayName") or tenant_id),
                relationship_ids=(*(known.relationship_ids if known else ()), str(relationship["id"])),
                roles=frozenset(roles | (known.roles if known else frozenset())))
        self._relationships = {t: c.relationship_ids for t, c in found.items()}
        return sorted(found.values(), key=lambda c: (c.display_name.lower(), c.tenant_id))

    async def domains(self, tenant_id: str) -> list[str]:
        rows = await self._pages(tenant_id, "/domains", None, "reading the tenant's domains")
        verified = [d for d in rows if d.get("isVerified")]
        verified.sort(key=lambda d: not d.get("isDefault"))
        return [str(d["id"]) for d in verified]

    async def install_app(self, tenant_id: str, graph_roles: Sequence[str], method: InstallMethod) -> Installed:
        created = False
        if method is InstallMethod.PARTNER_CENTER:
            created = await self._consent(tenant_id)
            sp = await self._consented_service_principal(tenant_id)
            if sp is None and not created:
                # A consent Partner Center still records whose service principal was deleted since (offboarded by
                # hand): withdraw it and consent again, as CIPP's Set-CIPPCPVConsent does.
                await self._withdraw_consent(tenant_id)
                created = await self._consent(tenant_id)
                sp = await self._consented_service_principal(tenant_id)
            if sp is None:
                # Nothing is lost by waiting: the consent is made (a retry answers 409 and goes on from here).
                raise Throttled(f"Partner Center consented the MSP app in tenant {tenant_id} but Graph does not show "
                                "its service principal yet", code="NotYetVisible", retry_after=10.0)
        else:
            sp = await self._service_principal(tenant_id, self._app_id)
            if sp is None:
                sp = await self._create_service_principal(tenant_id)
                created = True
        granted = await self._grant(tenant_id, sp["id"], graph_roles)
        log.info("msp app installed", extra={"tenant": tenant_id, "method": method.value, "sp_created": created,
                                             "granted": list(granted), "admin": self.admin.user_principal_name})
        return Installed(service_principal_id=str(sp["id"]), created=created, roles_granted=granted)

    async def add_owner(self, tenant_id: str, application_object_id: str, principal_id: str) -> bool:
        if principal_id in await self._owners(tenant_id, application_object_id):
            return False
        body = {"@odata.id": f"{GRAPH}/v1.0/directoryObjects/{principal_id}"}
        try:
            await self._call(tenant_id, "POST", f"/applications/{quote(application_object_id)}/owners/$ref", body)
        except _Answer as answer:
            if answer.status == 400 and "already exist" in answer.message:
                return False  # added meanwhile
            raise self._refused(answer, tenant_id, "adding the owner", _APP_ROLES, creating=False) from None
        return True

    async def remove_owner(self, tenant_id: str, application_object_id: str, principal_id: str) -> bool:
        if principal_id not in await self._owners(tenant_id, application_object_id):
            return False
        try:
            await self._call(tenant_id, "DELETE",
                             f"/applications/{quote(application_object_id)}/owners/{quote(principal_id)}/$ref")
        except _Answer as answer:
            if answer.status == 404:
                return False  # removed meanwhile
            raise self._refused(answer, tenant_id, "removing the owner", _APP_ROLES, creating=False) from None
        return True

    async def remove_app(self, tenant_id: str) -> bool:
        sp = await self._service_principal(tenant_id, self._app_id)
        if sp is None:
            return False
        try:
            await self._call(tenant_id, "DELETE", f"/servicePrincipals/{quote(str(sp['id']))}")
        except _Answer as answer:
            if answer.status == 404:
                return False
            raise self._refused(answer, tenant_id, "removing the MSP app", _APP_ROLES, creating=False) from None
        try:
            # Partner Center's record of the consent goes too when there is one; the service principal is what
            # mattered, and a stale record is withdrawn by the next install anyway.
            await self._withdraw_consent(tenant_id)
        except RotationError as error:
            log.warning("partner center consent left in place", extra={"tenant": tenant_id, "code": error.code})
        return True

    @property
    def sign_in(self) -> DelegatedSignIn:
        """The delegated sign-in this session's tokens come from (to keep it in Key Vault when asked)."""
        return self._sign_in

    async def close(self) -> None:
        await self._sign_in.close()

    # Steps

    async def _consent(self, tenant_id: str) -> bool:
        """Partner Center's application consent; True when it was made now, False when it existed (409)."""
        body = {"applicationId": self._app_id, "applicationGrants": [
            {"enterpriseApplicationId": GRAPH_APP_ID, "scope": ",".join(CUSTOMER_DELEGATED_SCOPES)}]}
        url = f"{self._partner_center}/v1/customers/{quote(tenant_id)}/applicationconsents"
        token = await self._sign_in.access_token(self.admin.tenant_id, PARTNER_CENTER)
        try:
            await self._request("POST", url, token, body, partner_center=True)
        except _Answer as answer:
            if answer.status == 409:
                return False
            if answer.status == 403 and "supplied role" in answer.message:
                raise PartnerRefused(
                    f"Partner Center refused the application consent for tenant {tenant_id}: {answer.message}",
                    code="NotAdminAgent",
                    fix=f"Give {self.admin.user_principal_name} the Admin agent role in Partner Center (Account "
                        "settings > User management), or sign in with an admin agent.",
                ) from None
            if answer.status == 403 and "no active" in answer.message:
                raise PartnerRefused(
                    f"Partner Center refused the application consent for tenant {tenant_id}: {answer.message}",
                    code="RelationshipNotActive",
                    fix="The GDAP relationship with this customer is not active (expired, terminated or not yet "
                        "approved): renew it or have the customer approve a new one (Partner Center > Customers > "
                        "Admin relationships), then run again.",
                ) from None
            if answer.status in (403, 404):
                raise PartnerRefused(
                    f"Partner Center refused the application consent for tenant {tenant_id}: {answer.message}",
                    code="ConsentRefused" if answer.status == 403 else "NotACustomer",
                    fix=self._fix(tenant_id, _APP_ROLES, "consent to the MSP app") if answer.status == 403 else
                    "The tenant is not a customer of this partner in Partner Center: check the tenant id.",
                ) from None
            raise self._refused(answer, tenant_id, "the Partner Center consent", _APP_ROLES, creating=True) from None
        return True

    async def _withdraw_consent(self, tenant_id: str) -> None:
        """DELETE Partner Center's application consent of the MSP app (gone already: fine)."""
        url = f"{self._partner_center}/v1/customers/{quote(tenant_id)}/applicationconsents/{quote(self._app_id)}"
        token = await self._sign_in.access_token(self.admin.tenant_id, PARTNER_CENTER)
        try:
            await self._request("DELETE", url, token, partner_center=True)
        except _Answer as answer:
            if answer.status == 404:
                return
            raise self._refused(answer, tenant_id, "withdrawing the Partner Center consent", _APP_ROLES,
                                creating=False) from None

    async def _consented_service_principal(self, tenant_id: str) -> dict[str, Any] | None:
        """The MSP app's service principal after a consent; None when Graph does not show it, or Entra will not
        give the admin a token for the tenant because the app is not there (AADSTS65001)."""
        try:
            return await self._service_principal(tenant_id, self._app_id)
        except PartnerRefused as refused:
            if refused.code == "AppNotConsented":
                return None
            raise

    async def _service_principal(self, tenant_id: str, app_id: str) -> dict[str, Any] | None:
        try:
            return await self._call(tenant_id, "GET", f"/servicePrincipals(appId='{app_id}')",
                                    params={"$select": "id,appId,appRoles"})
        except _Answer as answer:
            if answer.status == 404:
                return None
            raise self._refused(answer, tenant_id, "reading service principals", _APP_ROLES, creating=False) \
                from None

    async def _create_service_principal(self, tenant_id: str) -> dict[str, Any]:
        try:
            return await self._call(tenant_id, "POST", "/servicePrincipals", {"appId": self._app_id})
        except _Answer as answer:
            if answer.status == 409:  # made meanwhile (another run, or a consent)
                found = await self._service_principal(tenant_id, self._app_id)
                if found is not None:
                    return found
            raise self._refused(answer, tenant_id, "creating the MSP app's service principal", _APP_ROLES,
                                creating=True) from None

    async def _grant(self, tenant_id: str, principal_id: str, graph_roles: Sequence[str]) -> tuple[str, ...]:
        """Assign each Graph application permission the service principal lacks; the ones assigned now."""
        graph = await self._service_principal(tenant_id, GRAPH_APP_ID)
        if graph is None:
            raise RotationError(f"Microsoft Graph has no service principal in tenant {tenant_id}", code="NoGraph")
        by_value = {str(r["value"]): str(r["id"]) for r in graph.get("appRoles", [])}
        unknown = [r for r in graph_roles if r not in by_value]
        if unknown:
            raise RotationError(f"Microsoft Graph has no application permission {', '.join(unknown)}",
                                code="UnknownPermission")
        held = {a["appRoleId"] for a in await self._pages(
            tenant_id, f"/servicePrincipals/{quote(principal_id)}/appRoleAssignments", None,
            "reading the MSP app's permissions") if a.get("resourceId") == graph["id"]}
        granted: list[str] = []
        for role in graph_roles:
            if by_value[role] in held:
                continue
            body = {"principalId": principal_id, "resourceId": graph["id"], "appRoleId": by_value[role]}
            try:
                await self._call(tenant_id, "POST", f"/servicePrincipals/{quote(str(graph['id']))}/appRoleAssignedTo",
                                 body)
            except _Answer as answer:
                if answer.status == 400 and "already exists" in answer.message:
                    continue
                raise self._refused(answer, tenant_id, f"granting {role}",
                                    {partner_roles.PRIVILEGED_ROLE_ADMINISTRATOR}, creating=True) from None
            granted.append(role)
        return tuple(granted)

    async def _owners(self, tenant_id: str, application_object_id: str) -> set[str]:
        rows = await self._pages(tenant_id, f"/applications/{quote(application_object_id)}/owners",
                                 {"$select": "id"}, "reading the app's owners")
        return {str(r["id"]) for r in rows}

    # Errors

    def _fix(self, tenant_id: str, roles: set[str], task: str) -> str:
        names = " or ".join(sorted(partner_roles.name(r) for r in roles))
        relationships = self._relationships.get(tenant_id.lower())
        where = f"the GDAP relationship {', '.join(relationships)}" if relationships else \
            "an active GDAP relationship with this customer"
        return (f"Add {names} to {where} and assign it to a security group of {self.admin.user_principal_name}, "
                f"so that the admin may {task}.")

    def _refused(self, answer: _Answer, tenant_id: str, what: str, roles: set[str], *, creating: bool
                 ) -> RotationError:
        text = f"{what} in tenant {tenant_id}: {answer.message}"
        if answer.status == 403:
            return PartnerRefused(text, code="MissingGdapRole", fix=self._fix(tenant_id, roles, what))
        if answer.status == 404:
            return NotFound(text, code=answer.code)
        if answer.status == 429 or (answer.status in (409, 503) and answer.code == "Directory_ConcurrencyViolation"):
            return Throttled(text, code=answer.code, retry_after=answer.retry_after)
        if creating and (answer.status >= 500 or answer.status == 0):
            return Ambiguous(text, code=answer.code)
        if answer.status >= 500 or answer.status == 0:
            return Throttled(text, code=answer.code, retry_after=answer.retry_after)
        return RotationError(text, code=answer.code)

    # HTTP

    async def _pages(self, tenant_id: str, path: str, params: dict[str, str] | None, what: str
                     ) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        url: str | None = self._graph + path
        while url:
            try:
                page = await self._request("GET", url, await self._sign_in.access_token(tenant_id, GRAPH),
                                           params=params)
            except _Answer as answer:
                raise self._refused(answer, tenant_id, what, _APP_ROLES, creating=False) from None
            items += page.get("value") or []
            url, params = page.get("@odata.nextLink"), None
        return items

    async def _call(self, tenant_id: str, method: str, path: str, body: dict[str, Any] | None = None,
                    params: dict[str, str] | None = None) -> dict[str, Any]:
        token = await self._sign_in.access_token(tenant_id, GRAPH)
        return await self._request(method, self._graph + path, token, body, params=params)

    async def _request(self, method: str, url: str, token: str, body: dict[str, Any] | None = None, *,
                       params: dict[str, str] | None = None, partner_center: bool = False) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        try:
            async with self._session.request(method, url, json=body, params=params, headers=headers, ssl=self._tls,
                                             timeout=_TIMEOUT, allow_redirects=False) as response:
                raw = await response.read()
                status, retry_after = response.status, response.headers.get("Retry-After")
        except (aiohttp.ClientError, TimeoutError) as error:
            raise _Answer(0, "NetworkError", type(error).__name__, None) from None
        try:
            doc = json.loads(raw) if raw else {}
        except ValueError:
            doc = {}
        if not isinstance(doc, dict):
            doc = {}
        if status < 400:
            return doc
        if partner_center:
            code, message = str(doc.get("code", status)), str(doc.get("description") or f"HTTP {status}")
        else:
            found = doc.get("error")
            detail: dict[str, Any] = found if isinstance(found, dict) else {}
            code, message = str(detail.get("code") or "GraphError"), str(detail.get("message") or f"HTTP {status}")
        seconds = None
        if retry_after is not None:
            try:
                seconds = float(retry_after)
            except ValueError:
                seconds = None
        raise _Answer(status, code, message, seconds)
