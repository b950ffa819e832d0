"""`make bench`: CPU, memory, cold start and Key Vault's write rate of the rotator, as a user would see them.

Starts the sandbox in a temporary directory, seeds customers (each its own tenant, an app owned by the MSP app, a
Proofpoint org) and registers them in Azurite, then runs each measured pass in a **fresh worker process** (`python
-m benchmarks.lean worker ...`, the real `shared.bootstrap.services` and `Engine`, every adapter real), which
reports its own wall time, CPU time (getrusage), peak RSS and the longest stall of its event loop:

1. scan: one timer pass over `--scan-targets` healthy customers (300 days left) at `--latency-ms` on every service
   (Graph, Entra ID, Key Vault, Proofpoint, portal), concurrency `--concurrency`; the same over the first
   `--scan-small` of them (is peak RSS flat in N?); and over the first `--serial-sample` at concurrency 1,
   extrapolated to N;
2. rotate: one pass over `--rotate-targets` customers due in 10 days (grace 0: each rotation also retires);
3. Key Vault's write limit: `--kv-instances` workers at once, each rotating `--kv-targets` due customers with
   KEY_VAULT_WRITES_PER_10S = `--kv-budget` (several instances sharing one vault); the sandbox counts the writes
   it received per 10 s window (`GET /keyvault/writes`), also for the rotate pass (the default budget, 250);
4. cold start: `import function_app` under `python -X importtime` (median of 5 fresh processes), and a first pass
   over `--cold-targets` healthy customers at 0 ms in a fresh process.

Prints every figure with its goal (issue 13) side by side. It asserts nothing; it is not a test.
Run it through `make bench` (Azurite's connection string arrives in STATE_TABLES_CONNECTION_STRING).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from benchmarks.scale import (
    LATENCY_SERVICES,
    PORTAL_PATH,
    _terminate,
    add_latency,
    azurite_pid,
    cpu_seconds,
    seed_accounts,
    table,
)
from sandbox.client import SandboxClient
from sandbox.launch import RunningSandbox as Sandbox
from sandbox.launch import running
from tests.rotation.conftest import Customer, customer_seed

ROOT = Path(__file__).resolve().parent.parent
SEED_BATCH = 250
REGISTER_WIDTH = 16  # Azurite on a loaded machine resets connections at 64


# ------------------------------------------------------------------------------------------------ the worker


async def loop_stalls(stop: asyncio.Event, longest: list[float], tick: float = 0.005) -> None:
    """The longest time the event loop was late to wake this task (a stall: some callback held the loop)."""
    while not stop.is_set():
        started = time.perf_counter()
        await asyncio.sleep(tick)
        longest[0] = max(longest[0], time.perf_counter() - started - tick)


def vm_rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def worker_pass(kind: str, prefix: str, concurrency: int) -> dict[str, Any]:
    from shared.alerts import LogAlerter
    from shared.bootstrap import engine_config, services
    from shared.clock import SystemClock
    from shared.domain import Actor
    from shared.settings import Settings

    settings = Settings.from_env(os.environ)
    config = replace(engine_config(settings), scan_concurrency=concurrency)
    rss_before = vm_rss_kb()
    cpu_before = time.process_time()
    stop, longest = asyncio.Event(), [0.0]
    watcher = asyncio.create_task(loop_stalls(stop, longest))
    started = time.perf_counter()
    async with services(settings, clock=SystemClock(), table_prefix=prefix, alerter=LogAlerter(),
                        config=config) as svc:
        built = time.perf_counter() - started  # the SDKs' imports and the clients' construction
        summary = await svc.engine.run_pass(Actor.TIMER)
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu_before
    stop.set()
    await watcher
    return {
        "kind": kind, "targets": len(summary.outcomes), "wall_s": wall, "build_s": built, "cpu_s": cpu,
        "by_result": Counter(o.result for o in summary.outcomes),
        "errors": Counter(f"{o.result}: {o.error_code}" for o in summary.outcomes
                          if o.result not in ("healthy", "rotated")).most_common(3),
        "rss_before_kb": rss_before, "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "longest_stall_s": longest[0],
    }


def worker(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.lean worker")
    parser.add_argument("--kind", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.CRITICAL)
    imported = time.perf_counter()
    import function_app  # noqa: F401 - what a fresh Functions worker imports first

    import_s = time.perf_counter() - imported
    profile = os.environ.get("BENCH_PROFILE")  # a path: the pass runs under cProfile, its stats written there
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        result = profiler.runcall(asyncio.run, worker_pass(args.kind, args.prefix, args.concurrency))
        profiler.dump_stats(profile)
    else:
        result = asyncio.run(worker_pass(args.kind, args.prefix, args.concurrency))
    result["import_s"] = import_s
    print("RESULT " + json.dumps(result), flush=True)
    return 0


# ------------------------------------------------------------------------------------------------ the conductor


def seed(control: SandboxClient, count: int, days_left: int, tag: str) -> list[Customer]:
    customers: list[Customer] = []
    for start in range(0, count, SEED_BATCH):
        doc: dict[str, Any] = {"tenants": [], "proofpoint": {"orgs": []}}
        for i in range(start, min(count, start + SEED_BATCH)):
            customer, one = customer_seed(f"Lean{tag}n{i:05d}", days_left)
            doc["tenants"] += one["tenants"]
            doc["proofpoint"]["orgs"] += one["proofpoint"]["orgs"]
            customers.append(customer)
        control.seed(doc)
    return customers


async def register(env: dict[str, str], prefix: str, customers: Sequence[Customer], portal_url: str) -> None:
    from azure.data.tables.aio import TableServiceClient

    from shared.adapters.tables import TablesStateStore
    from shared.domain import DestinationConfig

    portal = DestinationConfig("vircom-portal", "http", {"preset": "vircom-portal", "url": portal_url})
    async with TableServiceClient.from_connection_string(env["STATE_TABLES_CONNECTION_STRING"]) as service:
        state = TablesStateStore(service, prefix=prefix)
        bound = asyncio.Semaphore(REGISTER_WIDTH)

        async def one(c: Customer) -> None:
            async with bound:
                await state.create_target(c.target((c.proofpoint(), portal)))

        await asyncio.gather(*(one(c) for c in customers))


def spawn(env: dict[str, str], kind: str, prefix: str, concurrency: int, extra: dict[str, str] | None = None
          ) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "benchmarks.lean", "worker", "--kind", kind, "--prefix", prefix,
         "--concurrency", str(concurrency)],
        cwd=ROOT, env={**env, **(extra or {})}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def collect(process: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        return {"failed": f"timed out after {timeout:g} s"}
    for line in out.splitlines():
        if line.startswith("RESULT "):
            result: dict[str, Any] = json.loads(line[len("RESULT "):])
            return result
    return {"failed": (err or out).strip().splitlines()[-1:] or ["no output"]}


def run_worker(env: dict[str, str], kind: str, prefix: str, concurrency: int, timeout: float,
               extra: dict[str, str] | None = None) -> dict[str, Any]:
    return collect(spawn(env, kind, prefix, concurrency, extra), timeout)


def import_times(env: dict[str, str], runs: int = 5) -> list[float]:
    """`import function_app` in fresh processes, as `python -X importtime` reports its cumulative time."""
    found = []
    for _ in range(runs):
        done = subprocess.run([sys.executable, "-X", "importtime", "-c", "import function_app"], cwd=ROOT, env=env,
                              capture_output=True, text=True, check=False)
        for line in done.stderr.splitlines():
            parts = [p.strip() for p in line.split("|")]
            if len(parts) == 3 and parts[2] == "function_app":
                found.append(int(parts[1]) / 1e6)
    return found


class Conductor:
    def __init__(self, sb: Sandbox, args: argparse.Namespace) -> None:
        self.sb = sb
        self.args = args
        self.env = {
            **os.environ, **sb.settings,
            "RETIRE_GRACE_HOURS": "0", "VERIFY_TIMEOUT_SECONDS": "20",
            "PYTHONPATH": str(ROOT),
        }
        self.portal_url = sb.endpoints["portal"] + PORTAL_PATH

    def registered(self, customers: Sequence[Customer]) -> str:
        prefix = "lean" + uuid.uuid4().hex[:10]
        asyncio.run(register(self.env, prefix, customers, self.portal_url))
        return prefix

    def step(self, text: str) -> None:
        print(f"[{time.monotonic() - STARTED:6.1f} s] {text}", flush=True)


STARTED = time.monotonic()


def conduct(sb: Sandbox, args: argparse.Namespace) -> dict[str, Any]:
    c = Conductor(sb, args)
    control = sb.control
    control.reset()
    seed_accounts(control)
    figures: dict[str, Any] = {}

    c.step(f"cold start: import function_app x{args.imports} (python -X importtime) ...")
    figures["imports"] = import_times(c.env, args.imports)

    c.step(f"seeding {args.scan_targets} healthy customers ...")
    healthy = seed(control, args.scan_targets, 300, "h")
    c.step("registering them (full, small, serial sample and cold-start prefixes) ...")
    prefixes = {
        "scan": c.registered(healthy),
        "small": c.registered(healthy[: args.scan_small]),
        "serial": c.registered(healthy[: args.serial_sample]),
        "cold": c.registered(healthy[: args.cold_targets]),
    }
    c.step(f"cold start: a first pass over {args.cold_targets} healthy customers at 0 ms in a fresh process ...")
    figures["cold"] = run_worker(c.env, "cold", prefixes["cold"], args.concurrency, 120)

    add_latency(control, args.latency_ms)
    c.step(f"scan: {args.serial_sample} healthy at concurrency 1 ...")
    figures["serial"] = run_worker(c.env, "serial", prefixes["serial"], 1, 600)
    c.step(f"scan: {args.scan_small} healthy at concurrency {args.concurrency} ...")
    figures["small"] = run_worker(c.env, "small", prefixes["small"], args.concurrency, 600)
    pids = {"sandbox": sb.pid, "azurite": azurite_pid()}
    before = {k: cpu_seconds(p) if p else None for k, p in pids.items()}
    c.step(f"scan: {args.scan_targets} healthy at concurrency {args.concurrency} ...")
    figures["scan"] = run_worker(c.env, "scan", prefixes["scan"], args.concurrency, 900)
    after = {k: cpu_seconds(p) if p else None for k, p in pids.items()}
    figures["scan"]["others_cpu_s"] = {k: (after[k] or 0) - (before[k] or 0) for k in pids}

    control.reset()
    seed_accounts(control)
    c.step(f"seeding and registering {args.rotate_targets} due customers ...")
    due = seed(control, args.rotate_targets, 10, "d")
    prefix = c.registered(due)
    add_latency(control, args.latency_ms)
    c.step(f"rotate: {args.rotate_targets} due at concurrency {args.concurrency} ...")
    figures["rotate"] = run_worker(c.env, "rotate", prefix, args.concurrency, 900)
    figures["rotate"]["kv"] = control.keyvault_writes()

    control.reset()
    seed_accounts(control)
    c.step(f"Key Vault limit: {args.kv_instances} instances x {args.kv_targets} due customers, "
           f"KEY_VAULT_WRITES_PER_10S={args.kv_budget} each ...")
    groups = [c.registered(seed(control, args.kv_targets, 10, f"k{i}")) for i in range(args.kv_instances)]
    add_latency(control, args.latency_ms)
    started = time.perf_counter()
    workers = [spawn(c.env, "kv", p, args.concurrency, {"KEY_VAULT_WRITES_PER_10S": str(args.kv_budget)})
               for p in groups]
    figures["kv"] = {"instances": [collect(w, 900) for w in workers], "wall_s": time.perf_counter() - started,
                     "writes": control.keyvault_writes()}
    control.clear_faults()
    return figures


# ------------------------------------------------------------------------------------------------ the report


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT MET"


def report(f: dict[str, Any], args: argparse.Namespace) -> None:
    n, lat, conc = args.scan_targets, args.latency_ms / 1000, args.concurrency
    scan, small, serial, rotate, cold = f["scan"], f["small"], f["serial"], f["rotate"], f["cold"]
    for name in ("scan", "small", "serial", "rotate", "cold"):
        if "failed" in f[name]:
            print(f"\n{name} worker failed: {f[name]['failed']}")
    print("\nPasses (each in a fresh worker process; CPU = the worker's user + system time):")
    rows = []
    for label, r in (("cold: healthy @0 ms", cold), ("scan: healthy @1 (sample)", serial),
                     (f"scan: healthy @{conc}", small), (f"scan: healthy @{conc}", scan),
                     (f"rotate: due @{conc}", rotate)):
        if "failed" in r:
            continue
        t = max(1, r["targets"])
        rows.append([label, str(r["targets"]), ", ".join(f"{k} {v}" for k, v in sorted(r["by_result"].items())),
                     f"{r['wall_s']:.2f}", f"{r['cpu_s']:.1f}", f"{1000 * r['cpu_s'] / t:.1f}",
                     f"{r['rss_before_kb'] / 1024:.0f}", f"{r['peak_rss_kb'] / 1024:.0f}",
                     f"{1000 * r['longest_stall_s']:.0f}"])
    print(table(rows, ["pass", "targets", "results", "wall s", "CPU s", "CPU ms/target", "RSS start MB",
                       "peak RSS MB", "longest stall ms"]))
    for r in (cold, serial, small, scan, rotate):
        for text, count in r.get("errors", []):
            print(f"  {r['kind']}: {count} x {text}")

    goals: list[list[str]] = []
    if "failed" not in scan and "failed" not in serial:
        bound = n * 2 * lat / conc
        serial_n = serial["wall_s"] * n / max(1, serial["targets"])
        goals += [
            [f"scan {n} healthy @{args.latency_ms:g} ms: wall vs latency bound ({n} x 2 calls x "
             f"{args.latency_ms:g} ms / {conc} = {bound:.1f} s)", f"{scan['wall_s']:.1f} s = "
             f"{scan['wall_s'] / bound:.1f}x", "<= 2x", verdict(scan["wall_s"] <= 2 * bound)],
            [f"scan: speed-up over concurrency 1 (its sample extrapolated to N; at most {conc}x at concurrency "
             f"{conc} when waiting is all)",
             f"{serial_n:.0f} s / {scan['wall_s']:.1f} s = {serial_n / scan['wall_s']:.0f}x", ">= 50x",
             verdict(serial_n / scan["wall_s"] >= 50)],
            ["scan: CPU per healthy customer", f"{1000 * scan['cpu_s'] / n:.1f} ms", "<= 5 ms",
             verdict(1000 * scan["cpu_s"] / n <= 5)],
            [f"scan: peak RSS at {n} (at {small['targets']}: {small['peak_rss_kb'] / 1024:.0f} MB)",
             f"{scan['peak_rss_kb'] / 1024:.0f} MB", "<= 200 MB, flat",
             verdict(scan["peak_rss_kb"] / 1024 <= 200)],
        ]
    if "failed" not in rotate:
        rotated = max(1, rotate["by_result"].get("rotated", 0))
        goals += [
            [f"rotate {args.rotate_targets} due: CPU per rotation", f"{1000 * rotate['cpu_s'] / rotated:.0f} ms",
             "<= 40 ms", verdict(1000 * rotate["cpu_s"] / rotated <= 40)],
            [f"rotate {args.rotate_targets} due: wall", f"{rotate['wall_s']:.1f} s", "<= 60 s",
             verdict(rotate["wall_s"] <= 60)],
            ["rotate: Key Vault creates, most in any 10 s (budget 250)",
             str(rotate["kv"]["create"]["maxPerWindow"]), "<= 250",
             verdict(rotate["kv"]["create"]["maxPerWindow"] <= 250)],
        ]
    if "failed" not in cold:
        goals += [
            [f"cold: first pass over {cold['targets']} healthy @0 ms, fresh process (services built in "
             f"{cold['build_s']:.2f} s, then the pass)", f"{cold['wall_s']:.2f} s",
             "<= 0.3 s", verdict(cold["wall_s"] <= 0.3)],
            ["cold: longest event-loop stall in that pass", f"{1000 * cold['longest_stall_s']:.0f} ms", "<= 100 ms",
             verdict(cold["longest_stall_s"] <= 0.1)],
        ]
    imports = f["imports"]
    if imports:
        median = statistics.median(imports)
        goals.append(["import function_app (python -X importtime, median of "
                      f"{len(imports)}: {', '.join(f'{t:.2f}' for t in imports)})", f"{median:.2f} s", "<= 0.5 s",
                      verdict(median <= 0.5)])
    kv = f["kv"]
    budget_total = args.kv_budget * args.kv_instances
    goals.append([f"Key Vault: {args.kv_instances} instances x budget {args.kv_budget}, creates, most in any 10 s "
                  f"(windows: {kv['writes']['create']['windows']})", str(kv["writes"]["create"]["maxPerWindow"]),
                  f"<= {budget_total} (<= 250)", verdict(kv["writes"]["create"]["maxPerWindow"] <= min(250,
                                                                                                  budget_total))])
    print("\nGoals (issue 13), measured in this run:")
    print(table(goals, ["measure", "measured", "goal", "verdict"]))
    done = [i for i in kv["instances"] if "failed" not in i]
    print(f"\nKey Vault limit run: {sum(i['by_result'].get('rotated', 0) for i in done)} rotated by "
          f"{len(kv['instances'])} instances in {kv['wall_s']:.0f} s; updates (tag moves, not under the create "
          f"limit) most in any 10 s: {kv['writes']['update']['maxPerWindow']}; rotate pass (one instance, budget "
          f"250): creates per window {rotate.get('kv', {}).get('create', {}).get('windows')}")
    if "others_cpu_s" in scan:
        print(f"CPU of the other processes during the {n}-customer scan: " +
              ", ".join(f"{k} {v:.1f} s" for k, v in scan["others_cpu_s"].items()))


# ------------------------------------------------------------------------------------------------ main


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.lean", description=__doc__.split("\n")[0])
    parser.add_argument("--scan-targets", type=int, default=5000)
    parser.add_argument("--scan-small", type=int, default=500, help="a smaller scan: is peak RSS flat in N?")
    parser.add_argument("--serial-sample", type=int, default=50, help="customers scanned at concurrency 1")
    parser.add_argument("--rotate-targets", type=int, default=500)
    parser.add_argument("--cold-targets", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--imports", type=int, default=5, help="fresh processes timing `import function_app`")
    parser.add_argument("--kv-instances", type=int, default=3)
    parser.add_argument("--kv-targets", type=int, default=60, help="due customers per instance")
    parser.add_argument("--kv-budget", type=int, default=20, help="KEY_VAULT_WRITES_PER_10S of each instance")
    args = parser.parse_args(argv)
    if not (1 <= args.scan_small <= args.scan_targets and 1 <= args.serial_sample <= args.scan_targets
            and 1 <= args.cold_targets <= args.scan_targets):
        parser.error("--scan-small, --serial-sample and --cold-targets must be 1..--scan-targets")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["worker"]:
        return worker(argv[1:])
    args = parse_args(argv)
    if not os.environ.get("STATE_TABLES_CONNECTION_STRING"):
        raise SystemExit("run through `make bench` (it starts Azurite and sets STATE_TABLES_CONNECTION_STRING)")
    signal.signal(signal.SIGTERM, _terminate)
    logging.basicConfig(level=logging.ERROR)
    load = os.getloadavg()
    print(f"Machine: {os.cpu_count()} cores ({len(os.sched_getaffinity(0))} usable), Python "
          f"{sys.version.split()[0]}, {sys.platform}; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"Settings: {' '.join(argv) or '(defaults)'}; latency {args.latency_ms:g} ms on "
          f"{', '.join(LATENCY_SERVICES)} (not on Azurite); RETIRE_GRACE_HOURS=0, identity mode federated; two "
          f"destinations per customer", flush=True)
    state_dir = Path(tempfile.mkdtemp(prefix="rotator-lean-"))
    try:
        with running(state_dir) as sb:
            figures = conduct(sb, args)
            report(figures, args)
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)
    load = os.getloadavg()
    print(f"\nTotal benchmark time: {time.monotonic() - STARTED:.0f} s; load average at the end {load[0]:.2f} "
          f"{load[1]:.2f} {load[2]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
