"""The onboarding run state on Azure Tables (Azurite, the real azure-data-tables client): rows round-trip, writes
are ETag-guarded, and a whole run with its audit is worked on them, interrupted and resumed, with no token or secret
value in any row."""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from azure.data.tables.aio import TableServiceClient

from shared import partner_roles
from shared.adapters.tables import TablesOnboardingRuns, TablesStateStore
from shared.bulk_onboarding import (
    TENANT_CLAIM,
    BulkOnboarding,
    Run,
    RunState,
    StepRecord,
    TenantProgress,
    TenantState,
    engine_dry_run,
)
from shared.errors import Conflict, NotFound
from shared.ports import InstallMethod
from tests.fakes import Crash
from tests.onboarding.conftest import prefix
from tests.onboarding.test_bulk_engine import BulkWorld, tenant_doc

pytestmark = pytest.mark.sandbox


async def test_rows_round_trip_and_writes_are_etag_guarded(service: TableServiceClient) -> None:
    runs = TablesOnboardingRuns(service, prefix())
    now = datetime(2026, 12, 6, 17, 0, tzinfo=UTC)
    run = Run(uuid.uuid4().hex, "partner-admin@msp.example", "Partner Admin", InstallMethod.PARTNER_CENTER, False,
              now)
    tenant = TenantProgress(str(uuid.uuid4()), "Contoso", updated_at=now)
    etag = await runs.create_tenant(run.run_id, tenant)
    run_etag = await runs.create_run(run)
    assert await runs.get_run(run.run_id) == (run, run_etag)
    with pytest.raises(Conflict):
        await runs.create_tenant(run.run_id, replace(tenant, customer="Other"))
    done = replace(tenant, state=TenantState.FAILED, steps={"roles": StepRecord("failed", now, "no role", "X")},
                   error_code="GdapRoleMissing", error_message="m", fix="f", app_id=str(uuid.uuid4()))
    new = await runs.replace_tenant(run.run_id, done, etag)
    assert await runs.tenants(run.run_id) == [(done, new)]
    with pytest.raises(Conflict):
        await runs.replace_tenant(run.run_id, tenant, etag)  # the old ETag
    finished = replace(run, state=RunState.FINISHED, finished_at=now)
    await runs.replace_run(finished, run_etag)
    assert [r.run_id for r in (await runs.list_runs())[0]] == [run.run_id]
    assert (await runs.get_run(run.run_id))[0] == finished
    with pytest.raises(NotFound):
        await runs.get_run(uuid.uuid4().hex)
    with pytest.raises(NotFound):
        await runs.get_tenant(run.run_id, str(uuid.uuid4()))


async def test_a_run_on_tables_interrupted_and_resumed_with_no_secret_in_any_row(service: TableServiceClient) -> None:
    w = BulkWorld(concurrency=2)
    names = ("Contoso", "Fabrikam", "Northwind")
    tenants = [w.customer(n) for n in names]
    missing = w.customer("Tailspin", roles=frozenset({partner_roles.APPLICATION_ADMINISTRATOR}))
    p = prefix()
    runs = TablesOnboardingRuns(service, p)
    state = TablesStateStore(service, p)

    def process() -> BulkOnboarding:
        return BulkOnboarding(runs=runs, state=state, directory=w.world.directory, orgs=w.orgs,
                              dry_run=engine_dry_run(w.world.engine()), clock=w.world.clock, config=w.config)

    run = await process().start(w.session, None, InstallMethod.GRAPH)
    w.faults.crash("partner.add_owner", when="after", nth=2)  # the process dies with one owner added unrecorded
    with pytest.raises(Crash):
        await process().work(w.session, run.run_id)
    w.faults.revive()
    middle = await process().progress(run.run_id)
    assert middle["state"] == "running" and middle["counts"]["done"] < 3
    w.world.clock.advance(TENANT_CLAIM)  # the dead process's claims run out
    doc = await process().work(w.session, run.run_id)
    assert doc["state"] == "finished", json.dumps(doc, indent=1)
    assert [tenant_doc(doc, t)["state"] for t in tenants] == ["done"] * 3
    assert tenant_doc(doc, missing)["error"]["code"] == "GdapRoleMissing"
    registered = {(t.tenant_id, t.app_id) for t, _ in await state.list_targets()}
    assert registered == {(t, w.apps(t)[0]) for t in tenants}
    for t in tenants:
        events = await state.events(t, w.apps(t)[0])
        assert {e.actor for e in events} == {"onboarding:partner-admin@msp.example"}
        assert {"onboarding-owner", "onboarding-registry"} <= {e.step for e in events}
    rows = json.dumps(await runs.all_rows(), default=str) + json.dumps(await state.all_rows(), default=str)
    for value in [w.session.refresh_token.reveal(), *(v.secret for v in w.world.directory.values.values())]:
        assert value not in rows
    await process().work(w.session, run.run_id)  # a resume of a finished run retries only the failed tenant
    again = await process().progress(run.run_id)
    assert again["counts"] == {**doc["counts"]}
