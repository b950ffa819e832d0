"""What every kill, race and fault test checks: DESIGN.md's invariants read from the sandbox, and the kill machinery.

The invariants are read from the services themselves (the sandbox's Graph, Key Vault, Proofpoint and portal
state), never from the rotator's own rows, so a wrong row cannot make them pass.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest

from sandbox.client import through_tables_proxy
from shared.domain import ROTATOR_MARK, Actor, DestinationConfig, Stage, Target
from tests.rotation.conftest import Customer, Rotating, Rotator, World

TAKE_OVER = timedelta(minutes=6)  # past a killed run's lease (5 minutes)
PORTAL_PATH = "/api/office365/azure-ad"
_ROTATION = re.compile(r"\brotation ([0-9a-f]{32})\b")


def destinations(world: World, customer: Customer) -> tuple[DestinationConfig, ...]:
    """Proofpoint, then the MSP portal (pushed in this order)."""
    portal = DestinationConfig(
        "vircom-portal", "http", {"preset": "vircom-portal", "url": world.sb.endpoints["portal"] + PORTAL_PATH}
    )
    return (customer.proofpoint(), portal)


@pytest.fixture
def proxied(world: World) -> Iterator[World]:
    """The rotator's Tables traffic goes through the sandbox's proxy (so state reads and writes can be held)."""
    direct = world.env["STATE_TABLES_CONNECTION_STRING"]
    world.env["STATE_TABLES_CONNECTION_STRING"] = through_tables_proxy(direct, world.sb.endpoints["tables"])
    yield world
    world.env["STATE_TABLES_CONNECTION_STRING"] = direct


def row(customer: Customer) -> str:
    """The path of the target's row in the state table (as the Tables proxy sees it)."""
    return rf"targets\(PartitionKey='{customer.tenant_id}',RowKey='{customer.app_id}'\)$"


def secret_path(customer: Customer) -> str:
    return f"/secrets/{Target(customer.tenant_id, customer.app_id).secret_name}"


# ---------------------------------------------------------------- what the services hold


def made(world: World, customer: Customer) -> list[dict[str, Any]]:
    """The live credentials the rotator created (its mark in the displayName)."""
    return [c for c in world.credentials(customer) if (c["displayName"] or "").startswith(ROTATOR_MARK)]


def tagged(world: World, customer: Customer, stage: str) -> list[dict[str, Any]]:
    return [v for v in world.versions(customer) if v["tags"].get("stage") == stage]


def destination_values(world: World, customer: Customer) -> dict[str, str]:
    """The secret each destination holds now (Proofpoint's stored ad_key, the portal's last received secret)."""
    state = world.sb.control.state()
    held: dict[str, str] = {}
    org = next((o for o in state["proofpoint"]["orgs"] if o["domain"] == customer.domain), None)
    if org is not None and org["settings"].get("ad_key"):
        held["proofpoint"] = org["settings"]["ad_key"]
    received = [r for r in state["portal"]["received"] if r["body"].get("tenantId") == customer.tenant_id]
    if received:
        held["vircom-portal"] = received[-1]["body"]["clientSecret"]
    return held


def assert_safe_now(world: World, customer: Customer, *, rotated_before: bool) -> None:
    """What must hold at EVERY instant, in flight or not (also while a request is held, and right after a kill).

    - once a rotation finished, Key Vault has at least one `current` version;
    - a live credential is never tagged `retired`;
    - no credential a destination uses is removed (DESIGN.md invariant 2);
    - no two live credentials carry one rotation id, and at most one rotation is in flight (invariant 3).
    """
    live = {c["keyId"]: c for c in world.credentials(customer)}
    versions = world.versions(customer)
    if rotated_before:
        assert [v for v in versions if v["tags"].get("stage") == "current"], (
            "no Key Vault version is tagged current: " + repr([v["tags"] for v in versions])
        )
    for version in versions:
        if version["tags"].get("stage") == "retired":
            assert version["tags"].get("key-id") not in live, f"live credential tagged retired: {version['tags']}"
    values = {c["secretText"] for c in live.values()}
    for name, value in destination_values(world, customer).items():
        assert value in values, f"the credential {name} uses was removed"
    ids = [_ROTATION.search(c["displayName"]).group(1) for c in made(world, customer)]  # type: ignore[union-attr]
    assert len(ids) == len(set(ids)), f"two live credentials of one rotation: {ids}"
    finished = {v["tags"].get("rotation-id") for v in versions if v["tags"].get("stage") in ("current", "previous")}
    in_flight = {i for i in ids if i not in finished}
    assert len(in_flight) <= 1, f"more than one rotation in flight: {in_flight}"


