"""`make bench` (second part; alone: `make bench-fanout`): rotations fanned out on the work queue, drained by 1, 2
and 4 worker processes (stand-ins for Functions instances), with Key Vault's write limit held across them.

For each worker count W: the sandbox is reset and seeded with `--targets` customers due in 10 days (each its own
tenant, two destinations), registered in a fresh table prefix; one planning pass (`shared.fanout.plan_pass`, what
the rotation timer runs) reserves them and enqueues one message each on a fresh Azurite queue; then W processes of
`python -m shared work --until-empty` (the host's queue trigger: batches of 8, the real queue function) drain it at
once. Each worker's Key Vault budget is KEY_VAULT_WRITES_PER_10S = `--kv-budget` / W (the limiter sized per
instance, as docs/benchmarks.md says to size it for the scale-out limit), and the sandbox counts the creates it
received in every 10 s window.

Prints per W: wall time of the drain, rotations per second, speed-up over one worker, the workers' CPU, and Key
Vault's most creates in any 10 s. It asserts nothing; it is not a test. Run it through `make bench-fanout`.
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
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.lean import register, seed
from benchmarks.scale import (
    LATENCY_SERVICES,
    PORTAL_PATH,
    _terminate,
    add_latency,
    azurite_pids,
    cpu_seconds,
    seed_accounts,
    table,
)
from sandbox.launch import RunningSandbox as Sandbox
from sandbox.launch import running

ROOT = Path(__file__).resolve().parent.parent
STARTED = time.monotonic()


def step(text: str) -> None:
    print(f"[{time.monotonic() - STARTED:6.1f} s] {text}", flush=True)


async def plan(env: dict[str, str], prefix: str, queue: str) -> dict[str, Any]:
    """One planning pass, as the rotation timer runs it: reserve every due customer and enqueue it."""
    from shared.alerts import LogAlerter
    from shared.bootstrap import services
    from shared.fanout import plan_pass
    from shared.settings import Settings

    settings = Settings.from_env(env)
    started = time.perf_counter()
    async with services(settings, table_prefix=prefix, work_queue=queue, alerter=LogAlerter()) as svc:
        summary = await plan_pass(svc.engine, svc.work_queue)
    return {"enqueued": dict(summary.enqueued), "failed": summary.failed, "wall_s": time.perf_counter() - started}


async def results(env: dict[str, str], prefix: str) -> Counter[str]:
    """How each target's last rotation ended, read from the state table."""
    from azure.data.tables.aio import TableServiceClient

    from shared.adapters.tables import TablesStateStore

    async with TableServiceClient.from_connection_string(env["STATE_TABLES_CONNECTION_STRING"]) as service:
        state = TablesStateStore(service, prefix=prefix)
        return Counter(t.observed.last_outcome or t.state.stage.value for t, _ in await state.list_targets())


def equipment_cpu(sb: Sandbox) -> float:
    """CPU seconds used so far by the test equipment on this machine: the sandbox and Azurite."""
    return sum(cpu_seconds(pid) or 0.0 for pid in [sb.pid, *azurite_pids()])


