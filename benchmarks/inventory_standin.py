"""The inventory's first and daily pass against a lean stand-in: the rotator's own CPU and wall, apart from emulators.

`.venv/bin/python -m benchmarks.inventory_standin --tenants 5000`. A benchmark, not a test; it asserts nothing.

What it measures: the real inventory pass (`run_inventory` with the Graph adapter, azure-identity's
ClientAssertionCredential and the Tables store as `shared.bootstrap.services` builds them, over real HTTP(S)) in a
fresh worker process, against one stand-in process that has almost no work of its own, so that on this 2-core
machine the rotator's process has a core to itself (the sandbox and Azurite cost more CPU than the rotator, so
`benchmarks.inventory` can only report the rotator's CPU, not its wall). The stand-in:

- answers every tenant's delta reads with the same **recorded pages** (one tenant of the sandbox's generated
  population, `--apps` applications and `--sps` service principals, `$select` as the adapter sends it, pages of 100
  objects and a last page with the deltaLink, built once at start) after `--latency-ms`, as Graph would; a
  `$deltatoken` read gets one recorded page of changes per kind (1 % of the objects: a new secret each, as partial
  objects bringing only passwordCredentials);
- answers the owners reads: the full read's listing (`$expand=owners`, recorded pages of 100), a list filtered on
  ids (`$filter=id in (...)`: a daily pass's objects new to the store) and an object's own owners, from the same
  generated owners;
- answers Entra's token endpoint (after the same latency) and the managed identity's endpoint with fixed tokens;
- plays Azure Tables for the one table the pass uses: an entity-group transaction is answered `202` with a `204` per
  operation, and only the index rows it carries are kept (the daily pass reads them back); a point read of another
  row answers 404. The rows themselves are not kept: what is measured is the rotator's side of each request.

So the figures are the rotator's: its CPU per tenant, its wall against the latency bound ((Graph calls + a token
per tenant) x latency / concurrency), its peak RSS. What it does not measure: Graph's and Tables' own service times
(the stand-in answers Tables at once), throttling, and Azurite's or Graph's real answers (benchmarks.inventory and
the tests do that). The stand-in's CPU is reported beside (it shares the machine's other core).

`INVENTORY_PROFILE=/tmp/p` makes each worker profile its pass with cProfile into `/tmp/p.first` and `/tmp/p.daily`
(where the CPU goes; the profiler's own cost inflates that run's figures).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import re
import resource
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.lean import collect, vm_rss_kb
from benchmarks.scale import table

ROOT = Path(__file__).resolve().parent.parent
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = ("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==")  # Azurite's
RECORDED_TENANT = "11111111-2222-4333-8444-555555555555"
IDENTITY_HEADER = "standin-identity-header"
MSP_TENANT = "5a1d0000-0000-4000-8000-0000000000ff"
PAGE = 100


# ------------------------------------------------------------------------------------------------ the stand-in


def recorded_pages(base: str, apps: int, sps: int, changed: float) -> dict[str, dict[str, Any]]:
    """Per entity set: the full read's page bodies (with their nextLink/deltaLink) and the changes page."""
    from sandbox.inventory import (
        Population,
        _select_list,
        _selected,
        generated_application,
        generated_owners,
        generated_service_principal,
    )
    from shared.adapters.inventory import SELECT
    from shared.inventory import ObjectKind

    population = Population("standin", apps, sps, dt.datetime(2026, 12, 1, tzinfo=dt.UTC))
    made: dict[str, dict[str, Any]] = {}
    for entity_set, kind, generate, count in (
            ("applications", ObjectKind.APPLICATION, generated_application, apps),
            ("servicePrincipals", ObjectKind.SERVICE_PRINCIPAL, generated_service_principal, sps)):
        select = _select_list(SELECT[kind], kind.value)
        whole = [generate(RECORDED_TENANT, population, i) for i in range(count)]
        docs = [_selected(obj, select) for obj in whole]
        # A full read first lists the owners ($expand=owners, 100 objects a page: shared/adapters/inventory.py).
        listed = [{"id": obj["id"], "owners": [{"@odata.type": o["@odata.type"], "id": o["id"],
                                                "displayName": o.get("displayName"),
                                                "userPrincipalName": o.get("userPrincipalName")}
                                               for o in generated_owners(RECORDED_TENANT, obj)]} for obj in whole]
        owner_pages = []
        for number, start in enumerate(range(0, count, PAGE)):
            listing: dict[str, Any] = {"@odata.context": f"{base}/v1.0/$metadata#{entity_set}",
                                       "value": listed[start:start + PAGE]}
            if start + PAGE < count:
                listing["@odata.nextLink"] = f"{base}/v1.0/{entity_set}?$skiptoken=o{number + 1}"
            owner_pages.append(json.dumps(listing).encode())
        link = f"{base}/v1.0/{entity_set}/delta"
        # Full pages, then a last one carrying the deltaLink (empty here, as the sandbox's is when its objects fill
        # their pages): 2 pages for 100 applications, 4 for 300 service principals, as benchmarks.inventory reads.
        chunks = [docs[start:start + PAGE] for start in range(0, count, PAGE)] + [[]]
        pages = []
        for number, chunk in enumerate(chunks):
            body: dict[str, Any] = {"@odata.context": f"{base}/v1.0/$metadata#{entity_set}", "value": chunk}
            if number + 1 < len(chunks):
                body["@odata.nextLink"] = f"{link}?$skiptoken=s{number + 1}"
            else:
                body["@odata.deltaLink"] = f"{link}?$deltatoken=d1"
            pages.append(json.dumps(body).encode())
        every = max(1, round(1 / changed)) if changed > 0 else 0
        partial = []
        for i, doc in enumerate(docs):
            if every and i % every == every // 2:
                renewed = {"keyId": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{entity_set}/{i}")), "displayName": "renewed",
                           "hint": "new", "customKeyIdentifier": None, "secretText": None,
                           "startDateTime": "2026-12-06T00:00:00Z", "endDateTime": "2027-12-06T00:00:00Z"}
                partial.append({"id": doc["id"], "passwordCredentials": [*doc.get("passwordCredentials", []), renewed]})
        changes = json.dumps({"@odata.context": f"{base}/v1.0/$metadata#{entity_set}", "value": partial,
                              "@odata.deltaLink": f"{link}?$deltatoken=d2"}).encode()
        made[entity_set] = {"pages": pages, "changes": changes, "changed": len(partial), "owners": owner_pages,
                            "listed": {item["id"]: item for item in listed}}
    return made


