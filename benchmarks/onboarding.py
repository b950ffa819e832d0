"""`python -m benchmarks.onboarding` (through scripts/with-azurite.sh): bulk onboarding of `--customers` GDAP
customer tenants in the sandbox with one sign-in, at `--latency-ms` per call.

Starts the sandbox in a temporary directory and seeds the partner's customers (sandbox.gdap.customers_seed: each
tenant a GDAP relationship granting Application Administrator and Privileged Role Administrator to the partner
admin's groups, a verified domain, a Proofpoint app) with their Proofpoint orgs under the MSP's channel org. It adds
`--latency-ms` to every request to Entra ID, Graph, Partner Center, Key Vault and Proofpoint (the sandbox's latency
knob; Azurite's Tables get none), signs the partner admin in once with the device code flow (the verification page
answered as a person would), then runs one bulk-onboarding run over every customer, in this process, every adapter
real (shared.bulk_onboarding with shared.adapters.partner, the rotator's Graph directory and engine for discovery and
the dry run, Proofpoint's org list, Tables). It prints the wall time, the tenants onboarded, the requests per tenant by
service and path, and the CPU of this process, the sandbox and Azurite. It asserts nothing but that every tenant
was onboarded (exit 1 otherwise).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import httpx
import requests

from benchmarks.scale import azurite_pid, cpu_seconds
from sandbox.launch import RunningSandbox, running
from shared.alerts import LogAlerter
from shared.bootstrap import services
from shared.clock import SystemClock
from shared.ports import InstallMethod
from shared.settings import Settings
from tests.onboarding import gdap_world

LATENCY_SERVICES = ("entra", "graph", "partnercenter", "keyvault", "proofpoint")
SENT: Counter[tuple[str, str]] = Counter()
_HOSTS: dict[str, str] = {}


def _service(url: str) -> str:
    parts = urlsplit(url)
    return _HOSTS.get(f"{parts.hostname}:{parts.port}", "tables" if "devstoreaccount1" in url else "other")


def _path(url: str) -> str:
    text = re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "{id}", url.split("?")[0])
    text = re.sub(r"^https?://[^/]+", "", text)
    text = re.sub(r"/[0-9a-f]{32}\b", "/{run}", text)
    text = re.sub(r"customer\d{4}\.example", "{domain}", text)
    text = re.sub(r"/devstoreaccount1/[a-z0-9]+?(onboarding|targets|events|rotations|seenevents)", r"/\1", text)
    return re.sub(r"\(PartitionKey='[^']*',RowKey='[^']*'\)", "(row)", text)


def count_requests() -> None:
    """Count every request the aiohttp, httpx and requests clients send, by sandbox service and path."""
    aiohttp_request, httpx_send, requests_send = (aiohttp.ClientSession._request, httpx.AsyncClient.send,
                                                  requests.Session.send)

    async def counted_aiohttp(self: aiohttp.ClientSession, method: str, url: Any, *args: Any, **kwargs: Any) -> Any:
        SENT[(_service(str(url)), f"{method} {_path(str(url))}")] += 1
        return await aiohttp_request(self, method, url, *args, **kwargs)

    async def counted_httpx(self: httpx.AsyncClient, request: httpx.Request, *args: Any, **kwargs: Any) -> Any:
        SENT[(_service(str(request.url)), f"{request.method} {_path(str(request.url))}")] += 1
        return await httpx_send(self, request, *args, **kwargs)

    def counted_requests(self: requests.Session, request: requests.PreparedRequest, **kwargs: Any) -> Any:
        SENT[(_service(str(request.url)), f"{request.method} {_path(str(request.url))}")] += 1
        return requests_send(self, request, **kwargs)

    aiohttp.ClientSession._request = counted_aiohttp  # type: ignore[method-assign,assignment]
    httpx.AsyncClient.send = counted_httpx  # type: ignore[method-assign,assignment]
    requests.Session.send = counted_requests  # type: ignore[method-assign]


async def onboard(sb: RunningSandbox, settings: Settings, prefix: str) -> tuple[dict[str, Any], float, float]:
    """One sign-in, one run over every GDAP customer: the run's document, the sign-in's and the run's wall time."""
    async with services(settings, clock=SystemClock(), table_prefix=prefix, alerter=LogAlerter()) as svc, \
            aiohttp.ClientSession() as http:
        started = time.perf_counter()
        session = await gdap_world.signed_in_session(settings, http, sb.control, sb.endpoints["entra"], sb.ca_file)
        signed = time.perf_counter() - started
        SENT.clear()
        started = time.perf_counter()
        engine = svc.bulk_onboarding()
        run = await engine.start(session, None, InstallMethod.PARTNER_CENTER)
        doc = await engine.work(session, run.run_id)
        wall = time.perf_counter() - started
        await session.close()
    return doc, signed, wall


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.onboarding", description=__doc__.split("\n")[0])
    parser.add_argument("--customers", type=int, default=200)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--concurrency", type=int, default=8, help="ONBOARDING_CONCURRENCY")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if not os.environ.get("STATE_TABLES_CONNECTION_STRING"):
        raise SystemExit("run through scripts/with-azurite.sh (it starts Azurite and sets its connection string)")
    logging.basicConfig(level=logging.ERROR)
    for noisy in ("shared", "azure", "httpx", "msgraph", "kiota_http"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    count_requests()
    print(f"Machine: {os.cpu_count()} cores ({len(os.sched_getaffinity(0))} usable), Python {sys.version.split()[0]}")
    print(f"Settings: --customers {args.customers} --latency-ms {args.latency_ms:g} (on {', '.join(LATENCY_SERVICES)}; "
          f"Azurite's Tables none) --concurrency {args.concurrency}; install method partner-center", flush=True)
    with tempfile.TemporaryDirectory() as state_dir, running(Path(state_dir)) as sb:
        for name, url in sb.endpoints.items():
            parts = urlsplit(url)
            _HOSTS[f"{parts.hostname}:{parts.port}"] = name
        os.environ["IDENTITY_ENDPOINT"] = sb.settings["IDENTITY_ENDPOINT"]
        os.environ["IDENTITY_HEADER"] = sb.settings["IDENTITY_HEADER"]
        seeding = time.perf_counter()
        gdap_world.seed(sb.control, args.customers)
        print(f"Seeded {args.customers} GDAP customers in {time.perf_counter() - seeding:.1f} s", flush=True)
        for service in LATENCY_SERVICES:
            sb.control.add_fault(service, latency_ms=args.latency_ms, count=None)
        settings = Settings.from_env({
            **sb.settings, "STATE_TABLES_CONNECTION_STRING": os.environ["STATE_TABLES_CONNECTION_STRING"],
            "PROOFPOINT_CHANNEL_DOMAIN": gdap_world.CHANNEL, "ONBOARDING_CONCURRENCY": str(args.concurrency)})
        pids = {"rotator": os.getpid(), "sandbox": sb.pid, "azurite": azurite_pid()}
        before = {k: cpu_seconds(p) if p else None for k, p in pids.items()}
        doc, signed, wall = asyncio.run(onboard(sb, settings, "bench" + uuid.uuid4().hex[:10]))
        after = {k: cpu_seconds(p) if p else None for k, p in pids.items()}
    n = doc["counts"]["total"] or 1
    print(f"\nSign-in (device code, once): {signed:.1f} s")
    print(f"Onboarding run: {doc['counts']['done']}/{doc['counts']['total']} tenants onboarded "
          f"({doc['counts']['failed']} failed) in {wall:.1f} s wall = {wall / n:.2f} s per tenant, "
          f"{n / wall * 60:.0f} tenants per minute")
    cpu: dict[str, float] = {}
    for k in pids:
        start, end = before[k], after[k]
        if start is not None and end is not None:
            cpu[k] = end - start
    print("CPU: " + ", ".join(f"{k} {v:.1f} s" + (f" ({1000 * v / n:.0f} ms per tenant)" if k == "rotator" else "")
                              for k, v in cpu.items()))
    by_service = Counter[str]()
    for (service, _), count in SENT.items():
        by_service[service] += count
    total = sum(by_service.values())
    print(f"Requests per tenant: {total / n:.1f} in all, " + ", ".join(
        f"{service} {count / n:.1f}" for service, count in by_service.most_common()))
    for (service, request), count in sorted(SENT.items(), key=lambda kv: (kv[0][0], -kv[1])):
        print(f"  {count / n:6.2f}  {service:<13} {request}")
    failed = [t for t in doc["tenants"] if t["state"] != "done"]
    for t in failed[:5]:
        print(f"not onboarded: {t['customer']}: {t['error']}")
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
