"""The inventory pass (shared/inventory_pass.py) with the real adapters as bootstrap builds them: Graph's delta reads
over real HTTPS against the sandbox, the Tables store on Azurite. First a full read, then only changes; `@removed`;
a stale delta token (seven days, or a synchronization reset) forces a full read that also sweeps what left; a
throttled page is retried; tenants stay apart; first-party and SAML credentials are marked, the rotator's own
targets `managed`; nothing is written to Graph and no secret reaches the store."""

from __future__ import annotations

import json
import logging
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from sandbox.inventory import Population, generated_application, generated_service_principal
from shared.adapters.inventory import FILTER_IDS
from shared.bootstrap import Services
from shared.domain import Target
from shared.inventory import MICROSOFT_TENANT, CredentialKind, InventoryQuery, ObjectKind
from shared.inventory_pass import CustomerTenant, inventory_tenant, owners_refresh_due, run_inventory
from tests.rotation import conftest as rotation
from tests.rotation.conftest import Customer, World

world, rotator, svc = rotation.world, rotation.rotator, rotation.svc  # the rotation tests' fixtures

pytestmark = [pytest.mark.sandbox, pytest.mark.azurite]

APPS, SPS, PAGE = 24, 60, 20


def populate(world: World, name: str, *, apps: int = APPS, sps: int = SPS) -> Customer:
    customer = world.seed_customer(name, 40)
    world.sb.control.seed({"inventory": {"pageSize": PAGE, "populations": [
        {"tenants": [customer.tenant_id], "applications": apps, "servicePrincipals": sps, "seed": name}]}})
    return customer


def tenant_of(customer: Customer) -> CustomerTenant:
    return CustomerTenant(customer.tenant_id, customer.name, frozenset({customer.app_id}))


async def rows(svc: Services, customer: Customer, **query: Any) -> list[Any]:
    assert svc.inventory is not None
    return await svc.inventory.list_credentials(InventoryQuery(tenant_id=customer.tenant_id, **query))


def delta_reads(svc: Services) -> int:
    assert svc.inventory_source is not None
    return svc.inventory_source.calls


async def test_the_first_pass_reads_everything_and_marks_managed_first_party_and_saml(world: World,
                                                                                      svc: Services) -> None:
    customer = populate(world, "Inventoried")
    assert svc.inventory_source is not None and svc.inventory is not None
    passes = await inventory_tenant(svc.inventory_source, svc.inventory, tenant_of(customer))
    by_kind = {p.object_kind: p for p in passes}
    assert all(p.full and not p.restarted for p in passes)
    assert by_kind[ObjectKind.APPLICATION].objects == APPS + 1  # + the seeded Proofpoint app
    assert by_kind[ObjectKind.SERVICE_PRINCIPAL].pages == 4  # 60 generated + the rotator's own, 20 a page
    stored = await rows(svc, customer)
    # Exactly the credentials the generator made (computed here from the same seed) plus the Proofpoint secret.
    apps = [generated_application(customer.tenant_id, _pop(world, customer), i) for i in range(APPS)]
    sps = [generated_service_principal(customer.tenant_id, _pop(world, customer), i) for i in range(SPS)]
    want = {c["keyId"] for o in apps + sps for c in o["passwordCredentials"] + o["keyCredentials"]}
    assert {r.key_id for r in stored} == want | {customer.key_id}
    [managed] = [r for r in stored if r.managed]
    assert (managed.key_id, managed.app_id, managed.display_name) == (customer.key_id, customer.app_id,
                                                                       "Proofpoint Essentials")
    first_party = {o["id"] for o in sps if o["appOwnerOrganizationId"] == MICROSOFT_TENANT
                   or o["servicePrincipalType"] == "ManagedIdentity"}
    assert {r.object_id for r in stored if r.first_party} <= first_party
    assert all(r.first_party == (r.object_id in first_party) for r in stored)
    saml_sps = {o["id"] for o in sps if o["preferredTokenSigningKeyThumbprint"]}
    assert saml_sps and {r.object_id for r in stored if r.saml} == saml_sps
    for row in (r for r in stored if r.saml):
        assert row.hint == next(o for o in sps if o["id"] == row.object_id)["preferredTokenSigningKeyThumbprint"]
    assert {r.usage for r in stored if r.credential_kind is CredentialKind.CERTIFICATE} <= {"Sign", "Verify"}
    assert set(await svc.inventory.delta_links(customer.tenant_id)) == set(ObjectKind)


def _pop(world: World, customer: Customer) -> Population:
    # The population's epoch (when it was seeded) moves only the credentials' dates, never their ids.
    return Population(customer.name, APPS, SPS, datetime.fromisoformat("2026-01-01T00:00:00+00:00"))


