"""The dashboard's data comes through the HTTP functions: the API tests' fixtures (sandbox + Azurite world, `api`)."""

from tests.api.conftest import api, world

__all__ = ["api", "world"]
