"""The command line's exit codes and its handling of a malformed import file (no traceback, nothing changed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.cli import EXIT_FAILED, EXIT_NEEDS_HUMAN, EXIT_OK, exit_code, main, parser
from shared.rotation import Outcome


def outcome(result: str, status: str = "") -> Outcome:
    return Outcome("t", "a", result, status=status)


@pytest.mark.parametrize(
    ("outcomes", "code"),
    [
        ([outcome("healthy", "healthy"), outcome("rotated", "healthy")], EXIT_OK),
        ([outcome("busy", "due")], EXIT_OK),
        ([outcome("rotated", "healthy"), outcome("failed", "due")], EXIT_FAILED),
        ([outcome("expired", "expired")], EXIT_NEEDS_HUMAN),
        ([outcome("unreachable", "unreachable")], EXIT_NEEDS_HUMAN),
        ([outcome("unverified", "due")], EXIT_NEEDS_HUMAN),
        ([outcome("push-incomplete", "due")], EXIT_NEEDS_HUMAN),
        ([outcome("not-owner", "not-owner")], EXIT_NEEDS_HUMAN),
        ([outcome("policy-blocked", "policy-blocked")], EXIT_NEEDS_HUMAN),
        ([outcome("healthy", "foreign-credential")], EXIT_NEEDS_HUMAN),
        ([outcome("failed", "due"), outcome("expired", "expired")], EXIT_NEEDS_HUMAN),
    ],
)
def test_exit_codes(outcomes: list[Outcome], code: int) -> None:
    assert exit_code(outcomes) == code


def test_help_documents_the_exit_codes() -> None:
    text = parser().format_help()
    assert "exit codes" in text and "needs a human" in text


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("{not json", "is not JSON"),
        ('{"tenantId": "x"}', "must hold a JSON list"),
        ('[{"tenantId": "not-a-guid", "appId": "also-not"}]', "document 1: tenantId"),
        ("[1]", "document 1"),
        (b"\xff\xfe\x00", "not UTF-8"),
    ],
)
def test_importing_a_malformed_file_says_why_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | bytes, says: str
) -> None:
    path = tmp_path / "targets.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    assert main(["targets", "import", str(path)]) == EXIT_NEEDS_HUMAN
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err


def test_importing_a_missing_file_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["targets", "import", str(tmp_path / "absent.json")]) == EXIT_NEEDS_HUMAN
    assert "cannot be read" in capsys.readouterr().err


def test_a_valid_document_after_an_invalid_one_is_not_registered(tmp_path: Path) -> None:
    from shared.cli import parse_documents
    from shared.registry import InvalidTarget

    good = {"tenantId": "11111111-1111-1111-1111-111111111111", "appId": "22222222-2222-2222-2222-222222222222"}
    with pytest.raises(InvalidTarget) as bad:
        parse_documents([good, {"tenantId": "x"}])
    assert bad.value.message.startswith("document 2")
    assert json.dumps(good)  # the good one alone parses
    assert len(parse_documents([good])) == 1
