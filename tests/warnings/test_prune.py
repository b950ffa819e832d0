"""Lapsed snoozes are pruned on the warnings pass (audited as ended), lifted exclusions 90 days after their lift;
exclusions without an end and snoozes still running stay (Azurite: the real Tables store)."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from azure.data.tables.aio import TableServiceClient

from shared.adapters.warning_rules import TablesWarningRules
from shared.expiry_warnings import covering, new_exclusion
from shared.warning_pass import KEEP_LIFTED, prune_rules
from tests.fakes import FakeState, Faults
from tests.warnings.test_rules import APP, KEY, NOW, OTHER_T, T, cred


@pytest.fixture
async def rules() -> AsyncIterator[TablesWarningRules]:
    connection = os.environ.get("STATE_TABLES_CONNECTION_STRING")
    if not connection:
        pytest.fail("STATE_TABLES_CONNECTION_STRING is not set: run through scripts/with-azurite.sh")
    service = TableServiceClient.from_connection_string(connection)
    prefix = f"p{uuid.uuid4().hex[:10]}"
    try:
        yield TablesWarningRules(service, prefix=prefix)
    finally:
        await service.delete_table(f"{prefix}warningrules")
        await service.close()


async def test_a_lapsed_snooze_stops_applying_and_is_pruned_with_an_audit_record(rules: TablesWarningRules) -> None:
    state = FakeState(Faults())
    snooze = new_exclusion("s-1", T, "credential", key_id=KEY, snooze=True, until=NOW + timedelta(days=3), by="ann",
                           why="vendor renews on Friday", now=NOW)
    running = new_exclusion("s-2", OTHER_T, "customer", snooze=True, until=NOW + timedelta(days=30), by="bob",
                            why="migration", now=NOW)
    forever = new_exclusion("x-1", T, "app", app_id=APP, snooze=False, until=None, by="cy", why="test app",
                            now=NOW)
    for e in (snooze, running, forever):
        await rules.add_exclusion(e)
    later = NOW + timedelta(days=3, minutes=1)
    assert covering(cred(5), [snooze], later) is None  # lapsed: it covers nothing, the warnings resume

    assert await prune_rules(rules, state, NOW + timedelta(days=1)) == []  # nothing has lapsed yet
    [ended] = await prune_rules(rules, state, later)
    assert ended.exclusion_id == "s-1"
    assert sorted(e.exclusion_id for e in await rules.exclusions()) == ["s-2", "x-1"]
    [event] = [e for e in state.events_ if e.outcome == "snooze-ended"]
    assert (event.tenant_id, event.step, event.actor) == (T, "warnings", "timer")
    assert KEY in event.detail and "ann" in event.detail and "vendor renews on Friday" in event.detail
    assert await prune_rules(rules, state, later) == []  # pruned once, audited once
    assert sum(e.outcome == "snooze-ended" for e in state.events_) == 1


async def test_a_lifted_exclusion_is_kept_for_the_months_report_then_pruned_without_a_second_record(
        rules: TablesWarningRules) -> None:
    state = FakeState(Faults())
    made = new_exclusion("x-2", T, "customer", snooze=False, until=None, by="ann", why="offboarding", now=NOW)
    await rules.add_exclusion(made)
    await rules.lift_exclusion("x-2", "bob", NOW + timedelta(days=1))
    await prune_rules(rules, state, NOW + timedelta(days=1) + KEEP_LIFTED - timedelta(minutes=1))
    assert [e.exclusion_id for e in await rules.exclusions()] == ["x-2"]
    assert await prune_rules(rules, state, NOW + timedelta(days=1) + KEEP_LIFTED) == []
    assert await rules.exclusions() == [] and state.events_ == []


async def test_a_crash_between_the_audit_and_the_removal_repeats_the_record_never_loses_it(
        rules: TablesWarningRules) -> None:
    from shared.errors import RotationError

    class Failing:
        def __init__(self, inner: TablesWarningRules) -> None:
            self.inner, self.fail = inner, True

        async def exclusions(self, tenant_id: str = "") -> list:
            return await self.inner.exclusions(tenant_id)

        async def prune_exclusions(self, now, keep_lifted):  # type: ignore[no-untyped-def]
            if self.fail:
                raise RotationError("the table failed", code="StateStoreError")
            return await self.inner.prune_exclusions(now, keep_lifted)

    state = FakeState(Faults())
    await rules.add_exclusion(new_exclusion("s-3", T, "customer", snooze=True, until=NOW + timedelta(days=1),
                                            by="ann", why="merger", now=NOW))
    failing = Failing(rules)
    later = NOW + timedelta(days=2)
    assert await prune_rules(failing, state, later) == []  # type: ignore[arg-type]  # the store failed: logged
    assert [e.outcome for e in state.events_] == ["snooze-ended"]  # audited before the removal was tried
    assert [e.exclusion_id for e in await rules.exclusions()] == ["s-3"]
    failing.fail = False
    [ended] = await prune_rules(failing, state, later)  # type: ignore[arg-type]
    assert ended.exclusion_id == "s-3" and await rules.exclusions() == []
    assert [e.outcome for e in state.events_] == ["snooze-ended", "snooze-ended"]
