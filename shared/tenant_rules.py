"""What a customer tenant's own rules mean for a target, in words a human can act on (issue 9: ownership,
app-management policies, secrets made elsewhere). Pure: messages and alert details from plain data."""

from __future__ import annotations

from shared.domain import Application, Credential
from shared.ports import Principal


def not_owner_message(app: Application, principal: Principal | None) -> str:
    """Why the rotator cannot write the app, and which service principal an admin must add as its owner."""
    who = principal.describe() if principal else "the rotator's service principal"
    return (
        f"the rotator cannot change app '{app.display_name}' (object id {app.object_id}): {who} is not among its "
        "owners; an admin of the tenant must add it as an owner (POST /applications/"
        f"{app.object_id}/owners/$ref)"
    )


def owner_details(principal: Principal | None) -> dict[str, str]:
    """Alert details naming the service principal to add as owner."""
    if principal is None:
        return {}
    return {"owner_to_add": principal.object_id, "owner_app_id": principal.app_id,
            "owner_name": principal.display_name}


def policy_blocked_message(graph_message: str) -> str:
    return (
        f"the tenant's app-management policy refuses client secrets on this app: \"{graph_message}\"; an admin must "
        "exempt the Proofpoint app (an appManagementPolicy with passwordAddition disabled), as Proofpoint takes a "
        "client secret only"
    )


def no_lifetime_left_message(refused_days: int, renew_before_days: int, graph_message: str) -> str:
    return (
        f"the tenant's app-management policy refused a {refused_days}-day secret (\"{graph_message}\") and allows "
        f"no lifetime the rotator may use: at least the renew window ({renew_before_days} days) plus a margin; "
        "lower the target's renewBeforeDays or lengthen the policy's passwordLifetime"
    )


def lifetime_capped_message(asked_days: int, made_days: int) -> str:
    return (
        f"the tenant's app-management policy refused a {asked_days}-day secret; the rotator made one of "
        f"{made_days} days instead (set the target's lifetimeDays to {made_days} to skip the refused attempts)"
    )


def foreign_message(credential: Credential) -> str:
    """A newer secret the rotator did not make: kept, not fought."""
    made = credential.start.date().isoformat() if credential.start else "an unknown date"
    return (
        f"a newer secret that the rotator did not make is on the app: key {credential.key_id} "
        f"('{credential.display_name}', made {made}, expires {credential.end.date().isoformat()}), e.g. by the MSP "
        "portal's FIX or a person; the rotator keeps it, never removes it, and rotates again only when it is due"
    )


def foreign_details(credential: Credential) -> dict[str, str]:
    return {"key_id": credential.key_id, "display_name": credential.display_name,
            "expires": credential.end.isoformat()}
