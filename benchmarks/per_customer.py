"""`python -m benchmarks.per_customer` (through scripts/with-azurite.sh): the HTTP requests and the CPU one healthy
customer (or, with `--days-left 10`, one rotation) costs a timer pass, in process.

Seeds `--targets` customers (300 days left unless `--days-left`) in the sandbox, registers them in Azurite,
then runs `--passes` timer passes (`services()` and `Engine.run_pass`, every adapter real, 0 ms injected) in this
process, counting every request the aiohttp, httpx and requests clients send (by method and path, ids folded) and
the process's CPU time per pass. The first pass pays the imports and the first tokens; the later ones are the steady
state. It asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import requests
import urllib3.connection

from benchmarks import lean
from benchmarks.scale import seed_accounts
from sandbox.launch import running

SENT: Counter[str] = Counter()


def _path(url: object) -> str:
    text = re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "{id}", str(url))
    text = re.sub(r"^https?://[^/]+", "", text.split("?")[0])
    text = re.sub(r"/[0-9a-f]{32}\b", "/{version}", text)  # Key Vault secret versions
    text = re.sub(r"/orgs/[^/]+", "/orgs/{domain}", text)  # Proofpoint organisations
    return re.sub(r"/devstoreaccount1/[a-z0-9]+targets", "/devstoreaccount1/{prefix}targets", text)


def count_requests() -> None:
    aiohttp_request, httpx_send = aiohttp.ClientSession._request, httpx.AsyncClient.send

    async def counted_aiohttp(self: aiohttp.ClientSession, method: str, url: Any, *args: Any, **kwargs: Any) -> Any:
        SENT[f"{method} {_path(url)}"] += 1
        return await aiohttp_request(self, method, url, *args, **kwargs)

    async def counted_httpx(self: httpx.AsyncClient, request: httpx.Request, *args: Any, **kwargs: Any) -> Any:
        SENT[f"{request.method} {_path(request.url)} (httpx)"] += 1
        return await httpx_send(self, request, *args, **kwargs)

    requests_send = requests.Session.send

    def counted_requests(self: requests.Session, request: requests.PreparedRequest, **kwargs: Any) -> Any:
        SENT[f"{request.method} {_path(request.url)} (requests)"] += 1
        return requests_send(self, request, **kwargs)

    aiohttp.ClientSession._request = counted_aiohttp  # type: ignore[method-assign,assignment]
    httpx.AsyncClient.send = counted_httpx  # type: ignore[method-assign,assignment]
    requests.Session.send = counted_requests  # type: ignore[method-assign]

    # New TLS connections the requests clients open (the destinations: Proofpoint, the portal): each one a handshake.
    connect = urllib3.connection.HTTPSConnection.connect

    def counted_connect(self: urllib3.connection.HTTPSConnection) -> None:
        SENT[f"TLS connect {self.host} (requests)"] += 1
        connect(self)

    urllib3.connection.HTTPSConnection.connect = counted_connect  # type: ignore[method-assign]


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.per_customer", description=__doc__.split("\n")[0])
    parser.add_argument("--targets", type=int, default=200)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--days-left", type=int, default=300,
                        help="of each customer's secret: 10 makes them due, so the first pass rotates them")
    args = parser.parse_args()
    if not os.environ.get("STATE_TABLES_CONNECTION_STRING"):
        raise SystemExit("run through scripts/with-azurite.sh (it starts Azurite and sets its connection string)")
    count_requests()
    with tempfile.TemporaryDirectory() as state_dir, running(Path(state_dir)) as sb:
        conductor = lean.Conductor(sb, argparse.Namespace())
        sb.control.reset()
        seed_accounts(sb.control)
        prefix = conductor.registered(lean.seed(sb.control, args.targets, args.days_left, "c"))
        os.environ.update(conductor.env)  # azure-identity reads its endpoints from the environment
        for number in range(args.passes):
            SENT.clear()
            result = asyncio.run(lean.worker_pass("scan" if args.days_left > 30 else "rotate", prefix, 32))
            print(f"pass {number + 1}: {result['targets']} targets {dict(result['by_result'])}, wall "
                  f"{result['wall_s']:.2f} s, CPU {result['cpu_s']:.2f} s = "
                  f"{1000 * result['cpu_s'] / args.targets:.1f} ms per customer", flush=True)
            for request, count in SENT.most_common():
                print(f"  {count / args.targets:5.2f} per customer  {request}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
