"""The sign-in log's verdict per target where an operator looks without a browser: `python -m shared status` says,
for each customer, whether its tenant's sign-in log was read, refused (with Graph's code: retirement then falls back
to Proofpoint's own sync) or never read; and a tenant that later allows the read shows it at the next read."""

from __future__ import annotations

from datetime import timedelta

from shared.cli import STATUS_COLUMNS, status_rows, table
from shared.registry import status_document
from tests.protocol.test_sign_in_evidence import NOT_LICENSED, evidence_world, rotate, timer


async def test_the_cli_status_says_per_target_whether_the_sign_in_log_was_read_or_refused_and_why() -> None:
    world, refusing = evidence_world(retire_grace=timedelta(hours=1))
    allowed = world.seed(days_left=10)
    never = world.seed(days_left=200)
    world.sign_ins.refusal = NOT_LICENSED
    await rotate(world, refusing)
    world.sign_ins.refusal = None
    await rotate(world, allowed)
    await timer(world, never)
    day = world.clock.now().date().isoformat()
    rows = status_rows([status_document(world.row(t)) for t in (refusing, allowed, never)])
    assert [r["signInLog"] for r in rows] == [
        f"refused {day}: {NOT_LICENSED[0]} (fallback: Proofpoint's sync)", f"read {day}", "-"]
    printed = table(rows, STATUS_COLUMNS)
    assert "SIGN-IN LOG" in printed and NOT_LICENSED[0] in printed

    # The admin grants the licence and the permissions: the next read (a key still waits) uses the evidence.
    world.clock.advance(timedelta(minutes=30))
    await timer(world, refusing)
    [row] = status_rows([status_document(world.row(refusing))])
    assert row["signInLog"] == f"read {world.clock.now().date().isoformat()}"
    assert status_document(world.row(refusing))["signInEvidence"]["available"] is True
