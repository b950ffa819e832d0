"""The sandbox tests of bulk onboarding use the rotation tests' `world` (sandbox + Azurite, per-test tables)."""

from tests.rotation import conftest as rotation

world = rotation.world
