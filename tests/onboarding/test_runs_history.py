"""The onboarding runs' history on Azure Tables (Azurite, the real azure-data-tables client): the run list reads one
page whatever the history, rows written before the list's index are listed (copied into it once), and the daily
prune deletes finished runs past the retention and losing starts' rows, never a run still running nor the audit."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.data.tables.aio import TableServiceClient

from shared.adapters.tables import RUN_INDEX, TablesOnboardingRuns, TablesStateStore, run_index_key
from shared.bulk_onboarding import (
    BulkOnboarding,
    Run,
    RunState,
    TenantProgress,
    engine_dry_run,
    prune_runs,
    signed_in,
)
from shared.errors import NotFound
from shared.ports import InstallMethod
from tests.fakes import FakePartnerSessions
from tests.onboarding.conftest import prefix
from tests.onboarding.test_bulk_engine import BulkWorld

pytestmark = pytest.mark.sandbox

NOW = datetime(2026, 12, 6, 17, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def a_run(started: datetime, state: RunState = RunState.FINISHED, finished: datetime | None = None,
          start_id: str = "") -> Run:
    return Run(uuid.uuid4().hex, "partner-admin@msp.example", "Partner Admin", InstallMethod.GRAPH, False, started,
               state=state, finished_at=finished if finished or state is not RunState.FINISHED else started + DAY,
               start_id=start_id)


async def legacy(service: TableServiceClient, p: str, run: Run, tenants: int = 2) -> None:
    """The run and its tenants as the code before the list's index wrote them (create_run was this one insert)."""
    table = service.get_table_client(f"{p}onboarding")
    await service.create_table_if_not_exists(f"{p}onboarding")
    for _ in range(tenants):
        await table.create_entity(TablesOnboardingRuns._tenant_entity(
            run.run_id, TenantProgress(str(uuid.uuid4()), "Contoso", updated_at=run.started_at)))
    await table.create_entity(TablesOnboardingRuns._run_entity(run))


async def new(runs: TablesOnboardingRuns, run: Run, tenants: int = 2, key: str = "") -> None:
    for _ in range(tenants):
        await runs.create_tenant(key or run.run_id, TenantProgress(str(uuid.uuid4()), "Fabrikam",
                                                                   updated_at=run.started_at))
    await runs.create_run(run)


