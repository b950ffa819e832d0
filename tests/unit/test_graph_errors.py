"""Graph's answers as the engine branches on them: only throttling says nothing was written (README)."""

from __future__ import annotations

import httpx
import pytest
from msgraph.generated.models.o_data_errors.main_error import MainError
from msgraph.generated.models.o_data_errors.o_data_error import ODataError

from shared.adapters.graph import _translate
from shared.errors import Ambiguous, NotOwner, PolicyBlocked, PolicyLifetime, RotationError, Throttled, Unreachable


def odata(status: int, code: str) -> ODataError:
    error = ODataError()
    error.response_status_code = status
    error.error = MainError(code=code, message=f"{code} happened")
    return error


@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [
        (429, "TooManyRequests", Throttled),
        (503, "Directory_ConcurrencyViolation", Throttled),
        (409, "Directory_ConcurrencyViolation", Throttled),
        (503, "ServiceUnavailable", Ambiguous),  # today's defect: this was retried as throttling
        (503, "UnknownError", Ambiguous),
        (500, "InternalServerError", Ambiguous),
        (502, "BadGateway", Ambiguous),
        (504, "GatewayTimeout", Ambiguous),
    ],
)
def test_add_password_is_retried_only_when_nothing_was_written(status: int, code: str, kind: type) -> None:
    translated = _translate(odata(status, code), "tenant", "adding a secret", creating=True)
    assert type(translated) is kind and translated.code == code


def test_a_dropped_connection_on_add_password_is_ambiguous() -> None:
    translated = _translate(httpx.ReadError("connection reset"), "tenant", "adding a secret", creating=True)
    assert isinstance(translated, Ambiguous)


def test_a_definite_refusal_is_neither_retried_nor_ambiguous() -> None:
    translated = _translate(odata(400, "Request_BadRequest"), "t", "adding", creating=True)
    assert type(translated) is RotationError


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        ("CredentialInvalidLifetimeAsPerAppPolicy", PolicyLifetime),
        ("CredentialTypeNotAllowedAsPerAppPolicy", PolicyBlocked),
    ],
)
def test_an_app_management_policy_refusal_names_which_one(code: str, kind: type) -> None:
    translated = _translate(odata(400, code), "t", "adding", creating=True, writing=True)
    assert type(translated) is kind and translated.code == code


def test_a_403_is_a_missing_owner_on_a_write_and_a_missing_permission_on_a_read() -> None:
    write = _translate(odata(403, "Authorization_RequestDenied"), "t", "adding", creating=True, writing=True)
    read = _translate(odata(403, "Authorization_RequestDenied"), "t", "reading")
    assert type(write) is NotOwner and write.code == "NotOwner"
    assert type(read) is Unreachable and read.code == "Authorization_RequestDenied"


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_reads_and_removals_may_retry_a_server_error(status: int) -> None:
    assert isinstance(_translate(odata(status, "ServiceUnavailable"), "t", "reading"), Throttled)
