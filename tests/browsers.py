"""What every browser test needs before it starts: Debian's Chromium (CI must have it), and Azurite for the tests
that serve the app."""

from __future__ import annotations

import os

import pytest

from scripts.browser import chromium_missing


def require_chromium(*, azurite: bool = False) -> None:
    """Skip the test when Chromium is missing (fail it in CI, where the browser tests must run); with `azurite`,
    skip it too when Azurite is not running (scripts/with-azurite.sh starts it)."""
    missing = chromium_missing()
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the browser tests must run in CI: {missing}")
        pytest.skip(f"no browser: {missing}")
    if azurite and not os.environ.get("STATE_TABLES_CONNECTION_STRING"):
        pytest.skip("needs Azurite: run through scripts/with-azurite.sh (make test does)")
