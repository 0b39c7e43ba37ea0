"""harness.node.deadlines: timers of one delay on one loop timer fire like one timer each."""

from __future__ import annotations

import asyncio

from harness.node.deadlines import Deadlines

DELAY = 0.02  # seconds: short, every test waits for what it fires through a future, not a sleep
WAIT = 5.0  # seconds before a test gives up on a timer that never fires


def test_timers_fire_in_order_and_cancelled_or_restarted_ones_as_they_should() -> None:
    async def scenario() -> list[str]:
        loop = asyncio.get_running_loop()
        fired: list[str] = []
        done = loop.create_future()

        def fire(key: str) -> None:
            fired.append(key)
            if key == "last":
                done.set_result(None)

        timers: Deadlines[str] = Deadlines(loop, DELAY, fire)
        for key in ("a", "b", "c", "d"):
            timers.start(key)
        timers.cancel("b")
        timers.start("a")  # restarted: now after d
        timers.start("last")
        assert len(timers) == 4 and "b" not in timers and "a" in timers
        await asyncio.wait_for(done, WAIT)
        assert len(timers) == 0
        timers.close()
        return fired

    assert asyncio.run(scenario()) == ["c", "d", "a", "last"]


def test_a_timer_started_while_firing_waits_its_whole_delay_and_arms_one_handle() -> None:
    """A resolve timer restarted from its own timeout (the participant asks again)."""

    async def scenario() -> tuple[list[float], int]:
        loop = asyncio.get_running_loop()
        times: list[float] = []
        done = loop.create_future()
        timers: Deadlines[str] = Deadlines(loop, DELAY, lambda key: None)
        armed = 0
        call_at = loop.call_at

        def counting_call_at(when: float, callback, *args, **kwargs):  # type: ignore[no-untyped-def]
            nonlocal armed
            if getattr(callback, "__self__", None) is timers:
                armed += 1
            return call_at(when, callback, *args, **kwargs)

        def fire(key: str) -> None:
            times.append(loop.time())
            if len(times) < 3:
                timers.start(key)  # again, from inside the timeout
            else:
                done.set_result(None)

        timers = Deadlines(loop, DELAY, fire)
        loop.call_at = counting_call_at  # type: ignore[method-assign]
        try:
            start = loop.time()
            timers.start("t")
            await asyncio.wait_for(done, WAIT)
        finally:
            del loop.call_at  # the instance attribute goes: the class's method again
        return [t - start for t in times], armed

    times, armed = asyncio.run(scenario())
    # each firing at least a delay after the one before (less asyncio's early margin and ours)
    gaps = [b - a for a, b in zip([0.0, *times], times, strict=False)]
    assert len(times) == 3 and all(g >= DELAY - 0.002 for g in gaps), gaps
    assert armed == 3  # one loop timer at a time, never two


def test_close_cancels_everything() -> None:
    async def scenario() -> list[str]:
        loop = asyncio.get_running_loop()
        fired: list[str] = []
        timers: Deadlines[str] = Deadlines(loop, DELAY, fired.append)
        timers.start("x")
        timers.close()
        # a later timer of the loop's own, past x's deadline: x had its chance to fire
        done = loop.create_future()
        loop.call_later(DELAY * 3, done.set_result, None)
        await asyncio.wait_for(done, WAIT)
        return fired

    assert asyncio.run(scenario()) == []