def drain(sb: Sandbox, env: dict[str, str], prefix: str, queue: str, workers: int, budget: int, timeout: float
          ) -> dict[str, Any]:
    """W worker processes at once, each with its share of the Key Vault budget; wall time until the last exits,
    the workers' CPU and the equipment's (sandbox and Azurite) CPU meanwhile."""
    extra = {"KEY_VAULT_WRITES_PER_10S": str(max(1, budget // workers))}
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    equipment_before = equipment_cpu(sb)
    started = time.perf_counter()
    processes = [
        subprocess.Popen([sys.executable, "-m", "shared", "--table-prefix", prefix, "--work-queue", queue, "work",
                          "--until-empty"], cwd=ROOT, env={**env, **extra}, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
        for _ in range(workers)
    ]
    codes, errors = [], []
    for p in processes:
        try:
            _, err = p.communicate(timeout=max(1.0, timeout - (time.perf_counter() - started)))
        except subprocess.TimeoutExpired:
            p.kill()
            _, err = p.communicate()
        codes.append(p.returncode)
        if p.returncode:
            errors.append((err or "").strip().splitlines()[-1:])
    wall = time.perf_counter() - started
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    return {"wall_s": wall, "cpu_s": cpu, "equipment_cpu_s": equipment_cpu(sb) - equipment_before, "codes": codes,
            "errors": errors, "budget_each": int(extra["KEY_VAULT_WRITES_PER_10S"])}


def measure(sb: Sandbox, args: argparse.Namespace, workers: int) -> dict[str, Any]:
    control = sb.control
    # In this process too: the planning pass's identity (azure-identity) reads its endpoint from os.environ.
    os.environ.update({**sb.settings, "RETIRE_GRACE_HOURS": "0", "VERIFY_TIMEOUT_SECONDS": "20"})
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    control.reset()
    seed_accounts(control)
    step(f"{workers} worker(s): seeding and registering {args.targets} due customers ...")
    customers = seed(control, args.targets, 10, f"w{workers}")
    prefix = "fan" + uuid.uuid4().hex[:10]
    queue = f"{prefix}-work"
    portal = sb.endpoints["portal"] + PORTAL_PATH
    asyncio.run(register(env, prefix, customers, portal))
    add_latency(control, args.latency_ms)
    step(f"{workers} worker(s): planning (reserve and enqueue) ...")
    planned = asyncio.run(plan(env, prefix, queue))
    step(f"{workers} worker(s): draining the queue ...")
    drained = drain(sb, env, prefix, queue, workers, args.kv_budget, args.timeout)
    writes = control.keyvault_writes()
    control.clear_faults()
    return {"workers": workers, "planned": planned, **drained, "results": asyncio.run(results(env, prefix)),
            "kv_max": writes["create"]["maxPerWindow"], "kv_windows": writes["create"]["windows"]}


def report(runs: Sequence[dict[str, Any]], args: argparse.Namespace) -> None:
    base = next((r for r in runs if r["workers"] == 1), None)
    base_rate = base["results"].get("rotated", 0) / base["wall_s"] if base else 0.0
    rows = []
    for r in runs:
        rotated = r["results"].get("rotated", 0)
        rate = rotated / r["wall_s"]
        rows.append([str(r["workers"]), f"{r['planned']['wall_s']:.1f}", str(sum(r["planned"]["enqueued"].values())),
                     ", ".join(f"{k} {v}" for k, v in sorted(r["results"].items())), f"{r['wall_s']:.1f}",
                     f"{rate:.1f}", f"{rate / base_rate:.2f}x" if base_rate else "-", f"{r['cpu_s']:.0f}",
                     f"{1000 * r['cpu_s'] / max(1, rotated):.0f}",
                     f"{1000 * r['equipment_cpu_s'] / max(1, rotated):.0f}", str(r["budget_each"]), str(r["kv_max"])])
        for error in r["errors"]:
            print(f"  {r['workers']} worker(s): a worker failed: {error}")
    print(f"\nFan-out: {args.targets} due customers, {args.latency_ms:g} ms on every service, drained by W worker "
          f"processes (`python -m shared work`), Key Vault budget {args.kv_budget} per 10 s shared out:")
    print(table(rows, ["W", "plan s", "enqueued", "results", "drain s", "rotations/s", "speed-up", "CPU s",
                       "CPU ms/rotation", "sandbox+Azurite CPU ms/rotation", "KV budget each",
                       "KV creates max/10 s"]))
    if base and base["results"].get("rotated"):
        # What this machine's cores allow whatever the number of workers: every rotation costs the workers' CPU and
        # the equipment's (which a real deployment does not pay on its own instances).
        worker, equipment = (1000 * base[k] / base["results"]["rotated"] for k in ("cpu_s", "equipment_cpu_s"))
        bound = (os.cpu_count() or 1) / ((worker + equipment) / 1000)
        print(f"\nCPU bound of this machine: a rotation costs {worker + equipment:.0f} ms of CPU in all (worker "
              f"{worker:.0f}, sandbox and Azurite {equipment:.0f}); {os.cpu_count()} cores allow at most "
              f"{bound:.2f} rotations/s, {bound / base_rate:.2f}x the rate of one worker")
    two = next((r for r in runs if r["workers"] == 2), None)
    if base and two:
        ratio = (two["results"].get("rotated", 0) / two["wall_s"]) / base_rate if base_rate else 0
        print(f"\n2 workers vs 1: {ratio:.2f}x (goal >= 1.7x: {'met' if ratio >= 1.7 else 'NOT MET'}); Key Vault "
              f"creates never above {max(r['kv_max'] for r in runs)} per 10 s (goal <= 250: "
              f"{'met' if max(r['kv_max'] for r in runs) <= 250 else 'NOT MET'})")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fanout", description=__doc__.split("\n")[0])
    parser.add_argument("--targets", type=int, default=1000)
    parser.add_argument("--workers", default="1,2,4", help="worker counts, comma-separated")
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--kv-budget", type=int, default=250, help="KEY_VAULT_WRITES_PER_10S shared by all workers")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds a drain may take")
    args = parser.parse_args(argv)
    if not os.environ.get("STATE_TABLES_CONNECTION_STRING") or not os.environ.get("WORK_QUEUE"):
        raise SystemExit("run through `make bench-fanout` (it starts Azurite and sets its connection strings)")
    signal.signal(signal.SIGTERM, _terminate)
    logging.basicConfig(level=logging.ERROR)
    load = os.getloadavg()
    print(f"Machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}; load average {load[0]:.2f} "
          f"{load[1]:.2f} {load[2]:.2f}; latency {args.latency_ms:g} ms on {', '.join(LATENCY_SERVICES)}", flush=True)
    state_dir = Path(tempfile.mkdtemp(prefix="rotator-fanout-"))
    try:
        with running(state_dir) as sb:
            runs: list[dict[str, Any]] = []
            for w in args.workers.split(","):
                runs.append(measure(sb, args, int(w)))
                report(runs, args)  # each row as soon as it is measured: a run stopped later keeps the figures
        print("\nRESULT " + json.dumps([{k: v for k, v in r.items() if k != "kv_windows"} for r in runs]))
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)
    print(f"\nTotal benchmark time: {time.monotonic() - STARTED:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
