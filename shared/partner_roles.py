"""Entra built-in roles that matter when the rotator works in a customer tenant through GDAP.

Template ids from Microsoft's "Microsoft Entra built-in roles" reference (MicrosoftDocs/entra-docs,
docs/identity/role-based-access-control/permissions-reference.md); they are the same in every tenant.
Which role each step needs is decided (with its source) where the step is made, not here.
"""

from __future__ import annotations

GLOBAL_ADMINISTRATOR = "62e90394-69f5-4237-9190-012177145e10"
PRIVILEGED_ROLE_ADMINISTRATOR = "e8611ab8-c189-46e8-94e1-60213ab1f814"
APPLICATION_ADMINISTRATOR = "9b895d92-2cd3-44c7-9d02-a6ac2d5ea5c3"
CLOUD_APPLICATION_ADMINISTRATOR = "158c047a-c907-4556-b7ef-446551a6b5f7"
DIRECTORY_READERS = "88d8e3e3-8f55-4a1e-953a-9b9898b8876b"

NAMES = {
    GLOBAL_ADMINISTRATOR: "Global Administrator",
    PRIVILEGED_ROLE_ADMINISTRATOR: "Privileged Role Administrator",
    APPLICATION_ADMINISTRATOR: "Application Administrator",
    CLOUD_APPLICATION_ADMINISTRATOR: "Cloud Application Administrator",
    DIRECTORY_READERS: "Directory Readers",
}


def name(role_template_id: str) -> str:
    """The role's display name, or its id when it is not one of these."""
    return NAMES.get(role_template_id, role_template_id)
