"""The inventory's row path alone: one tenant's delta pages parsed, its credentials built, each row's entity JSON.

`.venv/bin/python -m benchmarks.inventory_rows`: the sandbox's generated tenant (100 applications, 300 service
principals, `$select` as the adapter sends it) cut into Graph's pages of 100 objects, then per repetition
`page_of` -> `credentials_of` -> `to_entity` -> JSON, as the first pass does, without any I/O. Prints the process
CPU time per tenant (best and median of 5 rounds of 20 repetitions): the part of the first pass's CPU that no
request count changes (docs/benchmarks.md). It asserts nothing; it is not a test.
"""

from __future__ import annotations

import datetime as dt
import json
import time

import orjson

from sandbox.inventory import Population, _select_list, _selected, generated_application, generated_service_principal
from shared.adapters.inventory import SELECT, page_of
from shared.adapters.inventory_tables import to_entity
from shared.inventory import ObjectKind, credentials_of

TENANT = "11111111-2222-4333-8444-555555555555"
PAGE = 100


def pages(apps: int = 100, sps: int = 300) -> list[tuple[ObjectKind, bytes]]:
    population = Population("rows", apps, sps, dt.datetime(2026, 12, 1, tzinfo=dt.UTC))
    made = []
    for kind, generate, count in ((ObjectKind.APPLICATION, generated_application, apps),
                                  (ObjectKind.SERVICE_PRINCIPAL, generated_service_principal, sps)):
        select = _select_list(SELECT[kind], kind.value)
        docs = [_selected(generate(TENANT, population, i), select) for i in range(count)]
        made += [(kind, json.dumps({"value": docs[s:s + PAGE], "@odata.nextLink": "next"}).encode())
                 for s in range(0, count, PAGE)]
    return made


def one_tenant(bodies: list[tuple[ObjectKind, bytes]]) -> int:
    rows = 0
    for kind, body in bodies:
        for obj in page_of(kind, orjson.loads(body)).objects:
            for credential in credentials_of(obj, TENANT, "Contoso"):
                orjson.dumps(to_entity(credential))
                rows += 1
    return rows


def main() -> None:
    bodies = pages()
    rows = one_tenant(bodies)
    rounds = []
    for _ in range(5):
        started = time.process_time()
        for _ in range(20):
            one_tenant(bodies)
        rounds.append((time.process_time() - started) / 20 * 1000)
    rounds.sort()
    print(f"row path of one tenant ({rows} rows): best {rounds[0]:.2f} ms, median {rounds[2]:.2f} ms of CPU")


if __name__ == "__main__":
    main()
