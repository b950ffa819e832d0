"""The rotator's own verify probe, known in Entra's sign-in log by its request id rather than by its time.

The verify step (and the adoption of a hand-written value) asks for a client-credentials token with the new key;
Entra logs that like any sign-in. Entra's beta signIn resource has `correlationId`, "The identifier the client sends
when sign-in is initiated" (microsoft-graph-docs-contrib api-reference/beta/resources/signin.md), and MSAL sends it
as the `client-request-id` header of the token request (MSAL Python msal/telemetry.py `CLIENT_REQUEST_ID =
'client-request-id'`). The probe sends a request id of its own there, derived from the rotation (so a probe re-run
after a crash sends the same one); the rotation's row records it per key (RotationState.probes), and the sign-in
evidence sets aside every sign-in with a recorded probe id, however Entra stamped its time.

A rotation verified before this change has no recorded probe id: its new key falls back to the time cut-off
(shared.sign_in_proof.SELF_SIGN_IN_MARGIN). No secret goes into the id: only the rotation's id and the key's id.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime

from shared.domain import CredentialSignIns

# The request header Entra's token endpoint takes as the sign-in's correlationId (MSAL's name for it). azure-core's
# RequestIdPolicy would send `x-ms-client-request-id`, a name Entra does not document for the token endpoint.
HEADER = "client-request-id"
# A fixed namespace: the same rotation and key always give the same id (uuid5 is a hash, not a secret).
_NAMESPACE = uuid.UUID("6f1c2d4e-8a5b-4c3d-9e7f-0a1b2c3d4e5f")


def request_id(rotation_id: str, key_id: str = "") -> str:
    """The probe's request id for one rotation (and key, where known): a GUID, as Entra's correlation ids are."""
    return str(uuid.uuid5(_NAMESPACE, f"verify-probe:{rotation_id}:{key_id}"))


def adoption_id(version_id: str) -> str:
    """The probe's request id when a hand-written Key Vault version is tried (before any rotation id exists)."""
    return str(uuid.uuid5(_NAMESPACE, f"adopt-probe:{version_id}"))


def first_sign_in(seen: CredentialSignIns, identified: bool) -> tuple[datetime | None, bool]:
    """A credential's first logged sign-in and whether it was the rotator's probe, for a key whose probe id is
    recorded (`identified`: the probe's own sign-ins are kept apart in `probe_sign_in`). For any other key: the
    first sign-in as read, and False (the caller judges it by time)."""
    if not identified or seen.probe_sign_in is None:
        return seen.first_sign_in, False
    if seen.first_sign_in is not None and seen.first_sign_in < seen.probe_sign_in:
        return seen.first_sign_in, False
    return seen.probe_sign_in, True


def recorded(probes: Mapping[str, str]) -> frozenset[str]:
    """The request ids the sign-in read sets aside: every probe id the row records."""
    return frozenset(v.lower() for v in probes.values() if v)
