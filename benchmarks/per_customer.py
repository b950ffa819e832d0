"""`python -m benchmarks.per_customer` (through scripts/with-azurite.sh): the HTTP requests and the CPU one healthy
customer (or, with `--days-left 10`, one rotation) costs a timer pass, in process.

Seeds `--targets` customers (300 days left unless `--days-left`) in the sandbox, registers them in Azurite,
then runs `--passes` timer passes (`services()` and `Engine.run_pass`, every adapter real, 0 ms injected) in this
process, counting every request the aiohttp, httpx and requests clients send (by method and path, ids folded) and
the process's CPU time per pass. The first pass pays the imports and the first tokens; the later ones are the steady
state. It asserts nothing.

The passes run on one day, so a healthy customer's drift check (a read of its Proofpoint settings every
DRIFT_CHECK_DAYS, a 30th of the fleet a day) never falls in passes 2 onwards. `--drift-share` adds one pass with that
check due on every customer and prints what the daily scan pays for it: (that pass - the mean of passes 2 onwards) /
DRIFT_CHECK_DAYS per customer, and the daily scan's CPU with it. That pass leaves the check's date out of the row:
a daily pass writes a healthy row anyway (its days left move), so the write is not the read's cost.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import statistics
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
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
    parser.add_argument("--drift-share", action="store_true",
                        help="one more pass with every customer's drift check due: its daily share per customer")
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
        steady: list[float] = []
        for number in range(args.passes + (1 if args.drift_share else 0)):
            forced = number == args.passes
            SENT.clear()
            with drift_check_due_everywhere() if forced else contextlib.nullcontext():
                result = asyncio.run(lean.worker_pass("scan" if args.days_left > 30 else "rotate", prefix, 32))
            label = "drift check due on every customer" if forced else f"pass {number + 1}"
            print(f"{label}: {result['targets']} targets {dict(result['by_result'])}, wall "
                  f"{result['wall_s']:.2f} s, CPU {result['cpu_s']:.2f} s = "
                  f"{1000 * result['cpu_s'] / args.targets:.1f} ms per customer", flush=True)
            for request, count in SENT.most_common():
                print(f"  {count / args.targets:5.2f} per customer  {request}")
            if number >= 1 and not forced:
                steady.append(result["cpu_s"])
        if args.drift_share and steady:
            print_drift_share(statistics.mean(steady), result["cpu_s"], args.targets)
    return 0


@contextlib.contextmanager
def drift_check_due_everywhere() -> Iterator[None]:
    """For one pass: the drift check's schedule (`drift_check_due`, as the assessment imports it) says "due" for every
    customer, and the check's own date is left out of the row (the write it causes is not the read's cost: a daily
    pass writes a healthy row anyway, its days left having moved)."""
    from unittest import mock

    from shared.domain import Target
    from shared.protocol import assess
    from shared.protocol.context import Advance

    record = Advance.record_observation

    async def without_the_check_date(self: Advance, seen: Target) -> None:
        await record(self, seen.with_observed(drift_checked_at=self.target.observed.drift_checked_at))

    with mock.patch.object(assess, "drift_check_due", lambda *_args, **_kwargs: True), \
            mock.patch.object(Advance, "record_observation", without_the_check_date):
        yield


def print_drift_share(steady_cpu: float, forced_cpu: float, targets: int) -> None:
    from shared.drift import DRIFT_CHECK_DAYS

    read = (forced_cpu - steady_cpu) / targets  # s per customer whose settings were read
    daily = read / DRIFT_CHECK_DAYS
    print(f"drift read: {1000 * read:.2f} ms per customer read; a {DRIFT_CHECK_DAYS}th a day: "
          f"{1000 * daily:.3f} ms per customer per day")
    steady = steady_cpu * 1000 / targets  # s per 1,000 customers
    print(f"daily healthy scan per 1,000 customers: passes 2 onwards {steady:.3f} s + drift share "
          f"{daily * 1000:.3f} s = {steady + daily * 1000:.3f} s")


if __name__ == "__main__":
    sys.exit(main())
