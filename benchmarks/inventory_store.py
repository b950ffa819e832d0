"""The inventory store's own CPU for one tenant, without I/O: what `TablesInventoryStore` spends on a first and a
daily pass's Tables work besides the requests themselves.

`.venv/bin/python -m benchmarks.inventory_store`: the rows of `benchmarks.inventory_rows`' tenant (100 applications,
300 service principals) written as the first pass writes them (per kind, writes of up to 99 rows, then both kinds'
last rows with their delta links in one `put_rounds`), then a daily pass (both index rows read by their query, 1
application and 3 service principals gaining a secret, one `put_rounds`). The store's `_send` is answered in the
process (a batch: `202` with a `204` per operation; the index query: the index rows the last batches carried), so
what is measured is the store's bodies, entities, index rows and answers, not aiohttp or a server
(`benchmarks.inventory_standin` measures those). Prints the process CPU per tenant (best and median of 5 rounds of
20 repetitions). It asserts nothing; it is not a test.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from azure.core.rest import HttpRequest
from azure.data.tables.aio import TableServiceClient

from benchmarks.inventory_rows import TENANT, pages
from shared.adapters.inventory import page_of
from shared.adapters.inventory_tables import INDEX_ROW, TablesInventoryStore
from shared.inventory import InventoryCredential, ObjectKind, RoundEnd, credentials_of

CONNECTION = ("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OU"
              "zFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;TableEndpoint=http://127.0.0.1:1/devstoreaccount1;")
_INDEX_PART = re.compile(rb"RowKey='(_index%7C\w+)'\) HTTP/1\.1\r\n.*?\r\n\r\n(\{.*?\})\r\n", re.DOTALL)
FULL_READ_ROWS = 99


class InProcessStore(TablesInventoryStore):
    """The store with its requests answered here, as the stand-in answers them."""

    def __init__(self, service: TableServiceClient) -> None:
        super().__init__(service)
        self._ready = True
        self.kept: dict[bytes, bytes] = {}

    async def _send(self, request: HttpRequest, ok: Any = None) -> Any:
        if request.method == "POST":
            body = request.content
            assert isinstance(body, bytes)
            self.kept.update(_INDEX_PART.findall(body))
            status, answer = 202, b"HTTP/1.1 204 No Content\r\n" * body.count(b"Content-Type: application/http")
        elif request.url.endswith(")") and "RowKey=" in request.url:  # a point read (the store before its query)
            key = request.url.rsplit("RowKey='", 1)[1][:-2].encode()
            status, answer = (200, self.kept[key]) if key in self.kept else (404, b"{}")
        else:
            status, answer = 200, b'{"value":[' + b",".join(self.kept.values()) + b"]}"
        return (status, {}, answer) if ok is not None else _Answer(status, answer)


@dataclasses.dataclass
class _Answer:
    """The response the store's `_send` gave before it sent straight on aiohttp (to run this against the base)."""

    status_code: int
    body: bytes
    headers: dict[str, str] = dataclasses.field(default_factory=dict)

    async def read(self) -> bytes:
        return self.body


def first_rows() -> dict[ObjectKind, list[dict[str, list[InventoryCredential]]]]:
    """Per kind, the writes of a full read: objects gathered until the next would pass 99 rows."""
    writes: dict[ObjectKind, list[dict[str, list[InventoryCredential]]]] = {k: [{}] for k in ObjectKind}
    for kind, body in pages():
        for obj in page_of(kind, orjson.loads(body)).objects:
            found = list(credentials_of(obj, TENANT, "Contoso"))
            if not found:
                continue
            batch = writes[kind][-1]
            if sum(map(len, batch.values())) + len(found) > FULL_READ_ROWS:
                writes[kind].append(batch := {})
            batch[obj.object_id] = found
    return writes


async def first_pass(store: InProcessStore, writes: Mapping[ObjectKind, Sequence[dict[str, Any]]]) -> None:
    for kind, batches in writes.items():
        for batch in batches[:-1]:
            await store.put_objects(TENANT, kind, batch, stored={o: [] for o in batch})
    await store.put_rounds(TENANT, {kind: RoundEnd(batches[-1], {o: [] for o in batches[-1]}, f"link-{kind.value}")
                                    for kind, batches in writes.items()})


async def daily_pass(store: InProcessStore, changed: Mapping[ObjectKind, dict[str, list[InventoryCredential]]]) -> None:
    await store.delta_links(TENANT)
    ends = {}
    for kind, objects in changed.items():
        known = await store.objects_known(TENANT, kind, list(objects))
        held = {o: sorted(k.passwords | k.certificates) if (k := known.get(o)) else [] for o in objects}
        ends[kind] = RoundEnd(objects, held, f"link2-{kind.value}")
    await store.put_rounds(TENANT, ends)


def changes(writes: Mapping[ObjectKind, Sequence[dict[str, list[InventoryCredential]]]]
            ) -> dict[ObjectKind, dict[str, list[InventoryCredential]]]:
    """1 application and 3 service principals, each with a new secret beside its rows."""
    made: dict[ObjectKind, dict[str, list[InventoryCredential]]] = {}
    for kind, count in ((ObjectKind.APPLICATION, 1), (ObjectKind.SERVICE_PRINCIPAL, 3)):
        objects = list(writes[kind][0].items())[:count]
        made[kind] = {o: [*rows, dataclasses.replace(rows[0], key_id=f"new-{o}")] for o, rows in objects}
    return made


def measure(run: Any, repetitions: int = 20) -> tuple[float, float]:
    rounds = []
    for _ in range(5):
        started = time.process_time()
        for _ in range(repetitions):
            run()
        rounds.append((time.process_time() - started) / repetitions * 1000)
    rounds.sort()
    return rounds[0], rounds[2]


def main() -> None:
    writes = first_rows()
    changed = changes(writes)
    rows = sum(len(r) for batches in writes.values() for batch in batches for r in batch.values())
    loop = asyncio.new_event_loop()
    service = TableServiceClient.from_connection_string(CONNECTION)  # one client, as a worker process holds one

    def first() -> None:
        loop.run_until_complete(first_pass(InProcessStore(service), writes))

    prepared = InProcessStore(service)
    loop.run_until_complete(first_pass(prepared, writes))

    def daily() -> None:
        store = InProcessStore(service)
        store.kept = prepared.kept
        loop.run_until_complete(daily_pass(store, changed))

    best, median = measure(first)
    print(f"store, first pass of one tenant ({rows} rows): best {best:.2f} ms, median {median:.2f} ms of CPU")
    best, median = measure(daily)
    print(f"store, daily pass of one tenant (4 objects changed): best {best:.2f} ms, median {median:.2f} ms of CPU")
    assert {k.decode().replace("%7C", "|") for k in prepared.kept} == {INDEX_ROW + k.value for k in ObjectKind}


if __name__ == "__main__":
    main()
