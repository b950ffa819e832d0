"""Destination adapters: where a rotated secret must be delivered."""

from __future__ import annotations

from shared.adapters.keyvault import KeyVaultSecretStore
from shared.ports import Destination
from shared.settings import Settings


def build_destinations(settings: Settings, secrets: KeyVaultSecretStore) -> dict[str, Destination]:
    """The destination adapters by kind ("proofpoint", "http", "notify-only")."""
    return {}
