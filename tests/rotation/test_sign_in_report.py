"""Entra's credential activity report end to end (the real adapters over HTTPS against the sandbox, Azurite for the
state): a tenant whose log is refused for want of Directory.Read.All (the log's known issue) but whose report
(AuditLog.Read.All is enough) shows the old key used after the push keeps it and alerts old-key-still-used, although
Proofpoint's own sync would have let it go; a neighbour whose old key is quiet falls back to that sync as before."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from shared.alerts import LogAlerter
from shared.sign_in_proof import OLD_KEY_STILL_USED
from tests.rotation.conftest import ROTATOR_ROLE, Rotator, World
from tests.rotation.test_push_retire import setup
from tests.rotation.test_sign_in_evidence import live_key_ids, run_pass, status

REPORT_ONLY = (ROTATOR_ROLE, "AuditLog.Read.All")  # the log needs Directory.Read.All too; the report does not


async def test_a_refused_log_with_a_readable_report_keeps_an_old_key_used_after_the_push(
    world: World, rotator: Rotator
) -> None:
    used = world.seed_customer("Reported", 12, roles=REPORT_ONLY)
    quiet = world.seed_customer("Quietone", 12, roles=REPORT_ONLY)
    world.sb.control.seed({"tenants": [{"id": c.tenant_id, "entraIdLicense": "P1"} for c in (used, quiet)]})
    world.sb.control.set_sign_in_delay(0)
    await setup(world, rotator, used)
    await setup(world, rotator, quiet)
    alerter = LogAlerter()
    await run_pass(world, rotator, timedelta(0), alerter)
    doc = (await status(rotator, used, timedelta(0)))["signInEvidence"]
    assert doc["available"] is False and doc["report"]["available"] is True
    # Two days on (Proofpoint synced with the new key at 24 h), a forgotten client signs in with the old secret.
    signed = timedelta(days=2, hours=1)
    world.sb.control.set_clock(signed.total_seconds())
    assert world.sb.control.sign_in(used.tenant_id, used.app_id, used.secret, ip_address="192.0.2.56") is None
    # The report shows that day once it is over (a daily roll-up): the first pass after its midnight keeps the key
    # (the day's end is within the quiet period) and says why.
    at = datetime.now(UTC) + signed
    midnight = (at + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    later = signed + (midnight - at) + timedelta(minutes=10)
    await run_pass(world, rotator, later, alerter)
    assert used.key_id in live_key_ids(world, used)
    [alert] = [a for a in alerter.raised if a.condition == OLD_KEY_STILL_USED]
    assert used.key_id in alert.message and "credential activity report" in alert.message
    doc = (await status(rotator, used, later))["signInEvidence"]
    assert doc["keptKeyIds"] == [used.key_id]
    assert {c["keyId"]: c["reportedLastSignIn"] for c in doc["credentials"]}[used.key_id] is not None
    assert quiet.key_id not in live_key_ids(world, quiet), "quiet in the report: Proofpoint's sync decides, as before"
