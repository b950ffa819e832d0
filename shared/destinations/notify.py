"""Notify-only destinations (kind "notify-only"): a human pastes the secret and acknowledges it later."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from shared.destinations.http import iso_utc, rejected_config
from shared.destinations.options import check_options
from shared.domain import DestinationConfig
from shared.errors import RotationError
from shared.ports import Delivery

logger = logging.getLogger(__name__)

OPTIONS = ("instructions",)
DEFAULT_INSTRUCTIONS = (
    "Proofpoint Essentials: User Management > Azure Active Directory Sync, paste it as the key and Save"
)
AWAITING = "AwaitingAcknowledgement"
_KIND = "notify-only"
_MAX_INSTRUCTIONS = 1000


def validate_notify(options: Mapping[str, str]) -> None:
    """Raise ValueError unless the options are at most a short `instructions` text."""
    check_options(_KIND, options, required=(), allowed=OPTIONS)
    if len(options.get("instructions", "")) > _MAX_INSTRUCTIONS:
        raise ValueError(f"{_KIND} destination: instructions must be at most {_MAX_INSTRUCTIONS} characters")


class NotifyOnlyDestination:
    """Never confirms by itself: tells a human where the value is and where it goes, until acknowledged."""

    async def deliver(self, config: DestinationConfig, delivery: Delivery) -> None:
        """Always raise AwaitingAcknowledgement; the message names the Key Vault secret, never its value."""
        try:
            validate_notify(config.options)
        except ValueError as error:
            raise rejected_config(config, error) from None
        instructions = config.options.get("instructions") or DEFAULT_INSTRUCTIONS
        who = f" of {delivery.customer}" if delivery.customer else ""
        where = f"Key Vault secret {delivery.secret_name!r}" if delivery.secret_name else "Key Vault"
        if delivery.version:
            where += f" version {delivery.version}"
        message = (
            f"{config.name}: a new client secret{who} (tenant {delivery.tenant_id}, application {delivery.app_id}, "
            f"key {delivery.key_id}, expires {iso_utc(delivery.expires)[:10]}) is in {where}. "
            f"Copy it from there into {instructions}; then acknowledge destination {config.name!r} for key "
            f"{delivery.key_id}."
        )
        logger.info(
            "destination push",
            extra={"destination": config.name, "kind": _KIND, "tenant_id": delivery.tenant_id,
                   "app_id": delivery.app_id, "key_id": delivery.key_id, "outcome": "awaiting-human",
                   "error_code": AWAITING},
        )
        raise RotationError(message, code=AWAITING)
