"""The Key Vault write budget main.bicep derives from the scale-out limit: for every instance count the template
accepts, the instances that can write secrets at once stay within the rotator's share of the vault's limit, and each
gets a budget the code accepts (at least one write per 10 s).

Facts: Key Vault allows 300 secret creates per 10 s per vault (learn.microsoft.com/azure/key-vault/general/
service-limits). Flex Consumption's maximum instance count defaults to 100, may be 1 to 1000, and applies to each
function group, not to the app's combined instances (learn.microsoft.com/azure/azure-functions/event-driven-scaling,
"Limit scale-out" and "Per-function scaling"): the queue worker and the HTTP functions, the two groups that write
secret versions, may each run that many instances."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

from shared.adapters.keyvault import DEFAULT_WRITES_PER_WINDOW, WriteBudget
from shared.settings import Settings
from tests.infra.bicep_model import (
    FUNCTION_APP,
    MAIN,
    decorator,
    evaluate,
    local_example_values,
    parse,
    product_settings,
)

VAULT_CREATES_PER_10S = 300
FLEX_DEFAULT, FLEX_LOWEST, FLEX_HIGHEST = 100, 1, 1000
WRITING_GROUPS = 2  # advance_target (queue) and the HTTP group (POST /api/rotations?wait=true, the consent key)


def _count_param(path: Any) -> dict[str, Any]:
    param: dict[str, Any] = parse(path)["parameters"]["maximumInstanceCount"]
    return param


def _budget(instances: int) -> int:
    value, from_defaults = evaluate(product_settings()["KEY_VAULT_WRITES_PER_10S"], MAIN,
                                    {"maximumInstanceCount": instances})
    assert from_defaults, "the budget must come from literals and the instance count alone"
    return int(value)


def _allowed_counts() -> range:
    param = _count_param(MAIN)
    return range(decorator(param, "min_value"), decorator(param, "max_value") + 1)


def test_the_instance_limit_follows_flex_consumption() -> None:
    module = _count_param(FUNCTION_APP)
    assert (decorator(module, "min_value"), decorator(module, "max_value")) == (FLEX_LOWEST, FLEX_HIGHEST)
    assert module["default"] == FLEX_DEFAULT
    main = _count_param(MAIN)
    assert main["default"] == FLEX_DEFAULT
    allowed = _allowed_counts()
    assert allowed.start == FLEX_LOWEST and FLEX_DEFAULT in allowed and allowed.stop - 1 < FLEX_HIGHEST


def test_every_allowed_instance_count_keeps_the_vault_within_its_limit() -> None:
    for instances in _allowed_counts():
        budget = _budget(instances)
        assert budget >= 1, instances  # the code's lower bound; a budget of 0 would stop every rotation
        writers = WRITING_GROUPS * instances
        assert writers * budget <= DEFAULT_WRITES_PER_WINDOW < VAULT_CREATES_PER_10S, instances
        # No share is thrown away: one more write per instance would pass the rotator's 250.
        assert writers * (budget + 1) > DEFAULT_WRITES_PER_WINDOW, instances


def test_the_cap_is_where_a_share_would_fall_under_one_write() -> None:
    top = _allowed_counts().stop - 1
    assert _budget(top) >= 1
    assert _budget(top + 1) == 0  # so the template refuses a larger count instead of deploying a stalled rotator


@pytest.mark.parametrize("instances", [1, 40, FLEX_DEFAULT, 125])
def test_the_code_accepts_the_computed_budget(instances: int) -> None:
    env = {**local_example_values(), "KEY_VAULT_WRITES_PER_10S": str(_budget(instances))}
    assert Settings.from_env(env).key_vault_writes_per_10s == _budget(instances)


def test_the_bicep_shares_out_the_codes_own_budget() -> None:
    # The Bicep's 250 is the adapter's single-process default: one number for the rotator's share of the vault.
    variables = parse(MAIN)["variables"]
    assert variables["keyVaultWriteBudget"]["value"] == DEFAULT_WRITES_PER_WINDOW
    assert variables["keyVaultWritingGroups"]["value"] == WRITING_GROUPS


def test_the_smallest_budget_lets_one_write_through_per_window() -> None:
    now = [0.0]

    async def sleep(seconds: float) -> None:
        now[0] += seconds
        await asyncio.sleep(0)

    budget = WriteBudget(min(_budget(n) for n in _allowed_counts()), 10.0, monotonic=lambda: now[0], sleep=sleep)
    sent: list[float] = []

    async def one_write() -> None:
        async with budget.write():
            sent.append(now[0])
            now[0] += 0.3  # the request travels

    async def main() -> None:
        await asyncio.gather(*(one_write() for _ in range(4)))

    asyncio.run(main())
    assert len(sent) == 4  # slowed, never refused
    assert all(later >= earlier + 0.3 + 10.0 for earlier, later in itertools.pairwise(sent))