async def test_the_next_pass_reads_only_changes(world: World, svc: Services,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    customer = populate(world, "Changing")
    source, store = svc.inventory_source, svc.inventory
    assert source is not None and store is not None
    await inventory_tenant(source, store, tenant_of(customer))
    before = {r.key for r in await rows(svc, customer)}
    control = world.sb.control
    # Two applications that hold credentials (a partial object of one that holds none has nothing stored to complete
    # it from: 15 % of the generated ones, so choosing at random made this test fail about one run in three).
    holding = sorted({r.object_id for r in await rows(svc, customer, object_kind=ObjectKind.APPLICATION)
                      if not r.managed})
    renewed = control.inventory_change(customer.tenant_id, {"kind": "application", "op": "renew", "ids": holding[:2],
                                                            "days": 12})
    removed = control.inventory_change(customer.tenant_id, {"kind": "servicePrincipal", "op": "delete",
                                                            "ids": [r.object_id for r in await rows(svc, customer)
                                                                    if r.saml][:1]})
    # Four added (one in eight generated applications holds no credential at all: at least one of four holds some).
    added = control.inventory_change(customer.tenant_id, {"kind": "application", "op": "add", "count": 4})
    calls = delta_reads(svc)
    queries: list[str] = []
    real = store._rows.query_entities

    def spy(query_filter: str, **kwargs: Any) -> Any:
        queries.append(query_filter)
        return real(query_filter, **kwargs)

    monkeypatch.setattr(store._rows, "query_entities", spy)
    transactions: list[set[str]] = []  # the index rows each entity-group transaction carries
    real_transaction = store._transaction

    async def counted(operations: list[tuple[str, dict[str, Any]]]) -> None:
        transactions.append({str(e["RowKey"]) for _, e in operations if str(e["RowKey"]).startswith("_index|")})
        await real_transaction(operations)

    monkeypatch.setattr(store, "_transaction", counted)
    reads: list[str] = []
    real_get, real_index_rows = store._get_row, store._index_rows

    async def read(tenant_id: str, key: str) -> Any:
        reads.append(key)
        return await real_get(tenant_id, key)

    async def read_index_rows(tenant_id: str) -> Any:
        found = await real_index_rows(tenant_id)
        reads.append(" ".join(sorted(found)))
        return found

    monkeypatch.setattr(store, "_get_row", read)
    monkeypatch.setattr(store, "_index_rows", read_index_rows)
    passes = await inventory_tenant(source, store, tenant_of(customer))
    # Only the two index rows are read, by one request: the renewed (partial) applications are completed from what
    # the index row keeps of their rows, without reading them.
    assert reads == ["_index|application _index|servicePrincipal"]
    assert delta_reads(svc) - calls == 2  # one page per kind
    assert queries == []  # the changed objects' rows by point reads (their keys from the index row), no scan
    # The removal, then one write for both kinds' changed rows and both delta links (not one per kind).
    assert transactions == [{"_index|servicePrincipal"}, {"_index|application", "_index|servicePrincipal"}]
    assert not any(p.full for p in passes)
    assert sum(p.objects for p in passes) == 6 and sum(p.removed for p in passes) == 1
    after = await rows(svc, customer)
    for object_id in renewed:
        mine = [r for r in after if r.object_id == object_id]
        assert any(r.credential_name == "renewed" and r.days_left(datetime.now(UTC)) in (11, 12) for r in mine)
        # The partial object (only passwordCredentials came) kept its name and appId from the store.
        assert all(r.display_name and r.app_id for r in mine)
        old = {k for k in before if k[2] == object_id}
        assert old < {r.key for r in mine}
    assert not [r for r in after if r.object_id == removed[0]]
    assert {r.object_id for r in after} & set(added)
    assert all(r.display_name and r.app_id for r in after if r.object_id in added)
    assert (await inventory_tenant(source, store, tenant_of(customer)))[0].objects == 0


async def test_a_stale_delta_token_forces_a_full_read_that_sweeps_what_left(world: World, svc: Services,
                                                                            rotator: rotation.Rotator) -> None:
    customer = populate(world, "Stale")
    source, store = svc.inventory_source, svc.inventory
    assert source is not None and store is not None
    await inventory_tenant(source, store, tenant_of(customer))
    control = world.sb.control
    gone = control.inventory_change(customer.tenant_id, {"kind": "application", "op": "delete", "count": 3})
    gone = [g for g in gone if any(r.object_id == g for r in await rows(svc, customer))]
    control.set_clock(8 * 86400)  # the delta links are past Graph's seven days
    async with rotator(timedelta(days=8)) as later:  # a process eight days on (its tokens are new)
        assert later.inventory_source is not None and later.inventory is not None
        passes = await inventory_tenant(later.inventory_source, later.inventory, tenant_of(customer))
        assert all(p.restarted and p.full for p in passes)
        after = await rows(later, customer)
        assert not {r.object_id for r in after} & set(gone)
        control.inventory_sync_reset(customer.tenant_id)  # and Graph's 410 Gone synchronization reset
        passes = await inventory_tenant(later.inventory_source, later.inventory, tenant_of(customer))
        assert all(p.restarted for p in passes)
        assert {r.key for r in await rows(later, customer)} == {r.key for r in after}


async def test_a_throttled_page_is_retried_after_its_retry_after(world: World, svc: Services) -> None:
    customer = populate(world, "Throttled")
    source, store = svc.inventory_source, svc.inventory
    assert source is not None and store is not None
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    source.sleep = sleep
    world.sb.control.add_fault("graph", path=r"/servicePrincipals/delta", status=429, retry_after=3, count=2,
                               skip=1)  # the second and third page requests
    passes = await inventory_tenant(source, store, tenant_of(customer))
    assert waits == [3.0, 3.0]
    tenant = next(t for t in world.sb.control.state()["tenants"] if t["id"] == customer.tenant_id)
    seeded = len(tenant["servicePrincipals"])
    assert {p.object_kind: p.objects for p in passes}[ObjectKind.SERVICE_PRINCIPAL] == SPS + seeded


async def test_a_throttled_owner_listing_page_is_retried_and_the_owners_kept(world: World, svc: Services) -> None:
    customer = populate(world, "ThrottledOwners")
    source, store = svc.inventory_source, svc.inventory
    assert source is not None and store is not None
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    source.sleep = sleep
    world.sb.control.add_fault("graph", path=r"/applications$", status=429, retry_after=2, count=1)
    await inventory_tenant(source, store, tenant_of(customer))
    assert waits == [2.0]
    assert any(r.owners for r in await rows(svc, customer, object_kind=ObjectKind.APPLICATION) if not r.managed)


async def test_tenants_stay_apart_and_a_failing_tenant_does_not_stop_the_others(world: World,
                                                                               svc: Services) -> None:
    one, two = populate(world, "Alpha"), populate(world, "Beta", apps=5, sps=5)
    missing = CustomerTenant("c0000000-0000-4000-8000-0000000002ff", "Nobody")
    source, store = svc.inventory_source, svc.inventory
    assert source is not None and store is not None
    summary = await run_inventory(source, store, [tenant_of(one), tenant_of(two), missing], concurrency=4)
    assert set(summary.failed) == {missing.tenant_id}
    mine, theirs = await rows(svc, one), await rows(svc, two)
    assert mine and theirs and not {r.object_id for r in mine} & {r.object_id for r in theirs}
    assert {r.customer for r in mine} == {"Alpha"} and {r.customer for r in theirs} == {"Beta"}
    await store.remove_tenant(two.tenant_id)
    assert await rows(svc, two) == [] and await rows(svc, one)
    assert await store.delta_links(two.tenant_id) == {}


async def test_nothing_is_written_to_graph_and_no_secret_reaches_the_store(world: World, svc: Services,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    customer = populate(world, "Untouched")
    source, store = svc.inventory_source, svc.inventory
    assert source is not None and store is not None
    guard = world.sb.control.add_fault("graph", method="POST", status=500, count=1)
    patch = world.sb.control.add_fault("graph", method="PATCH", status=500, count=1)
    await inventory_tenant(source, store, tenant_of(customer))
    world.sb.control.inventory_change(customer.tenant_id, {"kind": "application", "op": "renew", "count": 3})
    await inventory_tenant(source, store, tenant_of(customer))
    left = {f["id"] for f in world.sb.control.faults()}
    assert {guard, patch} <= left  # neither fault was ever struck: no write reached Graph
    dump = json.dumps(await store.all_rows(), default=str)
    assert customer.secret not in dump and customer.secret[3:12] not in dump
    assert "secretText" not in dump
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert customer.secret not in logged and "$deltatoken" not in logged.lower()  # nor the tenant's delta links


def test_customers_of_groups_targets_by_tenant() -> None:
    from shared.inventory_pass import customers_of

    targets = [Target("t1", "a1", "Contoso"), Target("t1", "a2", ""), Target("t2", "a3", "Fabrikam")]
    assert customers_of(targets) == [CustomerTenant("t1", "Contoso", frozenset({"a1", "a2"})),
                                     CustomerTenant("t2", "Fabrikam", frozenset({"a3"}))]


async def test_the_command_line_scans_every_registered_tenant(world: World, svc: Services) -> None:
    customer = populate(world, "Commanded", apps=6, sps=6)
    await svc.state.create_target(customer.target())
    process = world.cli("inventory", "scan")
    assert process.wait(timeout=120) == 0, process.output()
    output = process.output()
    report = json.loads(output[output.index("{"):])
    assert {(p["tenantId"], p["objectKind"], p["full"]) for p in report["passes"]} == {
        (customer.tenant_id, "application", True), (customer.tenant_id, "servicePrincipal", True)}
    assert report["failed"] == {} and report["credentials"] == len(await rows(svc, customer))
    process = world.cli("inventory", "scan")
    assert process.wait(timeout=120) == 0, process.output()
    output = process.output()
    assert not any(p["full"] for p in json.loads(output[output.index("{"):])["passes"])


async def test_the_store_writes_odd_keys_and_survives_a_row_removed_by_another_writer(world: World,
                                                                                      svc: Services) -> None:
    from shared.adapters.inventory_tables import row_key
    from shared.inventory import InventoryCredential

    store = svc.inventory
    assert store is not None
    tenant = "c0000000-0000-4000-8000-0000000002fe"

    def row(object_id: str, key_id: str) -> InventoryCredential:
        return InventoryCredential(tenant, "Odd", ObjectKind.APPLICATION, object_id, "app",
                                   "O'Brien & Co #1, Zürich 🚀", (), CredentialKind.PASSWORD, "", key_id, "ab~", "it's",
                                   None, None)

    async def mine(object_id: str) -> list[InventoryCredential]:
        return (await store.objects_credentials(tenant, ObjectKind.APPLICATION, [object_id])).get(object_id, [])

    odd = "obj 'quoted' %41 é"  # Tables keys refuse / \\ # ?; Graph's ids are GUIDs anyway
    await store.put_objects(tenant, ObjectKind.APPLICATION, {odd: [row(odd, "k1"), row(odd, "k2")]}, stored={odd: []})
    assert {r.key_id for r in await mine(odd)} == {"k1", "k2"}
    assert {r.display_name for r in await mine(odd)} == {"O'Brien & Co #1, Zürich 🚀"}  # UTF-8 in the batch body
    # Another writer removed k2 behind the store's back: its index still names k2 (the index may name rows that are
    # gone, never miss one). A read skips the missing row; the next write's delete of it fails the whole batch, and
    # the rows are written one by one.
    assert store._rows is not None
    await store._rows.delete_entity(tenant, row_key("application", odd, "k2"))
    assert [r.key_id for r in await mine(odd)] == ["k1"]
    await store.put_objects(tenant, ObjectKind.APPLICATION, {odd: [row(odd, "k3")]})
    assert [r.key_id for r in await mine(odd)] == ["k3"]
    assert [r.key_id for r in await store.list_credentials(InventoryQuery(tenant_id=tenant))] == ["k3"]
    await store.remove_objects(tenant, ObjectKind.APPLICATION, [odd, "never-there"])
    assert await store.object_ids(tenant, ObjectKind.APPLICATION) == set()


async def test_times_are_stored_as_the_same_iso_text_by_the_batch_and_by_the_one_by_one_writes(
        world: World, svc: Services) -> None:
    """The store's batch body writes a row's times by orjson, the one-by-one fallback through the SDK: both store the
    text `isoformat()` gives in UTC (a string property, never an `Edm.DateTime`), and read back the same instants."""
    from datetime import timezone

    from shared.adapters.inventory_tables import row_key
    from shared.inventory import InventoryCredential

    store = svc.inventory
    assert store is not None and store._rows is not None
    tenant = "c0000000-0000-4000-8000-0000000003fe"
    times = [(datetime(2026, 12, 1, 1, 2, 3, 4500, tzinfo=UTC), datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
             (datetime(2027, 3, 4, 5, 6, 7, tzinfo=timezone(timedelta(hours=5, minutes=30))), None),
             (None, datetime(2001, 1, 1, tzinfo=timezone(timedelta(hours=-8))))]

    def row(key_id: str, start: datetime | None, end: datetime | None) -> InventoryCredential:
        return InventoryCredential(tenant, "Times", ObjectKind.APPLICATION, "obj", "app", "Times", (),
                                   CredentialKind.PASSWORD, "", key_id, "ab~", "n", start, end)

    async def stored() -> dict[str, tuple[Any, Any]]:
        return {str(e["RowKey"]).rsplit("|", 1)[1]: (e.get("Start"), e.get("End"))
                async for e in store._rows.query_entities("PartitionKey eq @t", parameters={"t": tenant})
                if not str(e["RowKey"]).startswith("_index")}

    def text(value: datetime | None) -> str | None:
        return value.astimezone(UTC).isoformat() if value is not None else None

    await store.put_objects(tenant, ObjectKind.APPLICATION, {"obj": [row(f"k{i}", *t) for i, t in enumerate(times)]},
                            stored={"obj": []})
    written = await stored()
    assert written == {f"k{i}": (text(s), text(e)) for i, (s, e) in enumerate(times)}
    assert all(type(v) is str for pair in written.values() for v in pair if v is not None)
    # Another writer removed k0: the next write's batch fails and its rows go one by one through the SDK.
    await store._rows.delete_entity(tenant, row_key("application", "obj", "k0"))
    await store.put_objects(tenant, ObjectKind.APPLICATION, {"obj": [row(f"j{i}", *t) for i, t in enumerate(times)]})
    written = await stored()
    assert written == {f"j{i}": (text(s), text(e)) for i, (s, e) in enumerate(times)}
    assert all(type(v) is str for pair in written.values() for v in pair if v is not None)
    read = {r.key_id: (r.start, r.end) for r in await store.list_credentials(InventoryQuery(tenant_id=tenant))}
    assert read == {f"j{i}": t for i, t in enumerate(times)}


async def test_the_store_sends_straight_on_the_session_and_falls_back_to_the_sdk_pipeline(
        world: World, svc: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    """The store's batches and reads go straight onto the process's aiohttp session, signed by the SDK's policies
    (Azurite checks the Shared Key signature); a dropped connection or an unexpected answer sends the request again
    through the SDK's pipeline (its retries), and a refusal still surfaces as the SDK's error, translated."""
    import base64
    import os
    import re

    import aiohttp
    from azure.core.pipeline.transport import AioHttpTransport
    from azure.data.tables.aio import TableServiceClient

    from shared.adapters.inventory_tables import TablesInventoryStore, _Direct
    from shared.errors import RotationError
    from shared.inventory import InventoryCredential

    store = svc.inventory
    assert store is not None
    tenant = "c0000000-0000-4000-8000-0000000004fe"
    runs: list[str] = []
    pipeline = store._pipeline()
    real_run = pipeline.run

    async def counted(request: Any, **kwargs: Any) -> Any:
        runs.append(request.method)
        return await real_run(request, **kwargs)

    monkeypatch.setattr(pipeline, "run", counted)

    def row(object_id: str, key_id: str) -> InventoryCredential:
        return InventoryCredential(tenant, "Direct", ObjectKind.APPLICATION, object_id, "app", "Direct", (),
                                   CredentialKind.PASSWORD, "", key_id, "ab~", "n", None, None)

    async def round_trip(object_id: str) -> None:
        await store.put_objects(tenant, ObjectKind.APPLICATION, {object_id: [row(object_id, "k1")]}, delta_link="L")
        assert (await store.delta_links(tenant)) == {ObjectKind.APPLICATION: "L"}
        found = await store.objects_credentials(tenant, ObjectKind.APPLICATION, [object_id])
        assert [c.key_id for c in found[object_id]] == ["k1"]

    await round_trip("straight")
    assert runs == []  # a batch, the index query and a point read, none through the pipeline
    # Keys that need quoting in the address are signed as aiohttp sends them (Azurite checks): still no fallback.
    usual = tenant
    tenant = "t 'odd' é"
    for object_id in ("obj 'quoted' %41 é", "a+b=c&d", "(paren),x;y:z@w!$*"):
        await round_trip(object_id)
    assert runs == []
    tenant = usual
    real_send = _Direct.send

    async def dropped(self: _Direct, request: Any) -> Any:
        raise aiohttp.ClientConnectionError("connection reset")

    monkeypatch.setattr(_Direct, "send", dropped)
    await round_trip("dropped")
    assert runs == ["POST", "GET", "GET"]

    async def busy(self: _Direct, request: Any) -> Any:
        await real_send(self, request)  # sent, then answered as if the server were busy
        return 503, {}, b""

    runs.clear()
    monkeypatch.setattr(_Direct, "send", busy)
    await round_trip("busy")
    assert runs == ["POST", "GET", "GET"]
    monkeypatch.setattr(_Direct, "send", real_send)
    # A refusal (a wrong account key: 403 on the direct send and on the SDK's) is the SDK's error, translated.
    direct = store._direct()
    assert direct is not None
    connection = os.environ["STATE_TABLES_CONNECTION_STRING"]
    wrong = re.sub(r"AccountKey=[^;]+", "AccountKey=" + base64.b64encode(b"not the key").decode(), connection)
    transport = AioHttpTransport(session=direct.session, session_owner=False)
    refused_store = TablesInventoryStore(TableServiceClient.from_connection_string(wrong, transport=transport),
                                         prefix=store._rows.table_name.removesuffix("inventory"))
    refused_store._ready = True
    for call in (refused_store.put_objects(tenant, ObjectKind.APPLICATION, {"no": [row("no", "k1")]}),
                 refused_store.delta_links(tenant), refused_store.objects_credentials(
                     tenant, ObjectKind.APPLICATION, ["straight"])):
        with pytest.raises(RotationError) as refused:
            await call
        assert refused.value.code == "StateStoreError" and "HttpResponseError" in str(refused.value)
    assert (await store.delta_links(tenant)) == {ObjectKind.APPLICATION: "L"}  # nothing written by the refused


async def test_the_store_signs_its_direct_requests_with_the_managed_identitys_bearer_token() -> None:
    """On Azure the store reaches Tables with the function's managed identity (bootstrap: `credential=home`): the
    direct send takes the SDK's bearer token policy, which asks the credential for a `https://storage.azure.com`
    token and sends it (over TLS only), with the SDK's `x-ms-date`, `x-ms-version` and user agent. A local TLS
    server stands for Tables here (Azurite takes Shared Key only over plain HTTP). It also answers the index query in
    two parts, as Azure Tables may ("Query timeout and pagination": continuation headers, even with few rows): the
    store follows them."""
    import ssl

    import aiohttp
    import trustme
    from aiohttp import web
    from azure.core.credentials import AccessToken
    from azure.core.pipeline.transport import AioHttpTransport
    from azure.data.tables.aio import TableServiceClient

    from shared.adapters.inventory_tables import TablesInventoryStore

    class Identity:
        scopes: list[tuple[str, ...]] = []

        async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
            self.scopes.append(scopes)
            return AccessToken("mi-token", int(datetime.now(UTC).timestamp()) + 3600)

    seen: list[Any] = []

    async def entity(request: web.Request) -> web.Response:
        seen.append(request.headers)
        if request.match_info["address"] == "inventory()":  # the index query: answered in two parts
            if "NextPartitionKey" not in request.query:
                return web.json_response({"value": [{"RowKey": "_index|application", "Link": "A"}]}, headers={
                    "x-ms-continuation-NextPartitionKey": "1!8!dDE-", "x-ms-continuation-NextRowKey": "1!8!cg--"})
            assert (request.query["NextPartitionKey"], request.query["NextRowKey"]) == ("1!8!dDE-", "1!8!cg--")
            assert request.query["$filter"] == "PartitionKey eq 't1' and RowKey ge '_index|' and RowKey lt '_index|~'"
            return web.json_response({"value": [{"RowKey": "_index|servicePrincipal", "Link": "S"}]})
        return web.json_response({"odata.error": {"code": "ResourceNotFound", "message": {"value": "none"}}},
                                 status=404)

    ca = trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_tls)
    client_tls = ssl.create_default_context()
    ca.configure_trust(client_tls)
    app = web.Application()
    app.router.add_get("/account/{address}", entity)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_tls)
    await site.start()
    port = runner.addresses[0][1]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_tls)) as session:
        service = TableServiceClient(f"https://127.0.0.1:{port}/account", credential=Identity(),
                                     transport=AioHttpTransport(session=session, session_owner=False))
        store = TablesInventoryStore(service)
        direct = store._direct()
        assert direct is not None and type(direct.auth).__name__ == "AsyncBearerTokenChallengePolicy"
        runs: list[Any] = []
        store._pipeline().run = lambda *a, **k: runs.append(a)  # type: ignore[method-assign]
        assert await store._get_row("t1", "_index|application") is None
        store._ready = True
        assert await store.delta_links("t1") == {ObjectKind.APPLICATION: "A", ObjectKind.SERVICE_PRINCIPAL: "S"}
        assert runs == []  # answered on the direct send (404: no such row; the query's two parts)
    await runner.cleanup()
    assert Identity.scopes == [("https://storage.azure.com/.default",)]  # one token, kept by the SDK's policy
    assert [h["Authorization"] for h in seen] == ["Bearer mi-token"] * 3
    assert seen[0]["x-ms-version"] and seen[0]["x-ms-date"] and "azsdk-python-data-tables" in seen[0]["User-Agent"]


