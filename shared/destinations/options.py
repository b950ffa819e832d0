"""Checks shared by every destination kind's option validation.

A destination's options are stored in the registry (Tables) and shown to operators, so they may hold Key Vault
secret *names* but never a secret value: these checks refuse values that look like one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

KEY_VAULT_NAME = re.compile(r"^[0-9a-zA-Z-]{1,127}$")
# Entra client secrets (3 chars, a digit, "Q~", then 31-34 chars), bearer/basic header values, JWTs,
# credential JSON and PEM keys: the shapes a pasted secret usually has.
_SECRET_SHAPES = (
    re.compile(r"[A-Za-z0-9_~.\-]{3}\dQ~[A-Za-z0-9_~.\-]{20,}"),
    re.compile(r"^\s*(bearer|basic|sharedaccesssignature)\s+\S", re.IGNORECASE),
    re.compile(r"eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}"),
    re.compile(r"\"(password|secret|client_secret|token)\"\s*:", re.IGNORECASE),
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
)


def looks_like_secret(value: str) -> bool:
    """True when a value has the shape of a credential rather than of a name, URL or sentence."""
    if any(shape.search(value) for shape in _SECRET_SHAPES):
        return True
    # A long token of mixed case and digits without separators reads as a random key, not a name.
    return (
        len(value) >= 24
        and re.fullmatch(r"[A-Za-z0-9+/=_]+", value) is not None
        and any(c.islower() for c in value)
        and any(c.isupper() for c in value)
        and any(c.isdigit() for c in value)
    )


def check_options(
    kind: str, options: Mapping[str, object], required: Iterable[str], allowed: Iterable[str],
    allowed_prefixes: Iterable[str] = (),
) -> None:
    """Every option a string, none unknown, none missing, none carrying a secret value."""
    allowed_set = set(allowed) | set(required)
    prefixes = tuple(allowed_prefixes)
    for key, value in options.items():
        if key not in allowed_set and not (prefixes and key.startswith(prefixes)):
            known = ", ".join(sorted(allowed_set) + [f"{p}*" for p in prefixes])
            raise ValueError(f"{kind} destination: unknown option {key!r} (known: {known})")
        if not isinstance(value, str):
            raise ValueError(f"{kind} destination: option {key!r} must be a string")
    missing = [key for key in required if not options.get(key)]
    if missing:
        raise ValueError(f"{kind} destination: missing option(s) {', '.join(missing)}")
    for key, value in options.items():
        if isinstance(value, str) and looks_like_secret(value):
            # The message names the option only: echoing the value would leak what it refuses to store.
            raise ValueError(
                f"{kind} destination: option {key!r} looks like a secret value; store the secret in Key Vault "
                "and give its name instead"
            )


def check_secret_name(kind: str, key: str, value: str) -> None:
    """The option names a Key Vault secret (the value itself stays in the vault)."""
    if not KEY_VAULT_NAME.match(value):
        raise ValueError(
            f"{kind} destination: option {key!r} must be the name of a Key Vault secret (1-127 letters, digits "
            "and hyphens), not the secret itself"
        )
