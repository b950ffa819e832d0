"""The first pass's own work on a tenant's pages, without I/O: `_pages` over recorded Graph pages, with a source
and a store that answer at once and keep nothing.

`.venv/bin/python -m benchmarks.inventory_pass_rows`: the sandbox's generated tenant (100 applications, 300 service
principals, as benchmarks.inventory_rows builds it) read as a full read would read it (its owner listing
included), each page parsed (`page_of`), its rows built, gathered and handed to the store. Prints the process CPU
time per tenant (best and median of 5 rounds of 20 tenants): what the pass itself costs between its requests,
apart from the store's entities and bodies (docs/benchmarks.md, sixth round). It asserts nothing; not a test.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import orjson

from benchmarks.inventory_rows import pages
from shared.adapters.inventory import expanded_owners, page_of
from shared.inventory import InventoryCredential, InventoryPage, ObjectKind, RoundEnd, StoredObject
from shared.inventory_pass import CustomerTenant, inventory_tenant

TENANT = "11111111-2222-4333-8444-555555555555"


class Source:
    """Graph's answers, parsed as the adapter parses them, at once."""

    def __init__(self, bodies: list[tuple[ObjectKind, bytes]]) -> None:
        self.bodies = bodies
        self.listings = {kind: [orjson.dumps({"value": [{"id": item["id"], "owners": [
            {"id": "u1", "userPrincipalName": "ann@contoso.com"}]} for item in orjson.loads(body)["value"]]})
            for k, body in bodies if k is kind] for kind in ObjectKind}

    async def read(self, tenant_id: str, object_kind: ObjectKind, delta_link: str | None
                   ) -> AsyncIterator[InventoryPage]:
        mine = [body for kind, body in self.bodies if kind is object_kind]
        for number, body in enumerate(mine):
            doc: dict[str, Any] = orjson.loads(body)
            doc.pop("@odata.nextLink", None)
            if number + 1 == len(mine):
                doc["@odata.deltaLink"] = "https://graph.microsoft.com/v1.0/delta?$deltatoken=x"
            yield page_of(object_kind, doc)
            await asyncio.sleep(0)

    async def owner_listing(self, tenant_id: str, object_kind: ObjectKind
                            ) -> AsyncIterator[dict[str, tuple[str, ...] | None]]:
        for body in self.listings[object_kind]:
            yield expanded_owners(orjson.loads(body))

    async def owners_of(self, tenant_id: str, object_kind: ObjectKind, object_ids: Sequence[str]
                        ) -> dict[str, tuple[str, ...] | None]:
        return dict.fromkeys(object_ids, ())

    async def owners(self, tenant_id: str, object_kind: ObjectKind, object_id: str) -> tuple[str, ...]:
        return ()


class Store:
    """A store that holds nothing and takes every write at once."""

    async def delta_links(self, tenant_id: str) -> dict[ObjectKind, str]:
        return {}

    async def object_ids(self, tenant_id: str, object_kind: ObjectKind) -> set[str]:
        return set()

    async def put_objects(self, tenant_id: str, object_kind: ObjectKind,
                          objects: Mapping[str, Sequence[InventoryCredential]], *,
                          stored: Mapping[str, Sequence[str]] | None = None, delta_link: str | None = None) -> None:
        await asyncio.sleep(0)

    async def put_rounds(self, tenant_id: str, ends: Mapping[ObjectKind, RoundEnd]) -> None:
        await asyncio.sleep(0)

    async def remove_objects(self, tenant_id: str, object_kind: ObjectKind, object_ids: Sequence[str]) -> None:
        pass

    async def objects_known(self, tenant_id: str, object_kind: ObjectKind, object_ids: Sequence[str]
                            ) -> dict[str, StoredObject | None]:
        return {}


async def tenants(source: Source, count: int) -> None:
    for _ in range(count):
        await inventory_tenant(source, Store(), CustomerTenant(TENANT, "Contoso"))  # type: ignore[arg-type]


def main() -> None:
    source = Source(pages())
    asyncio.run(tenants(source, 3))
    rounds = []
    for _ in range(5):
        started = time.process_time()
        asyncio.run(tenants(source, 20))
        rounds.append((time.process_time() - started) / 20 * 1000)
    rounds.sort()
    print(f"first pass's own work of one tenant, no I/O: best {rounds[0]:.2f} ms, median {rounds[2]:.2f} ms of CPU")


if __name__ == "__main__":
    main()
