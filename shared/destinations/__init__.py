"""Destination adapters: where a rotated secret must be delivered, and the validation of their options."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from shared.destinations.http import HttpDestination, validate_http
from shared.destinations.notify import NotifyOnlyDestination, validate_notify
from shared.destinations.proofpoint import ProofpointDestination, validate_proofpoint
from shared.domain import DestinationConfig
from shared.ports import Destination, SecretStore
from shared.settings import Settings

__all__ = [
    "KINDS",
    "HttpDestination",
    "NotifyOnlyDestination",
    "ProofpointDestination",
    "build_destinations",
    "validate_destination",
]

KINDS: Mapping[str, Callable[[Mapping[str, str]], None]] = {
    "proofpoint": validate_proofpoint,
    "http": validate_http,
    "notify-only": validate_notify,
}
# Acknowledgements are keyed by the destination's name, and operators type it into the acknowledge call.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.\-]{0,63}$")


def validate_destination(config: DestinationConfig) -> None:
    """Raise ValueError with a clear message unless the registry may store this destination."""
    if not isinstance(config.name, str) or not _NAME.match(config.name):
        raise ValueError(
            f"destination name {config.name!r} must be 1-64 letters, digits, spaces, '.', '_' or '-'"
        )
    validate = KINDS.get(config.kind)
    if validate is None:
        raise ValueError(f"destination {config.name!r}: unknown kind {config.kind!r} (one of {', '.join(KINDS)})")
    if not isinstance(config.options, Mapping):
        raise ValueError(f"destination {config.name!r}: options must be an object of strings")
    try:
        validate(config.options)
    except ValueError as error:
        raise ValueError(f"destination {config.name!r}: {error}") from None


def build_destinations(settings: Settings, secrets: SecretStore) -> dict[str, Destination]:
    """The destination adapters by kind ("proofpoint", "http", "notify-only")."""
    verify: str | bool = settings.ca_bundle or True
    return {
        "proofpoint": ProofpointDestination(secrets, base_url=settings.proofpoint_base_url, verify=verify),
        "http": HttpDestination(secrets, verify=verify),
        "notify-only": NotifyOnlyDestination(),
    }
