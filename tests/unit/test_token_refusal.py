"""How the token probe reads Entra's refusals (azure-identity's ClientAuthenticationError): the AADSTS code and
Entra's first sentence; an answer that says nothing about the secret (a server error, a transient code) is no
refusal at all. Only AADSTS7000215 counts as "not propagated yet"."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from azure.core.exceptions import ClientAuthenticationError

from shared.adapters.identity import refusal_of
from shared.domain import TokenRefusal
from shared.errors import RotationError


def entra_error(status: int, error: str, description: str) -> ClientAuthenticationError:
    """The exception azure-identity raises for an error body (its _raise_for_error wording)."""
    message = f"Microsoft Entra ID error '({error}) {description}'"
    response = SimpleNamespace(status_code=status, reason="", headers={})
    return ClientAuthenticationError(message=message, response=response)


TRACE = "\r\nTrace ID: 0000aaaa\r\nCorrelation ID: bbbb\r\nTimestamp: 2026-12-06 10:00:00Z"


@pytest.mark.parametrize(("status", "error", "description", "expected"), [
    (401, "invalid_client", "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the "
     "request is the client secret value, not the client secret ID, for a secret added to app 'x'." + TRACE,
     TokenRefusal("AADSTS7000215", "AADSTS7000215: Invalid client secret provided.")),
    (400, "unauthorized_client", "AADSTS7000112: Application 'x'(Proofpoint Essentials) is disabled." + TRACE,
     TokenRefusal("AADSTS7000112", "AADSTS7000112: Application 'x'(Proofpoint Essentials) is disabled.")),
    (400, "invalid_grant", "AADSTS53003: Access has been blocked by Conditional Access policies. The access policy "
     "does not allow token issuance." + TRACE,
     TokenRefusal("AADSTS53003", "AADSTS53003: Access has been blocked by Conditional Access policies.")),
    (400, "invalid_request", "no code at all", TokenRefusal("", "Microsoft Entra ID error '(invalid_request) no code "
                                                                "at all'.")),
])
def test_a_refusal_is_its_code_and_first_sentence(status: int, error: str, description: str,
                                                  expected: TokenRefusal) -> None:
    refusal = refusal_of(entra_error(status, error, description))
    assert refusal == expected
    assert refusal.not_propagated is (expected.code == "AADSTS7000215")


@pytest.mark.parametrize(("status", "error", "description"), [
    (503, "temporarily_unavailable", "AADSTS50196: Injected fault."),
    (500, "server_error", "AADSTS90033: A transient error has occurred."),
    (400, "temporarily_unavailable", "AADSTS90024: A transient error has occurred."),
    (400, "invalid_request", "AADSTS50033: A transient error has occurred."),
    (429, "invalid_request", "AADSTS90055: Too many requests."),
])
def test_a_transient_answer_is_no_verdict_on_the_secret(status: int, error: str, description: str) -> None:
    with pytest.raises(RotationError) as raised:
        refusal_of(entra_error(status, error, description))
    assert raised.value.code == "TokenEndpointUnavailable"
