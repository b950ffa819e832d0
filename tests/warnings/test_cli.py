"""The command line in its own process: the fleet export streamed as CSV and JSON, exclusions (a snooze without an
end refused, exit 2, nothing stored), thresholds, and the warnings pass telling each due warning once."""

from __future__ import annotations

import csv
import io
import json

from shared import bootstrap
from tests.api.conftest import Api
from tests.material import client_secret
from tests.rotation.conftest import World
from tests.warnings.test_api import fleet


def run(world: World, *args: str) -> tuple[int, str]:
    process = world.cli(*args)
    code = process.wait(timeout=120)
    return code, process.output()


async def test_export_exclusions_thresholds_and_warnings_from_the_command_line(api: Api, world: World) -> None:
    one, two, _ = await fleet(api, world)
    code, out = run(world, "inventory", "export", "--format", "csv", "--days-left", "14")
    assert code == 0, out
    table = list(csv.DictReader(io.StringIO(out[out.index("tenantId,"):])))
    assert sorted(r["keyId"][-1] for r in table) == ["1", "2", "5"]
    code, out = run(world, "inventory", "export", "--format", "json", "--tenant", two)
    assert code == 0, out
    assert sorted(d["keyId"][-1] for d in json.loads(out[out.index("["):])) == ["5", "6"]
    code, out = run(world, "inventory", "export", "--days-left", "-3")
    assert code == 2 and "daysLeft" in out

    code, out = run(world, "exclusions", "add", two, "--scope", "customer", "--why", "offboarding", "--snooze")
    assert code == 2 and "SnoozeNeedsEnd" in out
    leaked = client_secret("cli")  # the API refuses a pasted secret as a reason: the command line too
    code, out = run(world, "exclusions", "add", two, "--scope", "customer", "--why", f"old secret {leaked}")
    assert code == 2 and "looks like a secret" in out and leaked not in out and leaked[3:12] not in out
    code, out = run(world, "exclusions", "list")
    assert code == 0 and json.loads(out[out.index("["):]) == []
    async with bootstrap.services() as svc:
        assert await svc.state.events(two, "") == []  # nothing audited either
    code, out = run(world, "exclusions", "add", two, "--scope", "customer", "--why", "offboarding", "--as", "ann")
    assert code == 0, out
    made = json.loads(out[out.index("{"):])
    assert (made["by"], made["kind"], made["until"]) == ("ann", "exclusion", None)

    stranger = "99999999-9999-4999-8999-999999999999"  # no target registered: no thresholds, as the API answers
    code, out = run(world, "warnings", "thresholds", stranger)
    assert code != 0 and "TenantNotFound" in out, out
    code, out = run(world, "warnings", "thresholds", one, "21", "3", "--as", "ann")
    assert code == 0 and json.loads(out[out.index("{"):])["days"] == [21, 3]

    code, out = run(world, "warnings", "run")
    assert code == 0, out
    # Fabrikam's backup secret (10 days, threshold 21) warns; Tailspin is excluded; the managed secret (25 days) is
    # inside the rotator's own lead time; the expired one warns no more.
    assert out.count("ALERT expiring-") == 1 and "ALERT expiring-21d" in out
    summary = json.loads(out[out.index("{"):])
    assert summary["due"] == 1 and summary["failed"] == []
    code, out = run(world, "warnings", "run")
    assert code == 0 and "ALERT" not in out  # told once

    code, out = run(world, "exclusions", "lift", made["id"], "--as", "bob")
    assert code == 0, out
    async with bootstrap.services() as svc:
        trail = [(e.outcome, e.actor) for e in await svc.state.events(two, "")]
    assert trail == [("exclusion-lifted", "manual:bob"), ("excluded", "manual:ann")]
