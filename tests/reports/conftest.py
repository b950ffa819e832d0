"""Report tests drive the function app like the API tests (sandbox + Azurite world, `api`)."""

from tests.api.conftest import api, world

__all__ = ["api", "world"]