_INDEX_PART = re.compile(r"PartitionKey='([^']*)',RowKey='(_index%7C\w+)'\) HTTP/1\.1\r\n.*?\r\n\r\n(\{.*?\})\r\n",
                         re.S)


async def serve(state: Path, apps: int, sps: int, changed: float, latency: float) -> None:
    import trustme
    from aiohttp import web

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(tls)
    (state / "ca.pem").write_bytes(ca.cert_pem.bytes())
    indexes: dict[tuple[str, str], bytes] = {}
    counts = {"graph": 0, "token": 0, "batch": 0, "get": 0}
    peers: dict[str, set[Any]] = {"https": set(), "http": set()}  # the client's connections, by its port

    @web.middleware
    async def seen(request: web.Request, handler: Any) -> web.StreamResponse:
        peers["https" if request.secure else "http"].add(request.transport.get_extra_info("peername")
                                                         if request.transport else None)
        response: web.StreamResponse = await handler(request)
        return response
    recorded: dict[str, dict[str, Any]] = {}

    async def delta(request: web.Request) -> web.Response:
        await asyncio.sleep(latency)
        counts["graph"] += 1
        mine = recorded[request.match_info["set"]]
        query = request.query
        if "$deltatoken" in query:
            body = mine["changes"]
        else:
            skip = query.get("$skiptoken", "s0")
            body = mine["pages"][int(skip[1:])]
        return web.Response(body=body, content_type="application/json")

    async def owner_listing(request: web.Request) -> web.Response:
        await asyncio.sleep(latency)
        counts["graph"] += 1
        if "$filter" in request.query:  # id in ('a',...): the owners of those objects, as the listing has them
            listed = recorded[request.match_info["set"]]["listed"]
            ids = re.findall(r"'([^']*)'", request.query["$filter"])
            return web.json_response({"value": [listed[i] for i in sorted(set(ids)) if i in listed]})
        pages = recorded[request.match_info["set"]]["owners"]
        body = pages[int(request.query.get("$skiptoken", "o0")[1:])] if pages else b'{"value": []}'
        return web.Response(body=body, content_type="application/json")

    async def owners(request: web.Request) -> web.Response:
        await asyncio.sleep(latency)
        counts["graph"] += 1
        owned = recorded[request.match_info["set"]]["listed"].get(request.match_info["id"])
        return web.json_response({"value": owned["owners"] if owned else []})

    async def token(request: web.Request) -> web.Response:
        await asyncio.sleep(latency)
        counts["token"] += 1
        return web.json_response({"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599,
                                  "access_token": "standin." + request.match_info["tenant"]})

    async def openid(request: web.Request) -> web.Response:
        tenant = request.match_info["tenant"]
        base = f"https://{request.host}/{tenant}"
        return web.json_response({"token_endpoint": f"{base}/oauth2/v2.0/token", "issuer": f"{base}/v2.0",
                                  "authorization_endpoint": f"{base}/oauth2/v2.0/authorize"})

    async def managed_identity(request: web.Request) -> web.Response:
        if request.headers.get("X-IDENTITY-HEADER") != IDENTITY_HEADER:
            return web.json_response({"error": "unauthorized"}, status=401)
        return web.json_response({"access_token": "standin.mi", "expires_on": str(int(time.time()) + 3600),
                                  "resource": request.query.get("resource", ""), "token_type": "Bearer"})

    async def create_table(request: web.Request) -> web.Response:
        name = (await request.json()).get("TableName", "")
        return web.json_response({"TableName": name}, status=201,
                                 content_type="application/json;odata=minimalmetadata")

    async def batch(request: web.Request) -> web.Response:
        counts["batch"] += 1
        text = (await request.read()).decode()
        for partition, row, body in _INDEX_PART.findall(text):
            indexes[(partition, row.replace("%7C", "|"))] = body.encode()
        operations = text.count("Content-Type: application/http")
        answer = "".join("--changesetresponse_s\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: "
                         "binary\r\n\r\nHTTP/1.1 204 No Content\r\nDataServiceVersion: 1.0;\r\n\r\n"
                         for _ in range(operations))
        content = ("--batchresponse_s\r\nContent-Type: multipart/mixed; boundary=changesetresponse_s\r\n\r\n"
                   + answer + "--changesetresponse_s--\r\n--batchresponse_s--\r\n")
        return web.Response(status=202, body=content.encode(),
                            headers={"Content-Type": "multipart/mixed; boundary=batchresponse_s"})

    async def entity(request: web.Request) -> web.Response:
        counts["get"] += 1
        if request.match_info["address"].endswith("()"):  # a query: a tenant's index rows (their key range)
            partition = re.search(r"PartitionKey eq '([^']*)'", request.query.get("$filter", ""))
            tenant = partition.group(1) if partition else ""
            kept = (indexes.get((tenant, f"_index|{kind}")) for kind in ("application", "servicePrincipal"))
            found = b",".join(body for body in kept if body is not None)  # by key: not a scan of every tenant's
            return web.Response(body=b'{"value":[' + found + b"]}", content_type="application/json")
        found = re.match(r"^[^(]+\(PartitionKey='([^']*)',RowKey='([^']*)'\)$", request.match_info["address"])
        body = indexes.get((found.group(1), found.group(2).replace("%7C", "|"))) if found else None
        if body is None:
            return web.json_response({"odata.error": {"code": "ResourceNotFound", "message": {
                "lang": "en-US", "value": "The specified resource does not exist."}}}, status=404)
        return web.Response(body=body, content_type="application/json")

    async def figures(request: web.Request) -> web.Response:
        return web.json_response({**counts, "https_connections": len(peers["https"]),
                                  "http_connections": len(peers["http"]), "indexes": len(indexes),
                                  "cpu_s": time.process_time(),
                                  "rss_kb": vm_rss_kb()})

    graph = web.Application(middlewares=[seen])
    graph.router.add_get("/v1.0/{set}/delta", delta)
    graph.router.add_get("/v1.0/{set}", owner_listing)
    graph.router.add_get("/v1.0/{set}/{id}/owners", owners)
    graph.router.add_post("/{tenant}/oauth2/v2.0/token", token)
    graph.router.add_get("/{tenant}/v2.0/.well-known/openid-configuration", openid)
    plain = web.Application(client_max_size=64 * 1024 * 1024, middlewares=[seen])
    plain.router.add_get("/msi/token", managed_identity)
    plain.router.add_post(f"/{ACCOUNT}/Tables", create_table)
    plain.router.add_post(f"/{ACCOUNT}/$batch", batch)
    plain.router.add_get(f"/{ACCOUNT}/{{address}}", entity)
    plain.router.add_get("/figures", figures)
    endpoints = {}
    for name, app, context in (("graph", graph, tls), ("plain", plain, None)):
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context, backlog=4096)
        await site.start()
        port = runner.addresses[0][1]
        endpoints[name] = f"{'https' if context else 'http'}://127.0.0.1:{port}"
    recorded.update(recorded_pages(endpoints["graph"], apps, sps, changed))
    endpoints["changed"] = {s: r["changed"] for s, r in recorded.items()}  # type: ignore[assignment]
    (state / "endpoints.json").write_text(json.dumps(endpoints))
    await asyncio.Event().wait()


