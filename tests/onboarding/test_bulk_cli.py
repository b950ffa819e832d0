"""`python -m shared onboard` in its own process against the sandbox: the device code printed as az prints it, the
admin approving it at the sandbox's verification page, a line per tenant as it finishes, the exit code, and the run's
status afterwards (no sign-in)."""

from __future__ import annotations

import re
import time
import uuid

import pytest

from sandbox.client import answer_device_code
from sandbox.gdap import APP_ADMIN_GROUP, PRIVILEGED_GROUP
from tests.onboarding import gdap_world
from tests.onboarding.gdap_world import ADMIN, CHANNEL, tenant_id
from tests.rotation.conftest import Rotating, World

pytestmark = pytest.mark.sandbox
PROMPT = re.compile(r"To sign in, use a web browser to open the page (\S+) and enter the code (\S+) to authenticate")


def approve(world: World, process: Rotating, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not (found := PROMPT.search(process.output())):
        assert process.poll() is None, process.output()
        assert time.monotonic() < deadline, process.output()
        time.sleep(0.2)
    assert found.group(1).endswith("/devicelogin")
    answer_device_code(world.sb.endpoints["entra"], found.group(2), ADMIN, world.sb.ca_file)


def test_onboard_run_signs_in_with_a_device_code_and_prints_each_tenant(world: World) -> None:
    gdap_world.seed(world.sb.control, 3, missing_role_every=3)
    world.sb.control.set_device_code_interval(1)
    world.env["PROOFPOINT_CHANNEL_DOMAIN"] = CHANNEL
    process = world.cli("onboard", "run", "--all")
    approve(world, process)
    assert process.wait(timeout=300) == 2, process.output()  # a tenant needs a human
    out = process.output()
    assert f"Signed in as {ADMIN}." in out
    assert re.search(rf"^done +Customer 0001 \({tenant_id(1)}\): registered with Proofpoint org customer0001\.example"
                     r"; its first credential inventory [^;\n]+; would-rotate", out, re.MULTILINE), out
    assert re.search(rf"^done +Customer 0002 \({tenant_id(2)}\)", out, re.MULTILINE), out
    assert re.search(rf"^failed +Customer 0003 \({tenant_id(3)}\)\n +GdapRoleMissing: .*Privileged Role "
                     r"Administrator.*\n +fix: add Privileged Role Administrator", out, re.MULTILINE), out
    run_id = re.search(r"^Run ([0-9a-f]{32}) finished: 2 onboarded, 0 onboarded before, 1 failed", out, re.MULTILINE)
    assert run_id, out
    assert "refresh" not in out.lower()

    status = world.cli("onboard", "status", run_id.group(1))
    assert status.wait(timeout=120) == 2
    assert "GdapRoleMissing" in status.output() and "Customer 0001" in status.output()

    listing = world.cli("onboard", "list")
    approve(world, listing)
    assert listing.wait(timeout=120) == 0, listing.output()
    assert re.search(rf"^{tenant_id(1)}  Customer 0001  \[Application Administrator, Privileged Role Administrator\]"
                     r"  registered$", listing.output(), re.MULTILINE), listing.output()
    assert re.search(rf"^{tenant_id(3)}  Customer 0003  \[Application Administrator\]  missing: Privileged Role "
                     r"Administrator$", listing.output(), re.MULTILINE), listing.output()

    again = world.cli("onboard", "run", "--tenant", tenant_id(1))
    approve(world, again)
    assert again.wait(timeout=300) == 0, again.output()  # onboarded before: skipped, nothing to do
    assert re.search(r"^skipped +Customer 0001", again.output(), re.MULTILINE), again.output()


def test_keep_session_keeps_the_sign_in_in_key_vault_for_a_resume_until_forgotten(world: World) -> None:
    gdap_world.seed(world.sb.control, 2, missing_role_every=2)
    world.sb.control.set_device_code_interval(1)
    world.env["PROOFPOINT_CHANNEL_DOMAIN"] = CHANNEL
    process = world.cli("onboard", "run", "--all", "--keep-session")
    approve(world, process)
    assert process.wait(timeout=300) == 2, process.output()
    run_id = re.search(r"^Run ([0-9a-f]{32}) finished", process.output(), re.MULTILINE)
    assert run_id, process.output()
    name = f"onboarding-session-{run_id.group(1)}"
    assert f"The session is kept in Key Vault as {name}" in process.output()
    assert name in world.sb.control.state()["keyvault"]["secrets"]

    # the relationship gets its missing role; the resume uses the kept session: no device code this time
    world.sb.control.seed({"gdap": {"relationships": [{
        "id": f"{uuid.uuid5(uuid.NAMESPACE_URL, 'sandbox-gdap-relationship-2')}-{tenant_id(2)}",
        "displayName": "MSP onboarding Customer 0002",
        "customer": {"tenantId": tenant_id(2), "displayName": "Customer 0002"}, "status": "active",
        "roles": ["Application Administrator", "Privileged Role Administrator"],
        "accessAssignments": [
            {"group": APP_ADMIN_GROUP, "roles": ["Application Administrator"]},
            {"group": PRIVILEGED_GROUP, "roles": ["Privileged Role Administrator"]}]}]}})
    resumed = world.cli("onboard", "resume", run_id.group(1))
    assert resumed.wait(timeout=300) == 0, resumed.output()
    assert f"Using the session kept for run {run_id.group(1)}." in resumed.output()
    assert "enter the code" not in resumed.output()
    assert re.search(r"^done +Customer 0002", resumed.output(), re.MULTILINE), resumed.output()
    assert name in world.sb.control.state()["keyvault"]["secrets"]  # kept: the run asked for it

    forgot = world.cli("onboard", "forget", run_id.group(1))
    assert forgot.wait(timeout=120) == 0, forgot.output()
    assert name not in world.sb.control.state()["keyvault"]["secrets"]


def test_resume_with_a_kept_session_entra_no_longer_honours_signs_in_anew(world: World) -> None:
    """The kept refresh token has expired at Entra (90 days inactive: AADSTS700082): `onboard resume` says so in one
    line and falls back to a device code sign-in, instead of failing."""
    gdap_world.seed(world.sb.control, 1)
    world.sb.control.set_device_code_interval(1)
    world.env["PROOFPOINT_CHANNEL_DOMAIN"] = CHANNEL
    process = world.cli("onboard", "run", "--all", "--keep-session")
    approve(world, process)
    assert process.wait(timeout=300) == 0, process.output()
    run_id = re.search(r"^Run ([0-9a-f]{32}) finished", process.output(), re.MULTILINE)
    assert run_id, process.output()
    world.sb.control.set_clock(91 * 86400)  # Entra's clock: the kept token inactive for more than 90 days
    resumed = world.cli("onboard", "resume", run_id.group(1))
    approve(world, resumed)
    assert resumed.wait(timeout=300) == 0, resumed.output()
    out = resumed.output()
    assert f"The session kept for run {run_id.group(1)} cannot be used (" in out
    assert "signing in again with a device code" in out and f"Signed in as {ADMIN}." in out
    assert "Traceback" not in out and "refresh_token" not in out.lower()


def test_a_declined_sign_in_prints_the_refusal_and_its_fix(world: World) -> None:
    """The admin cancels on the verification page: the command says why (authorization_declined) AND what to do,
    and exits 1 (it printed the code and the message only before: the fix was lost)."""
    gdap_world.seed(world.sb.control, 1)
    world.sb.control.set_device_code_interval(1)
    world.env["PROOFPOINT_CHANNEL_DOMAIN"] = CHANNEL
    process = world.cli("onboard", "list")
    deadline = time.monotonic() + 60
    while not (found := PROMPT.search(process.output())):
        assert process.poll() is None and time.monotonic() < deadline, process.output()
        time.sleep(0.2)
    answer_device_code(world.sb.endpoints["entra"], found.group(2), ADMIN, world.sb.ca_file, approve=False)
    assert process.wait(timeout=120) == 1, process.output()
    out = process.output()
    assert "authorization_declined: the sign-in was declined" in out, out
    assert "fix: Run the command again and approve the sign-in." in out, out


def test_onboard_runs_lists_the_latest_page_and_every_run_with_all(world: World) -> None:
    """`onboard runs` prints the newest 20; `--all` every run kept, newest first, a page at a time."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor
    from datetime import UTC, datetime, timedelta

    from azure.data.tables.aio import TableServiceClient

    from shared.adapters.tables import TablesOnboardingRuns
    from shared.bulk_onboarding import Run, RunState
    from shared.ports import InstallMethod

    now = datetime.now(UTC)
    made = [Run(uuid.uuid4().hex, ADMIN, "Partner Admin", InstallMethod.GRAPH, False, now - timedelta(hours=i),
                state=RunState.SIGNED_IN) for i in range(23)]

    async def write() -> None:
        async with TableServiceClient.from_connection_string(world.env["STATE_TABLES_CONNECTION_STRING"]) as service:
            runs = TablesOnboardingRuns(service, world.prefix)
            for run in made:
                await runs.create_run(run)

    with ThreadPoolExecutor(1) as thread:
        thread.submit(asyncio.run, write()).result()
    for args, count in ((("onboard", "runs"), 20), (("onboard", "runs", "--all"), 23)):
        process = world.cli(*args)
        assert process.wait(timeout=120) == 0, process.output()
        listed = re.findall(r"^([0-9a-f]{32})  signed-in", process.output(), re.MULTILINE)
        assert listed == [r.run_id for r in made[:count]], process.output()
