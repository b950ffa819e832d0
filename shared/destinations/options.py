"""Checks shared by every destination kind's option validation.

A destination's options are stored in the registry (Tables) and shown to operators, so they may hold Key Vault
secret *names* but never a secret value: these checks refuse values that look like one.
"""

from __future__ import annotations

import base64
import binascii
import re
import unicodedata
from collections.abc import Iterable, Mapping
from urllib.parse import unquote

# Key Vault secret names: 1-127 letters, digits and dashes (\A...\Z: `$` would also accept a trailing newline).
KEY_VAULT_NAME = re.compile(r"\A[0-9a-zA-Z-]{1,127}\Z")
_CREDENTIAL_WORDS = (
    r"password|passwd|passphrase|pwd|pass|secret|client_?secret|token|access_?token|refresh_?token|id_?token|"
    r"api_?key|apikey|api-key|x-api-key|auth|authorization|credentials?|private_?key|account_?key|sig|signature|"
    r"shared_?access_?key|sas"
)
# The shapes a pasted secret usually has. Checked on the value as written and after normalisation (NFKC, zero-width
# and other format characters removed, percent-encoding and backslash escapes undone), so a secret split by a
# zero-width space or percent-encoded is still seen.
_SECRET_SHAPES = (
    # Entra ID client secrets: 3 characters, a digit, "Q~", then 31-34 more (learn.microsoft.com: new secrets).
    re.compile(r"[A-Za-z0-9_~.\-]{3}\dQ~[A-Za-z0-9_~.\-]{20,}"),
    # HTTP auth header values anywhere in a value ("Authorization: Bearer ...", "Basic dXNlcjpwdw=="); a scheme's
    # name followed by a word ("Bearer Logistics", "Digest Systems Ltd") is a name, not a credential.
    re.compile(r"\bbearer\s+(?:[A-Za-z0-9\-._~+/]*[0-9\-._~+/][A-Za-z0-9\-._~+/]*={0,2}(?![A-Za-z0-9\-._~+/=])"
               r"|[A-Za-z]{20,})", re.IGNORECASE),
    re.compile(r"\b(negotiate|ntlm|sharedaccesssignature)\s+[A-Za-z0-9+/]{20,}", re.IGNORECASE),
    re.compile(r"\bdigest\s+[a-z]+\s*=", re.IGNORECASE),
    re.compile(r"\bauthorization\s*[:=]\s*\S", re.IGNORECASE),
    # JWTs.
    re.compile(r"eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}"),
    # Connection strings and SAS: AccountKey=..., SharedAccessKey=..., Password=..., sig=...
    re.compile(rf"(^|[;&?#\s])({_CREDENTIAL_WORDS})\s*=\s*[^;&\s]", re.IGNORECASE),
    # Credential JSON (or Python-ish) objects: {"user": .., "pwd": ..} (not a quoted word in a sentence: "the
    # 'Secret', then Save").
    re.compile(rf"[\"']({_CREDENTIAL_WORDS}|user|username)[\"']\s*[:=]", re.IGNORECASE),
    # PEM blocks (keys, certificates: never a name).
    re.compile(r"-----BEGIN [A-Z0-9 ]+-----"),
    # Webhook URLs whose path is the credential (Slack, Teams' Office 365 connectors, Discord).
    re.compile(r"hooks\.slack\.com/(services|workflows|triggers)/|\.webhook\.office\.com/webhook|"
               r"discord(app)?\.com/api/webhooks/", re.IGNORECASE),
    # Hex keys and tokens (32+ hex digits in one run: a GUID has at most 12).
    re.compile(r"(?<![0-9A-Fa-f])[0-9A-Fa-f]{32,}(?![0-9A-Fa-f])"),
)
_ESCAPE = re.compile(r"\\u([0-9a-fA-F]{4})|\\x([0-9a-fA-F]{2})")
_TOKEN_SPLIT = re.compile(r"[\s,;&?#:'\"{}()\[\]<>|]+")


def normalised(value: str) -> str:
    """The text a human or a server would read: NFKC, without format characters (zero-width spaces, joiners, BOM),
    with percent-encoding and \\uXXXX escapes undone (repeatedly, for double encoding)."""
    text = value
    for _ in range(3):
        decoded = unquote(_ESCAPE.sub(lambda m: chr(int(m.group(1) or m.group(2), 16)), text))
        decoded = unicodedata.normalize("NFKC", decoded)
        decoded = "".join(c for c in decoded if unicodedata.category(c) != "Cf")
        if decoded == text:
            break
        text = decoded
    return text


_BASIC = re.compile(r"\bbasic\s+([A-Za-z0-9+/]{4,}={0,2})(?![A-Za-z0-9+/=])", re.IGNORECASE)


