"""Test material made at run time: nothing secret-shaped is ever committed."""

from __future__ import annotations

import secrets


def client_secret(prefix: str = "tst") -> str:
    """A value shaped like an Entra client secret (3 characters, "8Q~", 34 more), random for every run."""
    return prefix[:3].ljust(3, "x") + "8Q~" + secrets.token_urlsafe(32)[:34]
