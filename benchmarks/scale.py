"""`make bench`: how many customers one timer pass rotates per second, against the sandbox with injected latency.

Starts the sandbox in a temporary directory, then for each concurrency (`--concurrency 8,32,128`): resets it, seeds
N customers (`--targets`, each its own tenant with a secret due in 10 days, a Proofpoint org and the MSP portal),
registers them in a fresh table prefix of Azurite, adds `--latency-ms` to every request to Graph, Entra ID, Key
Vault, Proofpoint and the portal, and runs one real timer pass (`Engine.run_pass`, every adapter real, grace period
zero so each rotation also retires the old secret). It prints wall time, throughput, per-target times (each
`Engine.advance` timed by a wrapper on the engine instance; the product code is untouched), the mean time of each
port operation, CPU used, and what the rate means for 1,000 and 5,000 customers against a 10-minute invocation.

Separately it measures the sandbox's own capacity: `--capacity-requests` concurrent HTTPS requests, each held
`--capacity-latency-ms` by the sandbox, against Entra ID's discovery document.

Everything runs on 127.0.0.1; every pass has a time limit (`--pass-timeout`); the script exits by itself.
Run it through `make bench` (Azurite's connection string arrives in STATE_TABLES_CONNECTION_STRING).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import secrets
import shutil
import signal
import ssl
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import Any

import aiohttp

from sandbox.client import SandboxClient
from sandbox.launch import RunningSandbox as Sandbox
from sandbox.launch import running
from shared.alerts import LogAlerter
from shared.bootstrap import Services, engine_config, services
from shared.clock import SystemClock
from shared.domain import Actor, DestinationConfig
from shared.rotation import Outcome
from shared.settings import Settings
from tests.rotation.conftest import ACCOUNT_SECRET, PORTAL_SECRET, Customer, customer_seed, random_secret

ROOT = Path(__file__).resolve().parent.parent
LATENCY_SERVICES = ("graph", "entra", "keyvault", "proofpoint", "portal")
PORTAL_PATH = "/api/office365/azure-ad"
FUNCTION_TIMEOUT_S = 600.0  # the invocation limit the extrapolation is judged against (10 minutes)
SEED_BATCH = 100
REGISTER_WIDTH = 32
# The port operations timed on each run (instance attributes wrapped; the classes are untouched).
PORT_METHODS: dict[str, tuple[str, ...]] = {
    "tables": ("get_target", "replace_target", "record", "list_targets"),
    "graph": ("get_application", "add_password", "remove_password"),
    "keyvault": ("store_pending", "value", "get_named", "versions", "find_by_rotation", "promote", "demote"),
    "probe": ("try_token",),
}


# ------------------------------------------------------------------------------------------------ the sandbox


def seed_accounts(control: SandboxClient) -> None:
    """The Proofpoint channel admin and the portal's auth, and both in Key Vault (as World.seed_accounts)."""
    user, password = "channel-admin@msp.example", random_secret()
    portal_auth = "Bearer " + secrets.token_hex(16)
    control.seed({
        "proofpoint": {"accounts": [{"user": user, "password": password, "domains": ["*"]}]},
        "portal": {"authorization": portal_auth},
        "keyvault": {"secrets": [
            {"name": ACCOUNT_SECRET, "value": json.dumps({"user": user, "password": password})},
            {"name": PORTAL_SECRET, "value": portal_auth},
        ]},
    })


def seed_customers(control: SandboxClient, count: int, tag: str) -> list[Customer]:
    """`count` customers, each a tenant whose Proofpoint app has a secret due in 10 days; seeded in batches."""
    customers: list[Customer] = []
    for start in range(0, count, SEED_BATCH):
        doc: dict[str, Any] = {"tenants": [], "proofpoint": {"orgs": []}}
        for i in range(start, min(count, start + SEED_BATCH)):
            customer, seed = customer_seed(f"Bench{tag}n{i:05d}", 10)
            doc["tenants"] += seed["tenants"]
            doc["proofpoint"]["orgs"] += seed["proofpoint"]["orgs"]
            customers.append(customer)
        control.seed(doc)
    return customers