@pytest.mark.parametrize("overflow", [False, True], ids=["indexed", "overflow"])
async def test_many_objects_rows_are_found_by_the_index_row_or_by_key_ranges(
        world: World, svc: Services, monkeypatch: pytest.MonkeyPatch, overflow: bool) -> None:
    from shared.adapters import inventory_tables
    from shared.inventory import InventoryCredential

    if overflow:  # an index too large for its row (1 MiB an entity): rows are found by key-range queries instead
        monkeypatch.setattr(inventory_tables, "CHUNK", 40)
        monkeypatch.setattr(inventory_tables, "MAX_CHUNKS", 2)
    store = svc.inventory
    assert store is not None
    tenant = "c0000000-0000-4000-8000-0000000002fd"

    def row(object_id: str, key_id: str, kind: ObjectKind = ObjectKind.APPLICATION) -> InventoryCredential:
        return InventoryCredential(tenant, "Many", kind, object_id, "app", "App", (), CredentialKind.PASSWORD, "",
                                   key_id, "", "", None, None)

    ids = [f"o{n:02d}" for n in range(40)]
    await store.put_objects(tenant, ObjectKind.APPLICATION, {o: [row(o, "k1"), row(o, "k2")] for o in ids},
                            stored={o: [] for o in ids})
    sp = row("o01", "sp", ObjectKind.SERVICE_PRINCIPAL)
    await store.put_objects(tenant, ObjectKind.SERVICE_PRINCIPAL, {"o01": [sp]}, stored={"o01": []})
    await store.save_delta_links(tenant, {ObjectKind.APPLICATION: "https://graph/next"})
    # Another process (nothing cached) finds the same rows, from the index row or, when it overflowed, by queries.
    fresh = inventory_tables.TablesInventoryStore(store._service, prefix=store._rows.table_name[:-len("inventory")])
    queries: list[str] = []
    real = fresh._rows.query_entities

    def spy(query_filter: str, **kwargs: Any) -> Any:
        queries.append(query_filter)
        return real(query_filter, **kwargs)

    monkeypatch.setattr(fresh._rows, "query_entities", spy)
    assert await fresh.delta_links(tenant) == {ObjectKind.APPLICATION: "https://graph/next"}
    for wanted in (ids[:1], ids[3:12], ids[:30], [*ids[:2], "never-there"]):
        found = await fresh.objects_credentials(tenant, ObjectKind.APPLICATION, wanted)
        assert sorted(found) == sorted(o for o in wanted if o in ids)
        assert all(sorted(r.key_id for r in rows) == ["k1", "k2"] for rows in found.values())
    assert [r.key_id for r in (await fresh.objects_credentials(tenant, ObjectKind.SERVICE_PRINCIPAL, ["o01"]))["o01"]
            ] == ["sp"]
    assert await fresh.object_ids(tenant, ObjectKind.APPLICATION) == set(ids)
    await fresh.put_objects(tenant, ObjectKind.APPLICATION, {"o00": [row("o00", "k3")]})
    await fresh.remove_objects(tenant, ObjectKind.APPLICATION, ids[1:20])
    assert bool(queries) == overflow  # with the index row: point reads only, never a query (a scan on Azurite)
    # What the fresh store wrote, the first store (its cache stale) sees from the next pass on (delta_links).
    await store.delta_links(tenant)
    assert await store.object_ids(tenant, ObjectKind.APPLICATION) == {"o00", *ids[20:]}
    stored = await store.list_credentials(InventoryQuery(tenant_id=tenant, object_kind=ObjectKind.APPLICATION))
    assert sorted((r.object_id, r.key_id) for r in stored) == sorted(
        [("o00", "k3")] + [(o, k) for o in ids[20:] for k in ("k1", "k2")])
    index_row = await store._rows.get_entity(tenant, inventory_tables.INDEX_ROW + "application")
    assert bool(index_row.get("Overflow")) == overflow