# ------------------------------------------------------------------------------------------------ the worker


async def worker_pass(tenants: int, concurrency: int, prefix: str) -> dict[str, Any]:
    from shared.alerts import LogAlerter
    from shared.bootstrap import services
    from shared.clock import SystemClock
    from shared.inventory_pass import CustomerTenant, run_inventory
    from shared.settings import Settings

    settings = Settings.from_env(os.environ)
    customers = [CustomerTenant(str(uuid.uuid5(uuid.NAMESPACE_DNS, f"tenant-{i}.standin")), f"Customer {i}")
                 for i in range(tenants)]
    rss_before = vm_rss_kb()
    async with services(settings, clock=SystemClock(), table_prefix=prefix, alerter=LogAlerter()) as svc:
        assert svc.inventory_source is not None and svc.inventory is not None
        profile = _profiler()
        usage_before = resource.getrusage(resource.RUSAGE_SELF)
        cpu_before, started = time.process_time(), time.perf_counter()
        summary = await run_inventory(svc.inventory_source, svc.inventory, customers, concurrency)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu_before
        usage = resource.getrusage(resource.RUSAGE_SELF)
        if profile is not None:
            profile.disable()
            which = "first" if any(p.full for p in summary.passes) else "daily"
            profile.dump_stats(f"{os.environ['INVENTORY_PROFILE']}.{which}")
        calls = svc.inventory_source.calls + svc.inventory_source.owner_calls  # delta pages and owners reads
    return {"tenants": tenants, "wall_s": wall, "cpu_s": cpu, "graph_calls": calls,
            "credentials": summary.credentials, "failed": len(summary.failed),
            "failures": sorted(set(summary.failed.values()))[:3], "full": sum(p.full for p in summary.passes),
            # the kernel's share of the CPU (mostly the sockets' sends: on loopback the receiving side's work too)
            "sys_s": usage.ru_stime - usage_before.ru_stime,
            "rss_before_kb": rss_before, "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}


def _profiler() -> Any:
    """cProfile over the pass when INVENTORY_PROFILE names a file (where the CPU goes; its own cost inflates the
    figures, so a profiled run's CPU is not one to report)."""
    if not os.environ.get("INVENTORY_PROFILE"):
        return None
    import cProfile

    profile = cProfile.Profile()
    profile.enable()
    return profile


def worker(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.inventory_standin worker")
    parser.add_argument("--tenants", type=int, required=True)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--prefix", required=True)
    args = parser.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.CRITICAL)
    import function_app  # noqa: F401 - what a fresh Functions worker imports first

    result = asyncio.run(worker_pass(args.tenants, args.concurrency, args.prefix))
    print("RESULT " + json.dumps(result), flush=True)
    return 0


# ------------------------------------------------------------------------------------------------ the conductor


def figures_of(plain: str) -> dict[str, Any]:
    import urllib.request

    with urllib.request.urlopen(f"{plain}/figures", timeout=30) as answer:  # noqa: S310 - loopback
        found: dict[str, Any] = json.loads(answer.read())
        return found


def conduct(args: argparse.Namespace, state: Path) -> None:
    server = subprocess.Popen([sys.executable, "-m", "benchmarks.inventory_standin", "serve", "--state", str(state),
                               "--apps", str(args.apps), "--sps", str(args.sps), "--changed", str(args.changed),
                               "--latency-ms", str(args.latency_ms)], cwd=ROOT)
    try:
        for _ in range(600):
            if (state / "endpoints.json").exists():
                break
            time.sleep(0.1)
        endpoints = json.loads((state / "endpoints.json").read_text())
        graph, plain = endpoints["graph"], endpoints["plain"]
        env = {**os.environ, "PYTHONPATH": str(ROOT), "AZURE_AUTHORITY_HOST": graph,
               "GRAPH_BASE_URL": graph + "/v1.0", "IDENTITY_ENDPOINT": plain + "/msi/token",
               "IDENTITY_HEADER": IDENTITY_HEADER, "AZURE_CLIENT_ID": "5a1d0000-0000-4000-8000-0000000000a1",
               "MSP_APP_CLIENT_ID": "5a1d0000-0000-4000-8000-0000000000a2",
               "MSP_TENANT_ID": MSP_TENANT, "IDENTITY_MODE": "federated", "CA_BUNDLE": str(state / "ca.pem"),
               "KEY_VAULT_URL": graph, "PROOFPOINT_BASE_URL": graph + "/{stack}/api/v1", "PORTAL_BASE_URL": graph,
               "STATE_TABLES_CONNECTION_STRING": f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};"
                                                 f"AccountKey={ACCOUNT_KEY};TableEndpoint={plain}/{ACCOUNT};"}
        env.pop("STATE_TABLES_ENDPOINT", None)
        prefix = "st" + uuid.uuid4().hex[:10]
        results: dict[str, dict[str, Any]] = {}
        for name in ("first", "daily"):
            before, load = figures_of(plain), os.getloadavg()[0]
            process = subprocess.Popen([sys.executable, "-m", "benchmarks.inventory_standin", "worker", "--tenants",
                                        str(args.tenants), "--concurrency", str(args.concurrency), "--prefix",
                                        prefix], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       text=True)
            result = collect(process, args.timeout)
            after = figures_of(plain)
            result["standin"] = {k: after[k] - before[k] for k in ("graph", "token", "batch", "get", "cpu_s",
                                                                   "https_connections", "http_connections")}
            result["standin_rss_mb"] = after["rss_kb"] / 1024
            result["load"] = [round(load, 1), round(os.getloadavg()[0], 1)]
            results[name] = result
            print(f"{name}: {json.dumps(result)}", flush=True)
        report(results, args, endpoints["changed"])
    finally:
        server.terminate()
        server.wait(timeout=30)