def add_latency(control: SandboxClient, latency_ms: float) -> None:
    """A latency-only fault (no status, count null) on every service the rotator calls: each request is delayed."""
    for service in LATENCY_SERVICES:
        control.add_fault(service, latency_ms=latency_ms, count=None)


def delivered(state: dict[str, Any], customers: Sequence[Customer]) -> tuple[int, int]:
    """Checked in the sandbox itself: (customers with a new credential in Entra ID, a new key in Proofpoint and a
    push received by the portal; customers whose old credential is also gone)."""
    tenants = {t["id"]: t for t in state["tenants"]}
    orgs = {o["domain"]: o for o in state["proofpoint"]["orgs"]}
    pushed = {r["body"].get("tenantId") for r in state["portal"]["received"]}
    ok = retired = 0
    for c in customers:
        keys = {cred["keyId"] for cred in tenants[c.tenant_id]["applications"][0]["passwordCredentials"]}
        key = orgs[c.domain]["settings"].get("ad_key")
        if keys - {c.key_id} and key and key != c.secret and c.tenant_id in pushed:
            ok += 1
            retired += c.key_id not in keys
    return ok, retired


# ------------------------------------------------------------------------------------------------ measuring


def cpu_seconds(pid: int | str) -> float | None:
    """User + system CPU of a process (Linux /proc), None when unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def azurite_pids() -> list[int]:
    """Azurite's processes (Tables, then Queues), started by scripts/with-azurite.sh (our parent), as found among
    its children."""
    parent = os.getppid()
    try:
        children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    except OSError:
        return []
    found = []
    for child in children:
        try:
            if b"azurite" in Path(f"/proc/{child}/cmdline").read_bytes():
                found.append(int(child))
        except OSError:
            continue
    return found


def azurite_pid() -> int | None:
    """Azurite's first process (its Tables service), if it can be found."""
    return next(iter(azurite_pids()), None)


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