def assert_converged(world: World, customer: Customer, *, rotations: int, target: Any) -> None:
    """After recovery: the DESIGN.md invariants, exactly `rotations` rotator-made credentials, one `current`, no
    version of a gone credential left untagged `retired`, no value stored in two versions.

    `target` is the rotator's row (idle); its current key must be what Key Vault and every destination hold.
    """
    assert target.state.stage is Stage.IDLE, f"not converged: stage {target.state.stage.value}"
    creds = made(world, customer)
    values = {v["value"] for v in world.versions(customer)}
    for credential in creds:
        # Invariant 1: every live rotator-made credential has its value in Key Vault (or it is removed).
        assert credential["secretText"] in values, f"credential {credential['keyId']} has a value nobody holds"
    assert len(creds) == rotations, f"expected {rotations} rotator-made credential(s), found {len(creds)}"
    current = tagged(world, customer, "current")
    assert len(current) == 1, f"exactly one current version, found {[v['tags'] for v in current]}"
    (now,) = current
    assert now["tags"]["key-id"] == target.state.current_key_id
    by_key = {c["keyId"]: c for c in creds}
    assert now["value"] == by_key[target.state.current_key_id]["secretText"]
    for name, value in destination_values(world, customer).items():
        assert value == now["value"], f"{name} does not hold the current secret"
    live = {c["keyId"] for c in world.credentials(customer)}
    for version in world.versions(customer):
        # Tags follow what Entra ID holds: a version whose credential is gone is `retired`, never left behind.
        assert version["tags"].get("stage") == "retired" or version["tags"].get("key-id") in live, (
            f"dead version of a gone credential: {version['tags']}")
    stored = [v["value"] for v in world.versions(customer)]
    assert len(stored) == len(set(stored)), "one value stored in two Key Vault versions (a write sent twice)"
    assert_safe_now(world, customer, rotated_before=True)


async def recover(world: World, rotator: Rotator, customer: Customer, *, passes: int = 3,
                  offset: timedelta = TAKE_OVER, **overrides: str) -> Any:
    """Timer passes after a crash (past its lease) until the target is idle again; its row."""
    target = None
    for _ in range(passes):
        async with rotator(offset, **overrides) as svc:
            await svc.engine.run_pass(Actor.TIMER)
            target, _ = await svc.state.get_target(customer.tenant_id, customer.app_id)
        assert_safe_now(world, customer, rotated_before=bool(tagged(world, customer, "current")))
        if target.state.stage is Stage.IDLE:
            break
    return target


async def rotated_once(world: World, rotator: Rotator, name: str) -> tuple[Customer, str]:
    """A customer whose first rotation finished (its version `current`); the key id of that rotation's credential."""
    customer = world.seed_customer(name, 5)
    world.seed_accounts()
    async with rotator() as svc:
        await svc.state.create_target(customer.target(destinations(world, customer)))
        summary = await svc.engine.run_pass(Actor.TIMER)
        ours = [o.result for o in summary.outcomes if o.app_id == customer.app_id]
        assert ours == ["rotated"], summary.outcomes  # (other customers of the test are healthy by now)
        target, _ = await svc.state.get_target(customer.tenant_id, customer.app_id)
    assert len(tagged(world, customer, "current")) == 1
    return customer, target.state.current_key_id



# ---------------------------------------------------------------- killing the rotator


@dataclass(frozen=True)
class Point:
    """One held request: the rotator is parked on it (before or after the service did the work)."""

    service: str
    method: str | None
    path: str
    when: str = "before"
    skip: int = 0
    client_id: str | None = None
    body: str | None = None

    def install(self, world: World) -> str:
        return world.sb.control.add_hold(
            self.service, method=self.method, path=self.path, when=self.when, skip=self.skip,
            client_id=self.client_id, body_match=self.body,
        )


@dataclass(frozen=True)
class CrashPoint:
    """Where to kill: the last point of `chain`; the earlier ones walk the rotator there one held request at a time
    (each next hold is installed while the previous request is parked, so nothing slips past)."""

    name: str
    chain: tuple[Point, ...]
    notes: tuple[str, ...] = field(default=())


class Exited(Exception):
    """The rotator ended before reaching the crash point."""

    def __init__(self, code: int, stderr: str) -> None:
        super().__init__(f"the rotator exited ({code}) before reaching the crash point: {stderr[-3000:]}")
        self.code = code


def wait_held(world: World, process: Rotating, hold: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while world.sb.control.waiting(hold) < 1:
        if process.poll() is not None:
            raise Exited(process.returncode, process.output())
        if time.monotonic() > deadline:
            raise AssertionError("the rotator never reached the crash point")
        time.sleep(0.02)


def kill_at(world: World, point: CrashPoint, args: Sequence[str],
            observe: Callable[[], None] | None = None, offset: float = 0.0) -> None:
    """Run the rotator's CLI with `args`, walk it to the crash point, `observe` the held instant, SIGKILL it.

    Raises Exited when the rotator ends before reaching the point."""
    control = world.sb.control
    first = point.chain[0].install(world)
    process = world.cli(*args, offset=offset)
    try:
        held = first
        wait_held(world, process, held)
        for step in point.chain[1:]:
            following = step.install(world)
            control.release(held)
            held = following
            wait_held(world, process, held)
        if observe is not None:
            observe()
    finally:
        process.kill()
        process.wait(timeout=10)
        process.log.unlink(missing_ok=True)
        control.release_all()


def kill_after(world: World, args: Sequence[str], ready: Callable[[], bool], delay: float) -> bool:
    """Run the CLI, wait until `ready()` (polled), then `delay` seconds more, then SIGKILL (whatever it is doing).

    False when the rotator ended before it could be killed."""
    process = world.cli(*args)
    try:
        deadline = time.monotonic() + 60
        while not ready():
            if process.poll() is not None or time.monotonic() > deadline:
                return False  # it finished (or failed) before: nothing left to kill
            time.sleep(0.01)
        time.sleep(delay)
        return process.poll() is None
    finally:
        process.kill()
        process.wait(timeout=10)
        process.log.unlink(missing_ok=True)
