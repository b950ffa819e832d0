"""The client-side Key Vault write budget: never more than `limit` writes in any window, on a fake clock."""

from __future__ import annotations

import asyncio

from shared.adapters.keyvault import WriteBudget, write_budget


class FakeTime:
    """A clock that moves only when someone sleeps (or a request takes time)."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


def test_writes_over_the_budget_wait_until_the_oldest_answer_is_a_window_old() -> None:
    clock = FakeTime()
    budget = WriteBudget(3, 10.0, monotonic=clock.monotonic, sleep=clock.sleep)
    sent: list[float] = []

    async def one_write(takes: float) -> None:
        async with budget.write():
            sent.append(clock.now)
            clock.now += takes  # the request travels; the answer comes back later

    async def main() -> None:
        await asyncio.gather(*(one_write(0.5) for _ in range(7)))

    asyncio.run(main())
    assert len(sent) == 7
    # Every write counts from its sending until a window after its answer: each later write waits for that.
    answered = [t + 0.5 for t in sent]
    for i, start in enumerate(sent):
        counted = [j for j in range(len(sent)) if j != i and sent[j] <= start < answered[j] + 10.0]
        assert len(counted) < 3, (i, sent)
    assert sent[3] >= answered[0] + 10.0


def test_concurrent_writers_never_overbook_and_all_get_through() -> None:
    clock = FakeTime()
    budget = WriteBudget(5, 10.0, monotonic=clock.monotonic, sleep=clock.sleep)
    most = 0

    async def one_write() -> None:
        nonlocal most
        async with budget.write():
            most = max(most, budget.in_use())
            await clock.sleep(0.2)

    async def main() -> None:
        await asyncio.gather(*(one_write() for _ in range(40)))

    asyncio.run(main())
    assert most == 5
    assert budget.in_use() <= 5


def test_one_budget_per_vault_per_process() -> None:
    first = write_budget("https://a.vault.azure.net", 250)
    assert write_budget("https://a.vault.azure.net", 100) is first and first.limit == 100
    assert write_budget("https://b.vault.azure.net", 250) is not first