@dataclass
class Timings:
    """Durations of wrapped calls, by "port.method"."""

    calls: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))

    def timed(self, key: str, call: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await call(*args, **kwargs)
            finally:
                self.calls[key].append(time.perf_counter() - started)

        return wrapper

    def wrap(self, obj: object, label: str, names: Sequence[str]) -> None:
        for name in names:
            setattr(obj, name, self.timed(f"{label}.{name}", getattr(obj, name)))


def instrument(svc: Services, timings: Timings, outcomes: list[tuple[Outcome, float]]) -> None:
    """Time every advance (and keep its outcome) and every port call of this engine, on the instances only."""
    engine = svc.engine
    for label, names in PORT_METHODS.items():
        port = {"tables": engine.state, "graph": engine.directory, "keyvault": engine.secrets,
                "probe": engine.probe}[label]
        timings.wrap(port, label, names)
    for kind, destination in engine.destinations.items():
        timings.wrap(destination, f"deliver.{kind}", ("deliver",))
    advance = engine.advance

    async def timed_advance(tenant_id: str, app_id: str, actor: Actor, **kwargs: Any) -> Outcome:
        started = time.perf_counter()
        outcome = await advance(tenant_id, app_id, actor, **kwargs)
        outcomes.append((outcome, time.perf_counter() - started))
        return outcome

    engine.advance = timed_advance  # type: ignore[method-assign]


# ------------------------------------------------------------------------------------------------ one pass


@dataclass
class RunResult:
    concurrency: int
    targets: int
    rotated: int
    failed: int
    wall_s: float
    per_target_s: list[float]
    confirmed: int
    old_retired: int
    timed_out: bool
    errors: Counter[str]
    op_ms: dict[str, tuple[float, float]]  # port.method -> (calls per target, mean ms)
    cpu: dict[str, float | None]

    @property
    def rate(self) -> float:
        return self.rotated / self.wall_s if self.wall_s > 0 else 0.0


async def register(svc: Services, customers: Sequence[Customer], portal_url: str) -> None:
    bound = asyncio.Semaphore(REGISTER_WIDTH)
    portal = DestinationConfig("vircom-portal", "http", {"preset": "vircom-portal", "url": portal_url})

    async def one(c: Customer) -> None:
        async with bound:
            await svc.state.create_target(c.target((c.proofpoint(), portal)))

    await asyncio.gather(*(one(c) for c in customers))


async def timed_pass(settings: Settings, customers: Sequence[Customer], prefix: str, portal_url: str,
                     concurrency: int, pass_timeout: float) -> tuple[float, bool, Timings, list[tuple[Outcome, float]]]:
    config = replace(engine_config(settings), scan_concurrency=concurrency)
    timings = Timings()
    outcomes: list[tuple[Outcome, float]] = []
    async with services(settings, clock=SystemClock(), table_prefix=prefix, alerter=LogAlerter(),
                        config=config) as svc:
        await register(svc, customers, portal_url)
        instrument(svc, timings, outcomes)
        started = time.perf_counter()
        timed_out = False
        try:
            await asyncio.wait_for(svc.engine.run_pass(Actor.TIMER), timeout=pass_timeout)
        except TimeoutError:
            timed_out = True
        wall = time.perf_counter() - started
    return wall, timed_out, timings, outcomes


def run_once(sb: Sandbox, args: argparse.Namespace, concurrency: int, run: int) -> RunResult:
    sb.control.reset()
    seed_accounts(sb.control)
    customers = seed_customers(sb.control, args.targets, f"r{run}")
    add_latency(sb.control, args.latency_ms)
    env = {
        **sb.settings,
        "STATE_TABLES_CONNECTION_STRING": os.environ["STATE_TABLES_CONNECTION_STRING"],
        "RETIRE_GRACE_HOURS": "0",
        "VERIFY_TIMEOUT_SECONDS": "20",
        "SCAN_CONCURRENCY": str(concurrency),
    }
    settings = Settings.from_env(env)
    prefix = "bench" + uuid.uuid4().hex[:10]
    pids = {"rotator": os.getpid(), "sandbox": sb.pid, "azurite": azurite_pid()}
    cpu_before = {name: cpu_seconds(pid) if pid else None for name, pid in pids.items()}
    wall, timed_out, timings, outcomes = asyncio.run(
        timed_pass(settings, customers, prefix, sb.endpoints["portal"] + PORTAL_PATH, concurrency,
                   args.pass_timeout)
    )
    cpu_after = {name: cpu_seconds(pid) if pid else None for name, pid in pids.items()}
    sb.control.clear_faults()
    by_result = Counter(o.result for o, _ in outcomes)
    errors = Counter(f"{o.result}: {o.error_code or o.message[:60]}" for o, _ in outcomes if o.result != "rotated")
    n = max(1, len(customers))
    op_ms = {key: (len(v) / n, 1000 * statistics.fmean(v)) for key, v in timings.calls.items() if v}
    confirmed, old_retired = delivered(sb.control.state(), customers)
    cpu = {name: (after - before) if after is not None and before is not None else None
           for name, (before, after) in ((k, (cpu_before[k], cpu_after[k])) for k in pids)}
    return RunResult(
        concurrency=concurrency, targets=len(customers), rotated=by_result.get("rotated", 0),
        failed=len(customers) - by_result.get("rotated", 0), wall_s=wall,
        per_target_s=[d for o, d in outcomes if o.result == "rotated"],
        confirmed=confirmed, old_retired=old_retired, timed_out=timed_out, errors=errors, op_ms=op_ms,
        cpu=cpu,
    )


# ------------------------------------------------------------------------------------------------ sandbox capacity


async def capacity(sb: Sandbox, requests: int, latency_ms: float) -> list[tuple[str, float, int, float]]:
    """`requests` concurrent HTTPS GETs, each delayed latency_ms by the sandbox: (label, wall s, ok, p95 s)."""
    sb.control.clear_faults()
    sb.control.add_fault("entra", path="openid-configuration$", latency_ms=latency_ms, count=None)
    url = f"{sb.endpoints['entra']}/{sb.settings['MSP_TENANT_ID']}/v2.0/.well-known/openid-configuration"
    tls = ssl.create_default_context(cafile=sb.ca_file)
    results: list[tuple[str, float, int, float]] = []
    connector = aiohttp.TCPConnector(ssl=tls, limit=requests)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:

        async def one() -> tuple[int, float]:
            started = time.perf_counter()
            async with session.get(url) as response:
                await response.read()
                return response.status, time.perf_counter() - started

        for label in ("cold: a new TLS connection each", "warm: connections reused"):
            started = time.perf_counter()
            answers = await asyncio.gather(*(one() for _ in range(requests)), return_exceptions=True)
            wall = time.perf_counter() - started
            good = [a for a in answers if isinstance(a, tuple) and a[0] == 200]
            results.append((label, wall, len(good), percentile([d for _, d in good], 0.95)))
    sb.control.clear_faults()
    return results


# ------------------------------------------------------------------------------------------------ printing


def table(rows: Sequence[Sequence[str]], headings: Sequence[str]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headings)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(headings, widths, strict=True)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def fmt_duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def report(results: Sequence[RunResult]) -> None:
    print("\nOne timer pass per concurrency (SCAN_CONCURRENCY); per-target = one Engine.advance, due -> idle:")
    rows = []
    for r in results:
        t = r.per_target_s
        rows.append([
            str(r.concurrency), str(r.targets), str(r.rotated), str(r.failed), str(r.confirmed), str(r.old_retired),
            f"{r.wall_s:.1f}" + ("*" if r.timed_out else ""), f"{r.rate:.2f}",
            f"{percentile(t, 0.5):.2f}", f"{percentile(t, 0.95):.2f}", f"{max(t) if t else float('nan'):.2f}",
        ])
    print(table(rows, ["conc", "targets", "rotated", "failed", "confirmed", "old gone", "wall s", "targets/s",
                       "p50 s", "p95 s", "max s"]))
    if any(r.timed_out for r in results):
        print("* the pass hit --pass-timeout and was cancelled; figures cover what finished")
    print("(checked in the sandbox itself: confirmed = a new credential in Entra ID, the new key in Proofpoint and a "
          "push received by the portal; old gone = the replaced credential was also removed in this pass)")

    print(f"\nExtrapolated at each measured rate, against a {FUNCTION_TIMEOUT_S / 60:.0f}-minute invocation:")
    rows = []
    for r in results:
        cells = [str(r.concurrency), f"{r.rate:.2f}"]
        for n in (1000, 5000):
            seconds = n / r.rate if r.rate > 0 else float("inf")
            verdict = "fits" if seconds <= FUNCTION_TIMEOUT_S else "EXCEEDS"
            cells.append(f"{fmt_duration(seconds)} ({verdict})")
        cells.append(f"{r.rate * FUNCTION_TIMEOUT_S:.0f}")
        rows.append(cells)
    print(table(rows, ["conc", "targets/s", "1,000 targets", "5,000 targets", "max targets in 10 min"]))

    keys = sorted({k for r in results for k in r.op_ms})
    print("\nMean time of each port operation in ms (calls per target in brackets), by concurrency:")
    rows = []
    for key in keys:
        calls = next(r.op_ms[key][0] for r in results if key in r.op_ms)
        rows.append([f"{key} [{calls:.1f}]"] + [
            f"{r.op_ms[key][1]:.0f}" if key in r.op_ms else "-" for r in results
        ])
    print(table(rows, ["operation", *(f"@{r.concurrency}" for r in results)]))

    print("\nCPU seconds used during each pass (2 cores = at most 2 s per wall second):")
    rows = []
    for r in results:
        rows.append([str(r.concurrency), f"{r.wall_s:.1f}"] + [
            f"{v:.1f}" if v is not None else "n/a" for v in (r.cpu["rotator"], r.cpu["sandbox"], r.cpu["azurite"])
        ])
    print(table(rows, ["conc", "wall s", "rotator", "sandbox", "azurite"]))

    errors = Counter[str]()
    for r in results:
        errors.update(r.errors)
    if errors:
        print("\nNot rotated (result: error code), all runs:")
        for text, count in errors.most_common(8):
            print(f"  {count:5d}  {text}")


# ------------------------------------------------------------------------------------------------ main


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__.split("\n")[0])
    parser.add_argument("--targets", type=int, default=200,
                        help="customers seeded and rotated per pass (200 keeps the default run near 2 minutes here)")
    parser.add_argument("--concurrency", default="8,32,128", help="comma-separated SCAN_CONCURRENCY values")
    parser.add_argument("--latency-ms", type=float, default=80.0, help="latency added to every service request")
    parser.add_argument("--pass-timeout", type=float, default=150.0, help="a pass taking longer is cancelled")
    parser.add_argument("--capacity-requests", type=int, default=500)
    parser.add_argument("--capacity-latency-ms", type=float, default=200.0)
    args = parser.parse_args(argv)
    args.concurrency = [int(c) for c in str(args.concurrency).split(",") if c.strip()]
    if not 1 <= args.targets <= 20000 or not all(1 <= c <= 512 for c in args.concurrency) or not args.concurrency:
        parser.error("--targets must be 1..20000 and each --concurrency 1..512 (SCAN_CONCURRENCY's range)")
    if not 1 <= args.capacity_requests <= 5000:
        parser.error("--capacity-requests must be 1..5000")
    return args


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks that stop the sandbox


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if not os.environ.get("STATE_TABLES_CONNECTION_STRING"):
        raise SystemExit("run through `make bench` (it starts Azurite and sets STATE_TABLES_CONNECTION_STRING)")
    signal.signal(signal.SIGTERM, _terminate)
    logging.basicConfig(level=logging.ERROR)
    for noisy in ("shared", "azure", "httpx", "msgraph", "kiota_http"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    started = time.monotonic()
    print(f"Machine: {os.cpu_count()} cores ({os.sched_getaffinity(0).__len__()} usable), Python "
          f"{sys.version.split()[0]}, {sys.platform}")
    print(f"Settings: --targets {args.targets} --concurrency {','.join(map(str, args.concurrency))} "
          f"--latency-ms {args.latency_ms:g} (on {', '.join(LATENCY_SERVICES)}) --pass-timeout {args.pass_timeout:g}; "
          f"RETIRE_GRACE_HOURS=0, VERIFY_TIMEOUT_SECONDS=20, identity mode federated; two destinations per target "
          f"(Proofpoint, portal); Azurite for Tables (no latency added)", flush=True)
    state_dir = Path(tempfile.mkdtemp(prefix="rotator-bench-"))
    try:
        with running(state_dir) as sb:
            # The managed identity credential reads App Service's variables from the process environment.
            os.environ["IDENTITY_ENDPOINT"] = sb.settings["IDENTITY_ENDPOINT"]
            os.environ["IDENTITY_HEADER"] = sb.settings["IDENTITY_HEADER"]

            print(f"\nSandbox capacity: {args.capacity_requests} concurrent HTTPS GETs (aiohttp, trusting the "
                  f"sandbox CA), {args.capacity_latency_ms:g} ms injected latency each, one service (entra):")
            rows = []
            for label, wall, ok, p95 in asyncio.run(capacity(sb, args.capacity_requests, args.capacity_latency_ms)):
                rows.append([label, str(ok), f"{wall:.2f}", f"{ok / wall:.0f}", f"{p95:.2f}",
                             f"{args.capacity_latency_ms / 1000:.2f}"])
            print(table(rows, ["round", "ok", "wall s", "requests/s", "p95 s", "ideal s"]), flush=True)

            results = []
            for run, concurrency in enumerate(args.concurrency, 1):
                print(f"\n[{time.monotonic() - started:5.1f} s] pass {run}: {args.targets} targets at concurrency "
                      f"{concurrency} ...", flush=True)
                result = run_once(sb, args, concurrency, run)
                print(f"[{time.monotonic() - started:5.1f} s]   rotated {result.rotated}/{result.targets} in "
                      f"{result.wall_s:.1f} s", flush=True)
                results.append(result)
            report(results)
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)
    print(f"\nTotal benchmark time: {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
