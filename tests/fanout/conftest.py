"""Fan-out tests drive the function app like the API tests (sandbox + Azurite world, `api`) and the rotator."""

from tests.api.conftest import api, world
from tests.rotation.conftest import rotator

__all__ = ["api", "rotator", "world"]