def _basic_credentials(text: str) -> bool:
    """`Basic <base64 of user:password>` (a word after "basic" that is not base64 of a pair is just a word)."""
    for match in _BASIC.finditer(text):
        try:
            decoded = base64.b64decode(match.group(1), validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            continue
        if ":" in decoded:
            return True
    return False


# A token cut into the pieces names are made of: words (capitalised or not), acronyms, numbers.
_SEGMENT = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")
_WORD = re.compile(r"[A-Z]?[a-z]{3,}")
_VOWELS = frozenset("aeiouy")
_CONSONANTS_5 = re.compile(r"[^aeiouy]{5}")
_VOWELS_4 = re.compile(r"[aeiouy]{4}")


def _word(segment: str) -> bool:
    """A piece that reads as a word (Contoso, Proofpoint, Tenant, portal): 3+ lower-case letters after an optional
    capital, a fifth of them vowels or more, no five consonants or four vowels in a row."""
    low = segment.lower()
    return (_WORD.fullmatch(segment) is not None and sum(c in _VOWELS for c in low) * 5 >= len(low)
            and _CONSONANTS_5.search(low) is None and _VOWELS_4.search(low) is None)


def _random_token(token: str) -> bool:
    """A long token of both cases without the shape of a name: a random key (base64, base64url, an API key).

    MSPs name things ContosoProofpointApiKey2026 and Vircom-Portal-Auth-Key-Tenant-A1: mostly words, in few pieces.
    Random text of the same alphabet falls into many short pieces, few of them words. Measured on generated keys
    (`secrets`), a 24-character one passes for a name about once in a thousand, a 32-character one a few times in
    100,000, a 43-character one (32 bytes, base64url) about once in 300,000; tests/destinations/test_secret_shapes.py
    holds the table of names and secret shapes."""
    if len(token) < 24 or _KEY_ALPHABET.fullmatch(token) is None:
        return False
    if not any(c.islower() for c in token) or not any(c.isupper() for c in token):
        return _single_case_key(token)
    pieces = [p for p in re.split(r"[^A-Za-z0-9]+", token) if p]
    jumbled = [p for p in pieces if len(_SEGMENT.findall(p)) > 2]
    if len(pieces) >= 3 and (not jumbled or (len(jumbled) == 1 and len(jumbled[0]) <= 8 and pieces[-1] in jumbled)):
        # Short pieces between separators (KV-PPE-Contoso-EU1-2026-Q4), perhaps ending in a short tag of its own
        # (WingtipToys-PPE-Key-b7e2c9d4): named by hand; base64url has a separator in about 1 of 32 characters,
        # so its pieces are long and mixed.
        return False
    length = sum(map(len, pieces))
    segments = [s for p in pieces for s in _SEGMENT.findall(p)]
    worded = sum(len(s) for s in segments if _word(s)) / length
    density = len(segments) / length
    if length >= 32:  # more text, more evidence: a name this long is made of words
        return not (worded >= 0.6 and density <= 0.3)
    return not (worded >= 0.5 and density <= 0.32)


_KEY_ALPHABET = re.compile(r"[A-Za-z0-9+/=_-]+")
_DIGIT_RUN = re.compile(r"[0-9]+")


def _single_case_key(token: str) -> bool:
    """A long token of one case, letters and digits interleaved: base32 (an Azure DevOps token, a TOTP seed) or a
    lower-case random key. A name of one case keeps its numbers together (kv-ppe-northwind-eu1-2026); 32 random
    characters of base32 or base36 hold about seven separate runs of digits. Measured with `secrets`: three runs or
    more in 99 % of 32-character keys; a 52-character base32 key passes for a name about 1 in 3,000 times."""
    body = token.rstrip("=")
    runs = len(_DIGIT_RUN.findall(body))
    return len(body) >= 32 and body.isalnum() and (runs >= 3 or (len(body) >= 48 and runs >= 2))
_PATH_SPLIT = re.compile(r"[/.@\\]+")


def looks_like_secret(value: str) -> bool:
    """True when a value has the shape of a credential rather than of a name, URL or sentence."""
    for form in {value, normalised(value)}:
        if any(shape.search(form) for shape in _SECRET_SHAPES) or _basic_credentials(form):
            return True
        tokens = _TOKEN_SPLIT.split(form)
        if _random_token(form.strip()) or any(_random_token(t) for t in tokens):
            return True
        # A key inside a URL path or a dotted name (hooks.example/services/T0/B0/<key>): its pieces too.
        if any(_random_token(piece) for t in tokens for piece in _PATH_SPLIT.split(t)):
            return True
    return False


def has_control_characters(value: str) -> bool:
    """Control, format (zero-width) or line/paragraph separator characters: never part of a name, URL or option."""
    return any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in value)


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
        if has_control_characters(key) or has_control_characters(value) or value != value.strip():
            raise ValueError(f"{kind} destination: option {key!r} must be one line without control characters or "
                             "surrounding spaces")
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
    if not KEY_VAULT_NAME.fullmatch(value):
        raise ValueError(
            f"{kind} destination: option {key!r} must be the name of a Key Vault secret (1-127 letters, digits "
            "and hyphens), not the secret itself"
        )