def report(results: dict[str, dict[str, Any]], args: argparse.Namespace, changed: dict[str, int]) -> None:
    n, lat, conc = args.tenants, args.latency_ms / 1000, args.concurrency
    rows = []
    for name, r in results.items():
        if "wall_s" not in r:
            print(f"{name}: worker failed: {r.get('failed')}")
            return
        calls = r["graph_calls"] + n  # + one token per tenant
        r["bound_s"] = calls * lat / conc
        rows.append([name, str(n), str(r["failed"]), str(r["graph_calls"]), str(r["standin"]["token"]),
                     str(r["standin"]["batch"]), str(r["standin"]["get"]), f"{r['wall_s']:.1f}", f"{r['bound_s']:.1f}",
                     f"{r['wall_s'] / r['bound_s']:.2f}x", f"{1000 * r['cpu_s'] / n:.1f}",
                     f"{r['peak_rss_kb'] / 1024:.0f}", f"{r['standin']['cpu_s']:.1f}",
                     "/".join(str(x) for x in r["load"])])
    print(f"\nInventory against the stand-in: {n} tenants x ({args.apps} applications + {args.sps} service principals),"
          f" {args.latency_ms:g} ms per Graph and Entra call, concurrency {conc}; daily: {changed} objects changed "
          "per tenant")
    print(table(rows, ["pass", "tenants", "failed", "graph calls", "tokens", "transactions", "row GETs", "wall s",
                       "bound s", "wall/bound", "CPU ms/tenant", "peak RSS MB", "stand-in CPU s", "load"]))
    first, daily = results["first"], results["daily"]
    checks = [
        ("first: wall within 2x of the latency bound", first["wall_s"] <= 2 * first["bound_s"],
         f"{first['wall_s']:.1f} s vs {first['bound_s']:.1f} s"),
        ("first: CPU per tenant <= 15 ms", 1000 * first["cpu_s"] / n <= 15, f"{1000 * first['cpu_s'] / n:.1f} ms"),
        ("first: peak RSS <= 300 MB", first["peak_rss_kb"] / 1024 <= 300, f"{first['peak_rss_kb'] / 1024:.0f} MB"),
        ("daily: wall <= 1/3 of the first's", daily["wall_s"] <= first["wall_s"] / 3,
         f"{daily['wall_s'] / first['wall_s']:.2f}"),
        ("daily: CPU <= 1/3 of the first's", daily["cpu_s"] <= first["cpu_s"] / 3,
         f"{daily['cpu_s'] / first['cpu_s']:.2f}"),
    ]
    print()
    for label, ok, value in checks:
        print(f"  {'OK  ' if ok else 'MISS'} {label}: {value}")


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["worker"]:
        return worker(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m benchmarks.inventory_standin", description=__doc__.split("\n")[0])
    parser.add_argument("--tenants", type=int, default=5000)
    parser.add_argument("--apps", type=int, default=100)
    parser.add_argument("--sps", type=int, default=300)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--changed", type=float, default=0.01)
    parser.add_argument("--timeout", type=float, default=3600.0)
    parser.add_argument("--state", type=Path)
    if argv[:1] == ["serve"]:
        args = parser.parse_args(argv[1:])
        asyncio.run(serve(args.state, args.apps, args.sps, args.changed, args.latency_ms / 1000))
        return 0
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as state:
        conduct(args, Path(state))
    return 0


if __name__ == "__main__":
    sys.exit(main())
