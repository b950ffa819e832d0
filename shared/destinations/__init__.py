"""Destination adapters: where a rotated secret must be delivered, and the validation of their options."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from shared.destinations.http import PUSH_THREADS, HttpDestination, validate_http
from shared.destinations.notify import NotifyOnlyDestination, validate_notify
from shared.destinations.proofpoint import ProofpointDestination, validate_proofpoint
from shared.destinations.transport import SessionPool
from shared.domain import DESTINATION_NAME, DestinationConfig
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


def validate_destination(config: DestinationConfig, allowed_hosts: frozenset[str] = frozenset()) -> None:
    """Raise ValueError with a clear message unless the registry may store this destination; a URL's host must be
    public unless listed in `allowed_hosts` (DESTINATION_ALLOWED_HOSTS, the local sandbox only)."""
    # Acknowledgements are keyed by the destination's name, and operators type it into the acknowledge call.
    if not isinstance(config.name, str) or not DESTINATION_NAME.fullmatch(config.name):
        raise ValueError(
            "destination name must be 1-64 letters, digits, inner spaces, '.', '_' or '-', starting and ending with "
            "a letter or digit"
        )
    validate = KINDS.get(config.kind)
    if validate is None:
        raise ValueError(f"destination {config.name!r}: unknown kind {config.kind!r} (one of {', '.join(KINDS)})")
    if not isinstance(config.options, Mapping):
        raise ValueError(f"destination {config.name!r}: options must be an object of strings")
    try:
        if validate is validate_http:
            validate_http(config.options, allowed_hosts)
        else:
            validate(config.options)
    except ValueError as error:
        raise ValueError(f"destination {config.name!r}: {error}") from None


def build_destinations(settings: Settings, secrets: SecretStore) -> dict[str, Destination]:
    """The destination adapters by kind ("proofpoint", "http", "notify-only")."""
    verify: str | bool = settings.ca_bundle or True
    allowed = settings.destination_allowed_hosts
    return {
        # Both reach the network only through sessions that refuse non-public addresses (transport.py).
        # Proofpoint's calls of a pass share pooled connections (one TLS handshake per stack, not per call).
        "proofpoint": ProofpointDestination(secrets, base_url=settings.proofpoint_base_url, verify=verify,
                                            session_factory=SessionPool(allowed, pool_size=PUSH_THREADS)),
        "http": HttpDestination(secrets, verify=verify, allowed_hosts=allowed),
        "notify-only": NotifyOnlyDestination(),
    }
