"""`python -m shared onboard run`'s picks checked as the API checks them (parse_picks), before the sign-in: an app
that is no GUID or a Proofpoint domain that is no domain name went through to the run before, which installed the
MSP app in the tenant and only then stopped it at the owner step (AppNotFound); a tenant named twice with --app
silently took the last."""

from __future__ import annotations

import asyncio
import contextlib
import io
from typing import Any

import pytest

from shared import onboard_cli
from shared.cli import parser

TENANT = "6f1c0000-0000-4000-8000-000000000001"
APP = "a9900000-0000-4000-8000-0000000000aa"


@pytest.mark.parametrize("option, value", [
    ("--app", f"{TENANT}=not-a-guid"),
    ("--app", f"{TENANT}={APP}x"),
    ("--app", f"{TENANT}={{{APP}}}"),
    ("--proofpoint-domain", f"{TENANT}=contoso"),
    ("--proofpoint-domain", f"{TENANT}=contoso .com"),
    ("--proofpoint-domain", f"{TENANT}=https://contoso.com"),
    ("--proofpoint-domain", f"{TENANT}=" + "a" * 64 + ".com"),
])
def test_a_malformed_pick_is_refused_by_the_parser(option: str, value: str) -> None:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as stopped:
        parser().parse_args(["onboard", "run", "--tenant", TENANT, option, value])
    assert stopped.value.code == 2 and "expected TENANT_ID=" in err.getvalue()


def test_well_formed_picks_pass_lower_cased() -> None:
    args = parser().parse_args(["onboard", "run", "--tenant", TENANT.upper(),
                                "--app", f"{TENANT.upper()}={APP.upper()}",
                                "--proofpoint-domain", f"{TENANT}=Contoso.COM"])
    [pick] = onboard_cli.picks_of(args)
    assert (pick.tenant_id, pick.app_id, pick.proofpoint_domain) == (TENANT, APP, "contoso.com")


@pytest.mark.parametrize("option, values", [
    ("--app", [f"{TENANT}={APP}", f"{TENANT}=a9900000-0000-4000-8000-0000000000bb"]),
    ("--proofpoint-domain", [f"{TENANT}=contoso.com", f"{TENANT}=fabrikam.com"]),
])
def test_a_tenant_named_twice_for_one_option_is_refused_before_the_sign_in(
        option: str, values: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    argv = ["onboard", "run", "--tenant", TENANT]
    for value in values:
        argv += [option, value]
    args = parser().parse_args(argv)

    def no_sign_in(*_: Any) -> Any:
        raise AssertionError("signed in before the picks were checked")

    monkeypatch.setattr(onboard_cli, "device_code_session", no_sign_in)

    class Svc:
        def bulk_onboarding(self) -> object:
            return object()

    with pytest.raises(SystemExit) as stopped:
        asyncio.run(onboard_cli.main(Svc(), args))  # type: ignore[arg-type]
    assert f"{option} names a tenant more than once: {TENANT}" in str(stopped.value.code)


def test_offboard_sign_in_without_remove_app_is_refused_before_anything(capsys: pytest.CaptureFixture[str]) -> None:
    """`offboard --sign-in` signs a partner admin in to remove the MSP app; without --remove-app it signed in (a
    device code to approve) for nothing. Refused by the parser, before any setting is read or tenant touched."""
    from shared.cli import main

    with pytest.raises(SystemExit) as stopped:
        main(["offboard", TENANT, APP, "--sign-in"])
    assert stopped.value.code == 2 and "--sign-in goes with --remove-app" in capsys.readouterr().err