async def test_a_write_carrying_the_delta_link_saves_it_with_its_last_transaction_only(
        world: World, svc: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.adapters.inventory_tables import TablesInventoryStore
    from shared.errors import RotationError
    from shared.inventory import InventoryCredential

    store = svc.inventory
    assert isinstance(store, TablesInventoryStore)
    tenant = "c0000000-0000-4000-8000-0000000003fe"
    kind = ObjectKind.SERVICE_PRINCIPAL

    def rows(n: int, key: str) -> dict[str, list[InventoryCredential]]:
        return {f"o{i:03}": [InventoryCredential(tenant, "Big", kind, f"o{i:03}", "app", "SP", (),
                                                 CredentialKind.PASSWORD, "", key, "h", "n", None, None)]
                for i in range(n)}

    await store.save_delta_links(tenant, {kind: "https://graph/old"})
    sent: list[list[str]] = []
    real = store._transaction

    async def second_fails(operations: list[tuple[str, dict[str, Any]]]) -> None:
        sent.append([str(e.get("Link", "")) for _, e in operations if str(e["RowKey"]).startswith("_index|")])
        if len(sent) == 2:
            raise RotationError("cut", code="Crash")  # not a TableTransactionError: no one-by-one retry
        await real(operations)

    monkeypatch.setattr(store, "_transaction", second_fails)
    with pytest.raises(RotationError):  # 150 rows: two transactions; the second never lands
        await store.put_objects(tenant, kind, rows(150, "k1"), stored={}, delta_link="https://graph/new")
    assert sent == [["https://graph/old"], ["https://graph/new"]]  # the first one still carries the old link
    assert (await store.delta_links(tenant))[kind] == "https://graph/old"
    sent.clear()
    monkeypatch.setattr(store, "_transaction", real)
    await store.put_objects(tenant, kind, rows(150, "k2"), delta_link="https://graph/new")
    assert (await store.delta_links(tenant))[kind] == "https://graph/new"
    assert {r.key_id for r in await store.list_credentials(InventoryQuery(tenant_id=tenant))} == {"k2"}
    # No rows to write: the link alone is saved.
    await store.put_objects(tenant, kind, {}, delta_link="https://graph/newer")
    assert (await store.delta_links(tenant))[kind] == "https://graph/newer"


async def test_owners_come_from_a_listing_on_the_full_read_then_only_changed_objects_are_read(
        world: World, svc: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    from sandbox.inventory import generated_owners

    customer = populate(world, "Owned")
    source, store = svc.inventory_source, svc.inventory
    assert source is not None and store is not None
    apps = [generated_application(customer.tenant_id, _pop(world, customer), i) for i in range(APPS)]
    crowded = next(a["id"] for a in apps if a["passwordCredentials"])
    # An app with 25 owners: the list's $expand gives 20 and no nextLink, so the pass reads it one by one.
    world.sb.control.inventory_change(customer.tenant_id, {"kind": "application", "op": "owners",
                                                           "ids": [crowded], "owners": 25})
    await inventory_tenant(source, store, tenant_of(customer))
    stored = await rows(svc, customer)
    sps = [generated_service_principal(customer.tenant_id, _pop(world, customer), i) for i in range(SPS)]
    generated = {o["id"]: o for o in apps + sps if o["id"] != crowded}
    apps_by_id = {a["id"]: a for a in apps}

    def names(obj: dict[str, Any]) -> tuple[str, ...]:
        found = {o.get("userPrincipalName") or o["displayName"] for o in generated_owners(customer.tenant_id, obj)}
        return tuple(sorted(found, key=str.lower))

    for row in stored:
        if row.object_id in generated:  # the owners Graph lists: users by principal name, principals by name
            assert row.owners == names(generated[row.object_id]), row.display_name
    assert {len(r.owners) for r in stored if r.object_id == crowded} == {25}
    assert any(r.owners for r in stored) and any(r.owners == () for r in stored)
    assert all(r.owners == () for r in stored if r.first_party)
    # One listing page per kind (100 objects a page with $expand) and the crowded app's own read: not one per object.
    assert source.owner_calls == 3
    # The Proofpoint app (seeded) is owned by the rotator's service principal: Graph names it.
    [proofpoint] = [r for r in stored if r.managed]
    assert proofpoint.owners and all(proofpoint.owners)
    # A daily round reads the owners of new objects only; an owner change alone is seen on the tenant's weekly day.
    changed = sorted(r.object_id for r in stored if r.object_kind is ObjectKind.APPLICATION and not r.managed
                     and r.object_id != crowded)[:1]
    control = world.sb.control
    control.inventory_change(customer.tenant_id, {"kind": "application", "op": "renew", "ids": changed})
    control.inventory_change(customer.tenant_id, {"kind": "application", "op": "owners", "ids": changed,
                                                  "owners": 2})
    added = control.inventory_change(customer.tenant_id, {"kind": "application", "op": "add", "count": 24})
    # Six of them with 25 owners: the filtered read's $expand gives 20, so those are read one by one.
    control.inventory_change(customer.tenant_id, {"kind": "application", "op": "owners", "ids": added[:6],
                                                  "owners": 25})
    before = source.owner_calls
    asked: list[list[str]] = []  # the ids of each filtered owners read (one or more a delta page)
    filtered = source._owners_filtered

    async def recorded(tenant_id: str, kind: ObjectKind, ids: Any) -> Any:
        asked.append(list(ids))
        return await filtered(tenant_id, kind, ids)

    monkeypatch.setattr(source, "_owners_filtered", recorded)
    day = next(date(2026, 12, d) for d in range(1, 8) if owners_refresh_due(customer.tenant_id, date(2026, 12, d)))
    await inventory_tenant(source, store, tenant_of(customer), today=day + timedelta(days=1))
    after = await rows(svc, customer)
    holding_added = {r.object_id for r in after if r.object_id in added}
    crowded_added = holding_added & set(added[:6])
    assert len(holding_added) > 8 and crowded_added  # most generated apps hold credentials
    # The new objects holding credentials read together, each once, at most 15 a request ($filter=id in): the 25
    # changes fill two delta pages of 20, so at most two requests a page; the crowded ones alone besides.
    assert sorted(i for ids in asked for i in ids) == sorted(holding_added)
    assert max(len(ids) for ids in asked) <= FILTER_IDS and len(asked) <= 4
    assert source.owner_calls - before == len(asked) + len(crowded_added)
    assert {len(r.owners) for r in after if r.object_id in crowded_added} == {25}
    for row in after:  # the owners the filtered read gave are those the object's own owners read gives
        if row.object_id in holding_added:
            assert row.owners == await source.owners(customer.tenant_id, ObjectKind.APPLICATION, row.object_id)
    assert any(r.owners for r in after if r.object_id in holding_added)
    assert {r.owners for r in after if r.object_id == changed[0]} == {names(apps_by_id[changed[0]])}
    await inventory_tenant(source, store, tenant_of(customer), today=day)  # its weekly day: listed again
    [owners] = {r.owners for r in await rows(svc, customer) if r.object_id == changed[0]}
    assert len(owners) == 2 and owners != names(apps_by_id[changed[0]])


async def test_an_object_that_gains_its_first_credential_takes_the_owners_the_full_read_listed(
        world: World, svc: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    from sandbox.inventory import generated_owners
    from shared.adapters.inventory_tables import TablesInventoryStore

    customer = populate(world, "Bare")
    source, store = svc.inventory_source, svc.inventory
    assert source is not None and isinstance(store, TablesInventoryStore)
    apps = [generated_application(customer.tenant_id, _pop(world, customer), i) for i in range(APPS)]
    sps = [generated_service_principal(customer.tenant_id, _pop(world, customer), i) for i in range(SPS)]

    def names(obj: dict[str, Any]) -> tuple[str, ...]:
        found = {o.get("userPrincipalName") or o["displayName"] for o in generated_owners(customer.tenant_id, obj)}
        return tuple(sorted(found, key=str.lower))

    def bare(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:  # no credential, and the customer's own
        return [o for o in objects if not o["passwordCredentials"] and not o["keyCredentials"]
                and o.get("appOwnerOrganizationId") != MICROSOFT_TENANT
                and o.get("servicePrincipalType") != "ManagedIdentity"]

    bare_apps, bare_sps = bare(apps), bare(sps)
    assert bare_apps and bare_sps and any(names(o) for o in bare_apps + bare_sps)
    await inventory_tenant(source, store, tenant_of(customer))
    control = world.sb.control
    # Each gains its first secret (an app its first client secret, an SP its first credential); two apps are new.
    control.inventory_change(customer.tenant_id, {"kind": "application", "op": "renew",
                                                  "ids": [o["id"] for o in bare_apps]})
    control.inventory_change(customer.tenant_id, {"kind": "servicePrincipal", "op": "renew",
                                                  "ids": [o["id"] for o in bare_sps]})
    added = control.inventory_change(customer.tenant_id, {"kind": "application", "op": "add", "count": 2})
    asked: list[str] = []  # the ids of every owners read, filtered or one by one
    filtered, one = source._owners_filtered, source.owners

    async def recorded(tenant_id: str, kind: ObjectKind, ids: Any) -> Any:
        asked.extend(ids)
        return await filtered(tenant_id, kind, ids)

    async def recorded_one(tenant_id: str, kind: ObjectKind, object_id: str) -> Any:
        asked.append(object_id)
        return await one(tenant_id, kind, object_id)

    monkeypatch.setattr(source, "_owners_filtered", recorded)
    monkeypatch.setattr(source, "owners", recorded_one)
    before = source.owner_calls
    passes = await inventory_tenant(source, store, tenant_of(customer))
    assert not any(p.full for p in passes)
    after = await rows(svc, customer)
    holding_added = {r.object_id for r in after if r.object_id in added}
    # Only the objects created since the listing are read (together): none of those that gained a credential.
    assert sorted(asked) == sorted(holding_added) and source.owner_calls - before == (1 if holding_added else 0)
    for obj in bare_apps + bare_sps:
        mine = [r for r in after if r.object_id == obj["id"]]
        assert [r.credential_name for r in mine] == ["renewed"]
        assert mine[0].owners == names(obj), obj["displayName"]  # as the full read's listing gave them
    for row in (r for r in after if r.object_id in holding_added):  # a new object still gets its own owners
        assert row.owners == await one(customer.tenant_id, ObjectKind.APPLICATION, row.object_id)



def _refresh_day(tenant_id: str) -> date:
    return next(date(2026, 12, d) for d in range(1, 8) if owners_refresh_due(tenant_id, date(2026, 12, d)))


async def test_an_index_row_without_a_listing_reads_the_owners_and_the_weekly_refresh_keeps_them_fresh(
        world: World, svc: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    from azure.data.tables import UpdateMode

    from shared.adapters.inventory_tables import INDEX_ROW, TablesInventoryStore

    customer = populate(world, "Relisted")
    source, store = svc.inventory_source, svc.inventory
    assert source is not None and isinstance(store, TablesInventoryStore)
    sps = [generated_service_principal(customer.tenant_id, _pop(world, customer), i) for i in range(SPS)]
    bare = [o["id"] for o in sps if not o["passwordCredentials"] and not o["keyCredentials"]
            and o["appOwnerOrganizationId"] != MICROSOFT_TENANT and o["servicePrincipalType"] != "ManagedIdentity"]
    assert len(bare) >= 2
    await inventory_tenant(source, store, tenant_of(customer))
    key = INDEX_ROW + ObjectKind.SERVICE_PRINCIPAL.value
    entity = await store._get_row(customer.tenant_id, key)
    assert entity is not None and entity["Listed"] >= 1
    asked: list[str] = []
    filtered = source._owners_filtered

    async def recorded(tenant_id: str, kind: ObjectKind, ids: Any) -> Any:
        asked.extend(ids)
        return await filtered(tenant_id, kind, ids)

    monkeypatch.setattr(source, "_owners_filtered", recorded)
    control = world.sb.control
    # The weekly refresh lists the owners again, those of objects without rows too: a bare principal's new owners
    # are what the next round gives it when it gains its first secret, without a read.
    control.inventory_change(customer.tenant_id, {"kind": "servicePrincipal", "op": "owners", "ids": bare[:1],
                                                  "owners": 3})
    writes: list[set[str]] = []  # the index rows each entity-group transaction carries
    transaction = store._transaction

    async def counted(operations: list[tuple[str, dict[str, Any]]]) -> None:
        writes.append({str(e["RowKey"]) for _, e in operations if str(e["RowKey"]).startswith(INDEX_ROW)})
        await transaction(operations)

    monkeypatch.setattr(store, "_transaction", counted)
    both = {INDEX_ROW + k.value for k in ObjectKind}
    await inventory_tenant(source, store, tenant_of(customer), today=_refresh_day(customer.tenant_id))
    # The rounds' delta links, then only the listing that changed (the applications' is as it was).
    assert writes == [both, {key}]
    writes.clear()
    await inventory_tenant(source, store, tenant_of(customer), today=_refresh_day(customer.tenant_id))
    assert writes == [both]  # listed again, nothing changed: nothing but the delta links written
    control.inventory_change(customer.tenant_id, {"kind": "servicePrincipal", "op": "renew", "ids": bare[:1]})
    await inventory_tenant(source, store, tenant_of(customer))
    [first] = [r for r in await rows(svc, customer) if r.object_id == bare[0]]
    assert asked == [] and len(first.owners) == 3
    assert first.owners == await source.owners(customer.tenant_id, ObjectKind.SERVICE_PRINCIPAL, bare[0])
    # The index row as written before it kept a listing (its properties left out), read by a fresh process.
    entity = await store._get_row(customer.tenant_id, key)
    assert entity is not None and entity.get("Listed")
    old = {k: v for k, v in entity.items() if k != "Listed" and not (k[0] == "L" and k[1:].isdigit())}
    await store._rows.upsert_entity(old, mode=UpdateMode.REPLACE)
    fresh = TablesInventoryStore(store._service, prefix=store._rows.table_name[:-len("inventory")])
    control.inventory_change(customer.tenant_id, {"kind": "servicePrincipal", "op": "renew", "ids": bare[1:2]})
    await inventory_tenant(source, fresh, tenant_of(customer))
    assert asked == bare[1:2]  # read from Graph, as before the listing was kept
    [second] = [r for r in await rows(svc, customer) if r.object_id == bare[1]]
    assert second.owners == await source.owners(customer.tenant_id, ObjectKind.SERVICE_PRINCIPAL, bare[1])


async def test_graph_refuses_expand_on_delta_and_answers_owners_with_select(world: World, svc: Services) -> None:
    import aiohttp

    from shared.adapters.graph import GraphAnswer, get_json

    customer = populate(world, "Expand", sps=130)
    source = svc.inventory_source
    assert source is not None
    # The adapter's own session, credential and Graph base: the requests the product would send.
    session, credential, base = source._session, source._credentials.graph(customer.tenant_id), source._base
    limit = aiohttp.ClientTimeout(total=30)
    with pytest.raises(GraphAnswer) as refused:
        await get_json(session, credential, f"{base}/applications/delta", {"$expand": "owners"}, limit)
    assert refused.value.status == 400
    app = generated_application(customer.tenant_id, _pop(world, customer), 0)
    doc = await get_json(session, credential, f"{base}/applications/{app['id']}/owners",
                         {"$select": "id,userPrincipalName"}, limit)
    assert all(set(o) <= {"@odata.type", "id", "userPrincipalName"} for o in doc["value"])
    with pytest.raises(GraphAnswer) as missing:
        await get_json(session, credential, f"{base}/applications/{'0' * 8}-0000-4000-8000-{'0' * 12}/owners",
                       None, limit)
    assert (missing.value.status, missing.value.code) == (404, "Request_ResourceNotFound")
    # The list with $expand: 100 objects a page whatever $top asks, then a nextLink with the rest.
    first = await get_json(session, credential, f"{base}/servicePrincipals",
                           {"$select": "id", "$expand": "owners($select=id,userPrincipalName)", "$top": "999"}, limit)
    assert len(first["value"]) == 100 and all(set(o) == {"id", "owners"} for o in first["value"])
    rest = await get_json(session, credential, first["@odata.nextLink"], None, limit)
    assert len(rest["value"]) >= 30 and "@odata.nextLink" not in rest  # 130 generated + the seeded principals
    assert not {o["id"] for o in first["value"]} & {o["id"] for o in rest["value"]}
    with pytest.raises(GraphAnswer) as other:
        await get_json(session, credential, f"{base}/applications", {"$expand": "memberOf"}, limit)
    assert other.value.status == 400
    # The list filtered on ids: the objects held among them (an unknown id left out), owners expanded; at most 15.
    apps = [generated_application(customer.tenant_id, _pop(world, customer), i)["id"] for i in range(3)]
    unknown = f"{'0' * 8}-0000-4000-8000-{'0' * 12}"
    expand = {"$select": "id", "$expand": "owners($select=id,userPrincipalName)"}
    doc = await get_json(session, credential, f"{base}/applications",
                         {**expand, "$filter": "id in (" + ",".join(f"'{i}'" for i in [*apps, unknown]) + ")"}, limit)
    assert sorted(o["id"] for o in doc["value"]) == sorted(apps) and "@odata.nextLink" not in doc
    for item in doc["value"]:
        alone = await get_json(session, credential, f"{base}/applications/{item['id']}/owners",
                               {"$select": "id,userPrincipalName"}, limit)
        assert sorted(o["id"] for o in item["owners"]) == sorted(o["id"] for o in alone["value"])
    one = await get_json(session, credential, f"{base}/applications", {**expand, "$filter": f"id eq '{apps[1]}'"},
                         limit)
    assert [o["id"] for o in one["value"]] == [apps[1]]
    sixteen = ",".join(f"'{unknown[:-2]}{n:02}'" for n in range(16))
    for refused_filter in (f"id in ({sixteen})", f"appId eq '{apps[0]}'", "id in ()"):
        with pytest.raises(GraphAnswer) as bad:
            await get_json(session, credential, f"{base}/applications", {**expand, "$filter": refused_filter}, limit)
        assert bad.value.status == 400, refused_filter


async def test_both_kinds_last_rows_and_links_share_transactions_and_the_links_ride_on_the_last(
        world: World, svc: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.adapters.inventory_tables import TablesInventoryStore
    from shared.errors import RotationError
    from shared.inventory import InventoryCredential, RoundEnd

    store = svc.inventory
    assert isinstance(store, TablesInventoryStore)
    tenant = "c0000000-0000-4000-8000-0000000004fe"
    apps, sps = ObjectKind.APPLICATION, ObjectKind.SERVICE_PRINCIPAL

    def rows(kind: ObjectKind, n: int, key: str) -> dict[str, list[InventoryCredential]]:
        return {f"o{i:03}": [InventoryCredential(tenant, "Both", kind, f"o{i:03}", "app", "X", (),
                                                 CredentialKind.PASSWORD, "", key, "h", "n", None, None)]
                for i in range(n)}

    await store.save_delta_links(tenant, {apps: "https://graph/a-old", sps: "https://graph/s-old"})
    sent: list[dict[str, str]] = []
    real = store._transaction

    async def second_fails(operations: list[tuple[str, dict[str, Any]]]) -> None:
        sent.append({str(e["RowKey"]): str(e.get("Link", "")) for _, e in operations
                     if str(e["RowKey"]).startswith("_index|")})
        if len(sent) == 2:
            raise RotationError("cut", code="Crash")
        await real(operations)

    monkeypatch.setattr(store, "_transaction", second_fails)
    ends = {apps: RoundEnd(rows(apps, 60, "k1"), {}, "https://graph/a-new"),
            sps: RoundEnd(rows(sps, 60, "k1"), {}, "https://graph/s-new")}
    with pytest.raises(RotationError):  # 120 rows and two index rows: two transactions; the second never lands
        await store.put_rounds(tenant, ends)
    assert sent == [{"_index|application": "https://graph/a-old", "_index|servicePrincipal": "https://graph/s-old"},
                    {"_index|application": "https://graph/a-new", "_index|servicePrincipal": "https://graph/s-new"}]
    assert await store.delta_links(tenant) == {apps: "https://graph/a-old", sps: "https://graph/s-old"}
    monkeypatch.setattr(store, "_transaction", real)
    await store.put_rounds(tenant, ends)  # the repeat converges
    assert await store.delta_links(tenant) == {apps: "https://graph/a-new", sps: "https://graph/s-new"}
    assert len(await store.list_credentials(InventoryQuery(tenant_id=tenant))) == 120
    # A small last write of both kinds: one transaction; a kind with a link and no rows adds its index row only.
    sent.clear()
    monkeypatch.setattr(store, "_transaction", second_fails)
    await store.put_rounds(tenant, {apps: RoundEnd(rows(apps, 3, "k2"), None, "https://graph/a-3"),
                                    sps: RoundEnd({}, None, "https://graph/s-3")})
    assert sent == [{"_index|application": "https://graph/a-3", "_index|servicePrincipal": "https://graph/s-3"}]
    found = await store.list_credentials(InventoryQuery(tenant_id=tenant, object_kind=apps))
    assert sorted(r.key_id for r in found).count("k2") == 3 and len(found) == 60


async def test_an_index_row_that_keeps_only_key_ids_still_finds_the_rows(world: World, svc: Services) -> None:
    from shared.adapters.inventory_tables import INDEX_ROW, TablesInventoryStore
    from shared.inventory import InventoryCredential

    store = svc.inventory
    assert isinstance(store, TablesInventoryStore)
    tenant = "c0000000-0000-4000-8000-0000000005fe"
    kind = ObjectKind.APPLICATION
    mine = [InventoryCredential(tenant, "Old", kind, "o1", "app", "App", (), CredentialKind.PASSWORD, "", k, "h", "n",
                                None, None) for k in ("k1", "k2")]
    await store.put_objects(tenant, kind, {"o1": mine}, stored={"o1": []})
    known = (await store.objects_known(tenant, kind, ["o1", "o2"]))["o1"]
    assert known is not None and known.passwords == {"k1", "k2"} and known.app_id == "app"
    # An index row as written before it kept what rows say: its object's key ids only.
    assert store._rows is not None
    await store._rows.upsert_entity({"PartitionKey": tenant, "RowKey": INDEX_ROW + kind.value, "Link": "l",
                                     "Chunks": 1, "I0": json.dumps({"o1": ["k1", "k2"]})})
    fresh = TablesInventoryStore(store._service, prefix=store._rows.table_name[:-len("inventory")])
    assert await fresh.objects_known(tenant, kind, ["o1"]) == {"o1": None}  # only its rows can tell
    assert {r.key_id for r in (await fresh.objects_credentials(tenant, kind, ["o1"]))["o1"]} == {"k1", "k2"}
    await fresh.put_objects(tenant, kind, {"o1": mine[:1]})  # the next write keeps what the rows say again
    again = (await fresh.objects_known(tenant, kind, ["o1"]))["o1"]
    assert again is not None and again.passwords == {"k1"}
