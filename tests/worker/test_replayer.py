"""The replay budget on a real event loop: replays share it turn by turn, and the loop
keeps running other tasks between their slices (the read-backs themselves, against the
real broker: tests/worker/test_readback_integration.py)."""

from __future__ import annotations

import asyncio

from clarion_worker.replayer import ReplayBudget


async def test_concurrent_replays_share_each_turn_and_all_progress() -> None:
    budget = ReplayBudget(per_turn=10)
    turn = 0
    granted: dict[int, int] = {}  # turn -> events granted in it, all replays together
    done: dict[str, int] = {}

    async def ticker() -> None:
        nonlocal turn
        while True:
            await asyncio.sleep(0)
            turn += 1

    async def replay(name: str, total: int) -> None:
        got = 0
        while got < total:
            size = await budget.take(total - got)
            assert 1 <= size <= total - got
            granted[turn] = granted.get(turn, 0) + size
            got += size
            await asyncio.sleep(0)  # the session pumps, then asks again
        done[name] = got

    tick = asyncio.create_task(ticker())
    await asyncio.gather(*(replay(f"r{i}", 95) for i in range(4)))
    tick.cancel()
    assert done == {f"r{i}": 95 for i in range(4)}
    # The ticker counts loop iterations: never more than the budget in one of them.
    assert max(granted.values()) <= 10, granted
    assert sum(granted.values()) == 4 * 95


async def test_a_lone_replay_is_not_slowed_below_its_budget() -> None:
    budget = ReplayBudget(per_turn=50)
    sizes = [await budget.take(40) for _ in range(3)]
    # 40, then the 10 left in this turn, then a fresh turn.
    assert sizes == [40, 10, 40]


async def test_waiting_replays_park_and_are_served_in_arrival_order() -> None:
    budget = ReplayBudget(per_turn=10)
    assert await budget.take(10) == 10  # this turn's budget is spent
    order: list[int] = []

    async def replay(i: int) -> None:
        assert await budget.take(10) == 10
        order.append(i)

    tasks = [asyncio.create_task(replay(i)) for i in range(30)]
    for _ in range(200):
        await asyncio.sleep(0)
        if len(order) == 30:
            break
    assert order == list(range(30))  # one full grant per turn, first come first served
    assert budget.waiting == 0
    await asyncio.gather(*tasks)


async def test_a_cancelled_waiter_does_not_hold_up_the_others() -> None:
    budget = ReplayBudget(per_turn=5)
    await budget.take(5)
    takers = [asyncio.create_task(budget.take(5)) for _ in range(3)]
    for _ in range(10):
        await asyncio.sleep(0)
        if budget.waiting == 2:
            break
    assert budget.waiting == 2  # the first was served by a new turn, two are parked
    parked = [task for task in takers if not task.done()]
    parked[0].cancel()
    assert await asyncio.wait_for(parked[1], 1) == 5
    assert parked[0].cancelled()
    assert await takers[0] == 5


async def test_take_now_is_all_or_nothing_and_never_ahead_of_waiting_replays() -> None:
    budget = ReplayBudget(per_turn=10)
    assert budget.take_now(6)
    assert not budget.take_now(5)  # 4 left in this turn: a replay that does not fit waits
    assert budget.take_now(4)
    takers = [asyncio.create_task(budget.take(10)) for _ in range(2)]
    for _ in range(10):
        await asyncio.sleep(0)
        if budget.waiting:
            break
    assert budget.waiting == 1  # one took the next turn's budget, one is parked
    assert not budget.take_now(0)  # a parked replay goes first, even before an empty one
    assert await asyncio.gather(*takers) == [10, 10]
