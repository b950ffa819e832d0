"""The partner relationship of the MSP tenant: GDAP relationships with their roles and access assignments, and the
application consents Partner Center made in customer tenants (sandbox/README.md, "The partner relationship").

A GDAP relationship grants the partner tenant a set of Entra roles (`accessDetails.unifiedRoles`) in one customer
tenant; its access assignments give some of those roles to partner security groups. A partner user holds a role in
the customer tenant when the relationship is active and an active access assignment to one of the user's groups
names the role (Microsoft Graph: delegatedAdminRelationship, delegatedAdminAccessAssignment; Partner Center
"Introduction to granular delegated admin privileges (GDAP)").
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sandbox import seeddates
from sandbox.world import PARTNER_GROUPS, Tenant, iso, role_template_id

if TYPE_CHECKING:
    from sandbox.world import World

# delegatedAdminRelationshipStatus (Graph v1.0 resource page); only `active` grants access.
STATUSES = ("activating", "active", "approvalPending", "approved", "created", "expired", "expiring", "terminated",
            "terminationRequested", "terminating")
APP_ADMIN_GROUP, PRIVILEGED_GROUP = (g for g, _ in PARTNER_GROUPS)


@dataclass
class AccessAssignment:
    id: str
    group_id: str
    roles: list[str]
    status: str = "active"  # delegatedAdminAccessAssignmentStatus: pending, active, deleting, deleted, error


@dataclass
class Relationship:
    id: str
    display_name: str
    customer_tenant_id: str
    customer_name: str
    status: str
    roles: list[str]
    created: dt.datetime
    end: dt.datetime
    assignments: list[AccessAssignment] = field(default_factory=list)

    def active(self, now: dt.datetime) -> bool:
        """Active and not past its end (an expired relationship grants nothing, whatever its stored status)."""
        return self.status == "active" and now < self.end

    def status_at(self, now: dt.datetime) -> str:
        return "expired" if self.status == "active" and now >= self.end else self.status

    def to_graph(self, now: dt.datetime) -> dict[str, Any]:
        return {
            "@odata.type": "#microsoft.graph.delegatedAdminRelationship",
            "id": self.id,
            "displayName": self.display_name,
            "duration": f"P{max((self.end - self.created).days, 1)}D",
            "customer": {"tenantId": self.customer_tenant_id, "displayName": self.customer_name},
            "accessDetails": {"unifiedRoles": [{"roleDefinitionId": r} for r in self.roles]},
            "status": self.status_at(now),
            "autoExtendDuration": "PT0S",
            "createdDateTime": iso(self.created),
            "lastModifiedDateTime": iso(self.created),
            "activatedDateTime": iso(self.created),
            "endDateTime": iso(self.end),
        }


@dataclass
class Consent:
    """An application consent Partner Center made in a customer tenant (applicationconsents)."""

    application_id: str
    display_name: str
    grants: list[dict[str, str]]  # [{enterpriseApplicationId, scope}] as posted


class GdapState:
    """The partner tenant's GDAP relationships and Partner Center's application consents, seeded under `gdap`."""

    def __init__(self, world: World) -> None:
        self._world = world
        self.relationships: dict[str, Relationship] = {}
        self.consents: dict[tuple[str, str], Consent] = {}  # (customer tenant id, appId)

    def reset(self) -> None:
        self.relationships = {}
        self.consents = {}

    def seed(self, section: dict[str, Any]) -> None:
        now = self._world.now()
        for doc in section.get("relationships", []):
            customer = doc["customer"]
            tenant_id = customer["tenantId"]
            tenant = self._world.directory.tenants.get(tenant_id)
            if tenant is None:
                tenant = Tenant(tenant_id, customer.get("displayName", tenant_id))
                self._world.directory.tenants[tenant_id] = tenant
            status = doc.get("status", "active")
            if status not in STATUSES:
                raise ValueError(f"relationship status must be one of {STATUSES}")
            roles = [role_template_id(r) for r in doc.get("roles", [])]
            relationship = Relationship(
                id=doc.get("id") or f"{uuid.uuid4()}-{uuid.uuid4()}",
                display_name=doc.get("displayName", f"GDAP {tenant.name}"),
                customer_tenant_id=tenant_id,
                customer_name=customer.get("displayName", tenant.name),
                status=status,
                roles=roles,
                created=seeddates.resolve(doc["createdDateTime"], now) if doc.get("createdDateTime")
                else now - dt.timedelta(days=30),
                end=seeddates.resolve(doc["endDateTime"], now) if doc.get("endDateTime")
                else now + dt.timedelta(days=700),
            )
            for item in doc.get("accessAssignments", []):
                item_roles = [role_template_id(r) for r in item.get("roles", [])]
                if not set(item_roles) <= set(roles):
                    # Graph refuses an access assignment naming a role the relationship does not grant.
                    raise ValueError("an access assignment may only name roles of its relationship")
                relationship.assignments.append(AccessAssignment(
                    item.get("id") or str(uuid.uuid4()), item["group"], item_roles, item.get("status", "active")))
            self.relationships[relationship.id] = relationship

    def dump(self) -> dict[str, Any]:
        now = self._world.now()
        return {
            "relationships": [{**r.to_graph(now), "accessAssignments": [
                {"id": a.id, "group": a.group_id, "roles": a.roles, "status": a.status} for a in r.assignments]}
                for r in self.relationships.values()],
            "applicationConsents": [{"customerTenantId": t, "applicationId": c.application_id,
                                     "applicationGrants": c.grants} for (t, _), c in self.consents.items()],
        }

    # What a partner user may do in a customer tenant

    def groups_of(self, user_id: str) -> set[str]:
        partner = self._world.directory.tenants[self._world.msp_tenant_id]
        return {g.id for g in partner.groups.values() if user_id in g.members}

    def active_relationships(self, customer_tenant_id: str) -> list[Relationship]:
        now = self._world.now()
        return [r for r in self.relationships.values()
                if r.customer_tenant_id == customer_tenant_id and r.active(now)]

    def roles_in(self, customer_tenant_id: str, user_id: str) -> set[str]:
        """The role template ids a partner user holds in a customer tenant through active relationships."""
        groups = self.groups_of(user_id)
        return {role for r in self.active_relationships(customer_tenant_id) for a in r.assignments
                if a.status == "active" and a.group_id in groups for role in a.roles}


def customers_seed(count: int, *, start: int = 1, missing_role_every: int = 0,
                   proofpoint_app: bool = True) -> dict[str, Any]:
    """A seed document of `count` customer tenants, each with an active GDAP relationship granting Application
    Administrator (to the "GDAP App Admins" group) and Privileged Role Administrator (to "GDAP Privileged Role
    Admins"), a verified domain `customerNNNN.example`, and (by default) a Proofpoint Essentials app registration.
    Every `missing_role_every`-th customer's relationship lacks Privileged Role Administrator. Ids are stable: the
    same number always names the same tenant."""
    tenants: list[dict[str, Any]] = []
    relationships: list[dict[str, Any]] = []
    for n in range(start, start + count):
        tenant_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"sandbox-gdap-customer-{n}"))
        name = f"Customer {n:04d}"
        tenant: dict[str, Any] = {"id": tenant_id, "name": name, "domains": [f"customer{n:04d}.example"]}
        if proofpoint_app:
            tenant["applications"] = [{
                "appId": str(uuid.uuid5(uuid.NAMESPACE_URL, f"sandbox-gdap-proofpoint-{n}")),
                "displayName": "Proofpoint Essentials",
                "passwordCredentials": [{"displayName": "PPE sync", "endDateTime": "+200d"}],
            }]
        tenants.append(tenant)
        lacks_privileged = missing_role_every > 0 and n % missing_role_every == 0
        roles = ["Application Administrator"] if lacks_privileged else [
            "Application Administrator", "Privileged Role Administrator"]
        assignments = [{"group": APP_ADMIN_GROUP, "roles": ["Application Administrator"]}]
        if not lacks_privileged:
            assignments.append({"group": PRIVILEGED_GROUP, "roles": ["Privileged Role Administrator"]})
        relationships.append({
            "id": f"{uuid.uuid5(uuid.NAMESPACE_URL, f'sandbox-gdap-relationship-{n}')}-{tenant_id}",
            "displayName": f"MSP onboarding {name}", "customer": {"tenantId": tenant_id, "displayName": name},
            "status": "active", "roles": roles, "accessAssignments": assignments,
        })
    return {"tenants": tenants, "gdap": {"relationships": relationships}}