class Counting:
    """The adapter's table client, counting the entities it reads (a query's rows and point reads)."""

    def __init__(self, table: Any) -> None:
        self.table, self.read = table, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.table, name)

    def query_entities(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        inner = self.table.query_entities(*args, **kwargs)

        async def rows() -> AsyncIterator[Any]:
            async for e in inner:
                self.read += 1
                yield e
        return rows()

    async def get_entity(self, *args: Any, **kwargs: Any) -> Any:
        self.read += 1
        return await self.table.get_entity(*args, **kwargs)


async def every_page(runs: TablesOnboardingRuns, limit: int) -> list[list[str]]:
    pages, cursor = [], None
    while True:
        page, cursor = await runs.list_runs(limit, cursor)
        pages.append([r.run_id for r in page])
        if cursor is None:
            return pages


async def test_old_rows_and_new_runs_are_listed_newest_first_a_page_at_a_time(service: TableServiceClient) -> None:
    p = prefix()
    old = [a_run(NOW - (40 - i) * DAY) for i in range(7)]
    for run in old:
        await legacy(service, p, run)
    runs = TablesOnboardingRuns(service, p)
    fresh = [a_run(NOW - (10 - i) * DAY, RunState.RUNNING) for i in range(5)]
    same_time = a_run(fresh[-1].started_at, RunState.SIGNED_IN)  # two runs made in one millisecond: both listed
    for run in [*fresh, same_time]:
        await new(runs, run)
    expected = [r.run_id for r in sorted([*old, *fresh, same_time], key=lambda r: r.started_at, reverse=True)]
    pages = await every_page(runs, 4)
    assert [len(p) for p in pages] == [4, 4, 4, 1]
    flat = [r for p in pages for r in p]
    assert sorted(flat) == sorted(expected) and flat[2:] == expected[2:]  # the tie's order is the run ids'
    assert (await every_page(TablesOnboardingRuns(service, p), 20)) == [flat]  # a new adapter: the same list
    first, _ = await runs.list_runs(1)
    assert first[0] == (await runs.get_run(flat[0]))[0]
    with pytest.raises(ValueError):
        await runs.list_runs(5, "not-a-cursor")


async def test_a_page_reads_the_same_rows_whatever_the_history(service: TableServiceClient) -> None:
    p = prefix()
    for i in range(5):
        await legacy(service, p, a_run(NOW - (300 - i) * DAY))
    runs = TablesOnboardingRuns(service, p)
    await runs.list_runs(5)  # the old rows copied into the index, once

    async def cost() -> int:
        counting = Counting(runs._table)
        runs._table = counting
        try:
            page, cursor = await runs.list_runs(5)
            assert len(page) == 5 and cursor is not None
        finally:
            runs._table = counting.table
        return counting.read

    for i in range(6):
        await new(runs, a_run(NOW - (200 - i) * DAY))
    small = await cost()
    for i in range(40):
        await new(runs, a_run(NOW - (100 - i) * DAY), tenants=3)
    assert small == await cost() <= 5 + 1 + 5  # a page of the index (one more: is there a next?) and its run rows


async def test_the_prune_deletes_finished_and_abandoned_runs_past_the_retention_and_losing_starts(
        service: TableServiceClient) -> None:
    p = prefix()
    runs = TablesOnboardingRuns(service, p)
    table = service.get_table_client(f"{p}onboarding")
    gone_finished = a_run(NOW - 100 * DAY, finished=NOW - 99 * DAY)
    gone_signed_in = a_run(NOW - 100 * DAY, RunState.SIGNED_IN)
    gone_legacy = a_run(NOW - 120 * DAY, finished=NOW - 120 * DAY)
    kept_late_finish = a_run(NOW - 100 * DAY, finished=NOW - 10 * DAY)
    kept_recent = a_run(NOW - 2 * DAY)
    kept_running = a_run(NOW - 100 * DAY, RunState.RUNNING, start_id="b" * 32)
    await legacy(service, p, gone_legacy)
    for run in (gone_finished, gone_signed_in, kept_late_finish, kept_recent):
        await new(runs, run)
    await new(runs, kept_running, key=f"{kept_running.run_id}.{'b' * 32}")  # the winning start's rows
    loser = f"{kept_running.run_id}.{'a' * 32}"
    for _ in range(3):
        await runs.create_tenant(loser, TenantProgress(str(uuid.uuid4()), "Lost", updated_at=NOW - 100 * DAY))
    losing_old = f"{kept_late_finish.run_id}.{'c' * 32}"
    await runs.create_tenant(losing_old, TenantProgress(str(uuid.uuid4()), "Lost", updated_at=NOW - 100 * DAY))
    # an index entry whose run row never landed (the process died between the two writes)
    orphan = uuid.uuid4().hex
    await table.upsert_entity({"PartitionKey": RUN_INDEX, "RowKey": run_index_key(orphan, NOW - 95 * DAY),
                               "RunId": orphan, "MadeAt": (NOW - 95 * DAY).isoformat()})

    assert await prune_runs(runs, NOW, timedelta(days=90)) == 4
    partitions = {e["PartitionKey"] async for e in table.list_entities() if e["PartitionKey"] != "layout"}
    kept = {kept_late_finish.run_id, kept_recent.run_id, kept_running.run_id, f"{kept_running.run_id}.{'b' * 32}"}
    assert partitions == kept | {RUN_INDEX}
    listed = [r for page in await every_page(runs, 10) for r in page]
    assert listed[0] == kept_recent.run_id and set(listed[1:]) == {kept_late_finish.run_id, kept_running.run_id}
    assert len(await runs.tenants(f"{kept_running.run_id}.{'b' * 32}")) == 2
    for run in (gone_finished, gone_signed_in, gone_legacy):
        with pytest.raises(NotFound):
            await runs.get_run(run.run_id)
    assert await prune_runs(runs, NOW, timedelta(days=90)) == 0  # nothing more: the prune is idempotent
    assert await prune_runs(runs, NOW + 81 * DAY, timedelta(days=90)) == 1  # the late finish's turn


async def test_a_pruned_run_leaves_its_audit_trail_and_targets(service: TableServiceClient) -> None:
    w = BulkWorld()
    tenants = [w.customer(n) for n in ("Contoso", "Fabrikam")]
    p = prefix()
    runs, state = TablesOnboardingRuns(service, p), TablesStateStore(service, p)
    engine = BulkOnboarding(runs=runs, state=state, directory=w.world.directory, orgs=w.orgs,
                            dry_run=engine_dry_run(w.world.engine()), clock=w.world.clock, config=w.config)
    signed = await signed_in(runs, FakePartnerSessions(), w.session, w.world.clock)  # a dashboard run
    run = await engine.start(w.session, None, InstallMethod.GRAPH, run_id=signed.run_id)
    doc = await engine.work(w.session, run.run_id)
    assert doc["state"] == "finished" and doc["counts"]["done"] == 2
    audit = {t: await state.events(t, w.apps(t)[0]) for t in tenants}
    assert all(audit.values())
    targets = await state.list_targets()

    now = w.world.clock.now()
    assert await prune_runs(runs, now + timedelta(days=89), timedelta(days=90)) == 0
    assert (await runs.list_runs())[0][0].run_id == run.run_id
    assert await prune_runs(runs, now + timedelta(days=91), timedelta(days=90)) == 1
    assert (await runs.list_runs()) == ([], None)
    assert [e for e in await runs.all_rows() if e["PartitionKey"] != "layout"] == []
    assert {t: await state.events(t, w.apps(t)[0]) for t in tenants} == audit  # untouched
    assert await state.list_targets() == targets
    with pytest.raises(NotFound):
        await engine.progress(run.run_id)
    assert w.session.refresh_token.reveal() not in json.dumps(await runs.all_rows(), default=str)


async def test_a_run_replaced_in_place_keeps_its_place_in_the_list(service: TableServiceClient) -> None:
    """A dashboard run is made at its sign-in and started later (its startedAt moves): listed once, where it was
    made, and pruned by when it finished."""
    runs = TablesOnboardingRuns(service, prefix())
    earlier, run = a_run(NOW - 3 * DAY), a_run(NOW - 2 * DAY, RunState.SIGNED_IN)
    await new(runs, earlier)
    await runs.create_run(run)
    _, etag = await runs.get_run(run.run_id)
    started = replace(run, state=RunState.FINISHED, started_at=NOW - DAY, finished_at=NOW - DAY)
    await runs.replace_run(started, etag)
    assert [r.run_id for r in (await runs.list_runs())[0]] == [run.run_id, earlier.run_id]
    assert await prune_runs(runs, NOW + timedelta(days=88, hours=12), timedelta(days=90)) == 1  # `earlier` only
    assert await prune_runs(runs, NOW + 91 * DAY, timedelta(days=90)) == 1
    assert (await runs.list_runs()) == ([], None)


async def test_a_finished_run_is_listed_from_its_own_row_and_a_resume_counts_again(service: TableServiceClient) -> None:
    """The run list's counts of a finished run come from its row (written with its finish): no tenant row is read
    for it; a running run's are counted from its tenants; a resume of a finished run clears them."""
    from shared import partner_roles

    w = BulkWorld()
    w.customer("Contoso")
    lacking = w.customer("Tailspin", roles=frozenset({partner_roles.APPLICATION_ADMINISTRATOR}))
    p = prefix()
    runs, state = TablesOnboardingRuns(service, p), TablesStateStore(service, p)
    engine = BulkOnboarding(runs=runs, state=state, directory=w.world.directory, orgs=w.orgs,
                            dry_run=engine_dry_run(w.world.engine()), clock=w.world.clock, config=w.config)
    run = await engine.start(w.session, None, InstallMethod.GRAPH)
    running, _ = await runs.get_run(run.run_id)
    assert running.counts is None and (await engine.summary(running))["counts"]["pending"] == 2
    full = await engine.work(w.session, run.run_id)
    finished, _ = await runs.get_run(run.run_id)
    assert finished.counts == full["counts"] == {"total": 2, "pending": 0, "running": 0, "done": 1, "failed": 1,
                                                 "skipped": 0}
    counting = Counting(runs._table)
    runs._table = counting
    summary = await engine.summary(finished)
    runs._table = counting.table
    assert counting.read == 0  # nothing but the run row the list read already
    assert summary == {k: v for k, v in full.items() if k != "tenants"}

    w.session.tenants[lacking].customer = replace(w.session.tenants[lacking].customer,
                                                  roles=frozenset(partner_roles.NAMES))  # the role added
    engine = BulkOnboarding(runs=runs, state=state, directory=w.world.directory, orgs=w.orgs,
                            dry_run=engine_dry_run(w.world.engine()), clock=w.world.clock, config=w.config)
    await engine.work(w.session, run.run_id)  # the resume (a new process) reopens it, then finishes it again
    again, _ = await runs.get_run(run.run_id)
    assert again.counts is not None and again.counts["done"] == 2 and again.counts["failed"] == 0
    assert (await engine.summary(again))["counts"] == (await engine.progress(run.run_id))["counts"]


async def test_rows_a_start_left_before_its_run_row_are_pruned(service: TableServiceClient) -> None:
    """A command-line start whose process died after its tenants' rows, before the run's row: never listed, never
    worked, and deleted by the prune once the retention has passed (its place in the list was written first)."""
    from tests.fakes import Crash

    w = BulkWorld()
    w.customer("Contoso")
    w.customer("Fabrikam")
    p = prefix()
    runs = TablesOnboardingRuns(service, p)
    engine = BulkOnboarding(runs=runs, state=TablesStateStore(service, p), directory=w.world.directory, orgs=w.orgs,
                            dry_run=engine_dry_run(w.world.engine()), clock=w.world.clock, config=w.config)

    async def die(run: Run) -> str:
        raise Crash("the process died before the run's row")

    runs.create_run = die  # type: ignore[method-assign]
    with pytest.raises(Crash):
        await engine.start(w.session, None, InstallMethod.GRAPH)
    left = [e for e in await runs.all_rows() if e["PartitionKey"] not in (RUN_INDEX, "layout")]
    assert len(left) == 2 and (await runs.list_runs()) == ([], None)
    now = w.world.clock.now()
    assert await prune_runs(runs, now + timedelta(days=89), timedelta(days=90)) == 0
    assert await prune_runs(runs, now + timedelta(days=91), timedelta(days=90)) == 1
    assert [e for e in await runs.all_rows() if e["PartitionKey"] != "layout"] == []


async def test_a_resume_that_reopens_a_run_while_the_prune_reads_it_keeps_the_run(service: TableServiceClient) -> None:
    """The prune reads a run finished past the retention; before it deletes, a resume (its kept session or a new
    sign-in) reopens the run to take its failed tenant again. The run is the resume's: the prune leaves every row of
    it (the delete is guarded by what the prune read) and takes it only once it finished past the retention again.
    Before, the prune deleted the run and its tenants' rows under the working resume."""
    from shared import partner_roles

    w = BulkWorld()
    w.customer("Contoso")
    lacking = w.customer("Tailspin", roles=frozenset({partner_roles.APPLICATION_ADMINISTRATOR}))
    p = prefix()
    runs, state = TablesOnboardingRuns(service, p), TablesStateStore(service, p)

    def engine() -> BulkOnboarding:
        return BulkOnboarding(runs=runs, state=state, directory=w.world.directory, orgs=w.orgs,
                              dry_run=engine_dry_run(w.world.engine()), clock=w.world.clock, config=w.config)

    run = await engine().start(w.session, None, InstallMethod.GRAPH)
    assert (await engine().work(w.session, run.run_id))["counts"]["failed"] == 1
    w.world.clock.advance(91 * DAY)  # the admin comes back for the failed tenant, role added, just past retention
    w.session.tenants[lacking].customer = replace(w.session.tenants[lacking].customer,
                                                  roles=frozenset(partner_roles.NAMES))
    resumed: list[dict[str, Any]] = []

    class ResumeAfterTheRead:
        """The prune's store: a resume runs between the prune's read of the run and its delete."""

        def __getattr__(self, name: str) -> Any:
            return getattr(runs, name)

        async def get_run(self, run_id: str) -> tuple[Run, str]:
            read = await runs.get_run(run_id)
            if not resumed:
                resumed.append(await engine().work(w.session, run_id))
            return read

    now = w.world.clock.now()
    assert await prune_runs(ResumeAfterTheRead(), now, timedelta(days=90)) == 0  # type: ignore[arg-type]
    assert resumed[0]["state"] == "finished" and resumed[0]["counts"]["done"] == 2
    assert await engine().progress(run.run_id) == resumed[0]  # the run and every tenant row kept
    assert [r.run_id for r in (await runs.list_runs())[0]] == [run.run_id]
    assert await prune_runs(runs, now + 89 * DAY, timedelta(days=90)) == 0  # finished again today: kept 90 days
    assert await prune_runs(runs, now + 91 * DAY, timedelta(days=90)) == 1
    assert [e for e in await runs.all_rows() if e["PartitionKey"] != "layout"] == []
