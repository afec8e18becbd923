"""Batcher: concurrent submits share batches, order is kept, failures stay per item."""

from __future__ import annotations

import asyncio
import re
import threading
import time

import pytest

from ferserver.batcher import PRIOR_S_PER_FACE, Batcher, Expired, Overloaded


def _run(coro):
    return asyncio.run(coro)


def test_concurrent_faces_are_batched_up_to_max_batch_in_order():
    sizes, worker_threads = [], set()

    def fn(items):
        sizes.append(len(items))
        worker_threads.add(threading.get_ident())
        return [i * 10 for i in items]

    b = Batcher(fn, max_batch=8, max_wait_s=0.05)

    async def main():
        return await asyncio.gather(*(b.submit([3 * k, 3 * k + 1, 3 * k + 2]) for k in range(10)))

    out = _run(main())
    b.close()
    assert out == [[30 * k, 30 * k + 10, 30 * k + 20] for k in range(10)]
    assert max(sizes) == 8 and sum(sizes) == 30 and len(sizes) < 10
    assert threading.get_ident() not in worker_threads  # model work is off the event loop's thread


def test_a_max_batch_below_one_is_refused():
    """0 is ferserver's 'auto' flag value; a Batcher given it unresolved would silently run batches of one."""
    with pytest.raises(ValueError, match="max_batch"):
        Batcher(lambda items: items, max_batch=0)


def test_a_lone_face_waits_at_most_max_wait():
    b = Batcher(lambda items: items, max_batch=32, max_wait_s=0.02)

    async def main():
        t = time.perf_counter()
        r = await b.submit(["x"])
        return r, time.perf_counter() - t

    r, dt = _run(main())
    b.close()
    assert r == ["x"] and dt < 0.5


def test_a_crash_in_model_code_fails_that_batch_and_the_worker_lives_on():
    calls = []

    def fn(items):
        calls.append(items)
        if "boom" in items:
            raise RuntimeError("model bug")
        return items

    b = Batcher(fn, max_batch=1, max_wait_s=0)

    async def main():
        bad = await b.submit(["boom"])
        good = await b.submit(["ok"])
        return bad, good

    bad, good = _run(main())
    b.close()
    assert isinstance(bad[0], RuntimeError) and good == ["ok"]


def test_close_finishes_queued_work():
    done = []
    b = Batcher(lambda items: [done.append(i) or i for i in items], max_batch=4, max_wait_s=0.01)

    async def main():
        task = asyncio.ensure_future(b.submit(list(range(10))))
        await asyncio.sleep(0)
        return await task

    assert _run(main()) == list(range(10))
    b.close()
    assert sorted(done) == list(range(10))


def test_drain_runs_a_waiting_batch_at_once_and_later_faces_without_waiting():
    """SIGTERM: no call can join a batch waiting to fill, so drain() ends the wait (10 s here) instead of holding callers."""
    b = Batcher(lambda items: items, max_batch=32, max_wait_s=10.0)  # starts out waiting for 32 faces

    async def main():
        t = time.perf_counter()
        waiting = asyncio.ensure_future(b.submit(["a", "b"]))
        await asyncio.sleep(0.2)
        assert not waiting.done()  # held for company
        b.drain()
        first = await asyncio.wait_for(waiting, 5)
        second = await asyncio.wait_for(b.submit(["c"]), 5)  # after a batch of 2 it would wait for a second face
        third = await asyncio.wait_for(asyncio.gather(b.submit(["d"]), b.submit(["e"])), 5)
        return first, second, third, time.perf_counter() - t

    first, second, third, dt = _run(main())
    b.close()
    assert first == ["a", "b"] and second == ["c"] and third == [["d"], ["e"]] and dt < 3


def _gated(seen: list):
    """A model function that holds its first batch until the gate opens, so tests can fill the queue behind it."""
    gate = threading.Event()

    def fn(items):
        gate.wait(10)
        seen.extend(items)
        return [f"r{i}" for i in items]

    return fn, gate


def _shed(metrics, reason: str) -> float:
    return metrics.registry.get_sample_value("fercodec_faces_shed_total", {"reason": reason}) or 0.0


async def _until(cond, timeout: float = 5.0) -> None:
    t = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < t, "condition not reached"
        await asyncio.sleep(0.005)


def test_a_full_queue_refuses_at_once_and_the_gauge_is_exact():
    from ferserver.metrics import Metrics

    m, seen = Metrics(), []
    fn, gate = _gated(seen)
    b = Batcher(fn, max_batch=2, max_wait_s=0, max_queue=10, metrics=m)
    queued = lambda: m.registry.get_sample_value("fercodec_queued_faces")  # noqa: E731

    async def main():
        first = asyncio.ensure_future(b.submit(["a", "b"]))
        await _until(lambda: queued() == 0 and b._running == 2)  # the worker holds a and b
        held = [asyncio.ensure_future(b.submit([f"q{k}", f"q{k}x"], source=f"s{k}")) for k in range(5)]
        await asyncio.sleep(0)
        assert queued() == 10
        t = time.perf_counter()
        with pytest.raises(Overloaded) as e:  # s0 holds 2 of the 10: its share of a full queue of 5 sources
            await b.submit(["late"], source="s0")
        assert time.perf_counter() - t < 0.05 and e.value.reason == "queue_full"
        assert str(e.value) == "server busy: 10 faces queued; with this request's 1 that is over the 10 it queues; retry later"
        with pytest.raises(Overloaded, match="request has 11 faces; this server queues at most 10"):
            await b.submit(list(range(11)))
        assert queued() == 10 and _shed(m, "queue_full") == 12
        light = asyncio.ensure_future(b.submit(["light"]))  # a source holding nothing is under its share: queued
        await asyncio.sleep(0)
        assert queued() == 11
        gate.set()
        return await first, await asyncio.gather(*held), await light

    first, held, light = _run(main())
    b.close()
    assert first == ["ra", "rb"] and held[4] == ["rq4", "rq4x"] and light == ["rlight"]
    assert "late" not in seen and len(seen) == 13 and queued() == 0
    assert seen.index("light") < seen.index("q0x")  # one face of each source in turn: before the sources' second faces


def test_the_estimate_learns_from_batches_and_refuses_work_that_would_miss_the_deadline():
    from ferserver.metrics import Metrics

    m = Metrics()
    slow = threading.Event()

    def fn(items):  # 10 ms a face, and held while `slow` is clear after the warm-up
        slow.wait(10)
        time.sleep(0.01 * len(items))
        return items

    b = Batcher(fn, max_batch=4, max_wait_s=0, metrics=m)
    assert b.s_per_face == PRIOR_S_PER_FACE

    async def main():
        slow.set()
        for _ in range(20):
            await b.submit([0, 1, 2, 3])
        learned = b.s_per_face
        slow.clear()
        # One stream's 25 messages: 100 faces, about 1 s of work, ahead of its next message but not of another caller's.
        ahead = [asyncio.ensure_future(b.submit(list(range(4)), source="stream")) for _ in range(25)]
        await asyncio.sleep(0)
        with pytest.raises(Overloaded) as e:
            await b.submit(["x"], deadline=time.monotonic() + 0.3, source="stream")
        admitted = asyncio.ensure_future(b.submit(["y"], deadline=time.monotonic() + 60))
        other = asyncio.ensure_future(b.submit(["z"], deadline=time.monotonic() + 0.3))  # waits for one face of the stream's
        slow.set()
        await asyncio.gather(*ahead)
        return learned, e.value, await admitted, await other

    learned, refusal, admitted, other = _run(main())
    b.close()
    assert 0.009 < learned < 0.02, learned  # 10 ms a face plus sleep overshoot on a busy machine
    assert refusal.reason == "deadline" and _shed(m, "deadline") == 1
    assert re.fullmatch(r"server busy: 10\d faces queued, about \d+ ms of work with this request's 1, deadline in \d+ ms", str(refusal)), str(refusal)
    assert admitted == ["y"] and other == ["z"]


def test_faces_whose_deadline_passed_or_whose_caller_left_are_dropped_before_model_work():
    from ferserver.metrics import Metrics

    m, seen = Metrics(), []
    fn, gate = _gated(seen)
    b = Batcher(fn, max_batch=8, max_wait_s=0, metrics=m)

    async def main():
        first = asyncio.ensure_future(b.submit(["first"]))
        await _until(lambda: b._running == 1)
        doomed = asyncio.ensure_future(b.submit(["doomed1", "doomed2"], deadline=time.monotonic() + 0.2))
        gone = asyncio.ensure_future(b.submit(["gone"]))
        alive = asyncio.ensure_future(b.submit(["alive"], deadline=time.monotonic() + 60))
        await asyncio.sleep(0.3)  # doomed's deadline passes while the worker is held
        gone.cancel()
        gate.set()
        return await first, await doomed, await alive

    first, doomed, alive = _run(main())
    b.close()
    assert first == ["rfirst"] and alive == ["ralive"]
    assert all(isinstance(r, Expired) for r in doomed)
    assert seen == ["first", "alive"]  # no model work for the expired or the abandoned faces
    assert _shed(m, "expired") == 2 and _shed(m, "cancelled") == 1
    assert m.registry.get_sample_value("fercodec_queued_faces") == 0


def test_a_deadline_too_short_for_the_faces_own_work_is_expired_not_busy():
    """An idle server with a deadline shorter than one face's work: DEADLINE_EXCEEDED material, not 'server busy'."""
    b = Batcher(lambda items: items, max_batch=4, max_wait_s=0.0)
    try:
        with pytest.raises(Expired, match="shorter than this request's own work"):
            asyncio.run(b.submit([1], time.monotonic() + PRIOR_S_PER_FACE / 10))
        assert asyncio.run(b.submit([1], time.monotonic() + 10.0)) == [1]
    finally:
        b.close()


def test_callers_answered_together_are_batched_again_without_waiting_out_max_wait():
    """Four callers in a loop: after the first batch, each round's batch runs once the fourth face is in, not after max_wait
    (one second here; the rounds would take at least five)."""
    sizes = []
    b = Batcher(lambda items: sizes.append(len(items)) or items, max_batch=32, max_wait_s=1.0)

    async def caller(k):
        for r in range(6):
            assert await b.submit([(k, r)]) == [(k, r)]

    async def main():
        t = time.perf_counter()
        await asyncio.gather(*(caller(k) for k in range(4)))
        return time.perf_counter() - t

    dt = _run(main())
    b.close()
    assert sizes == [4] * 6
    assert dt < 3.0, f"six rounds took {dt:.1f} s: batches waited for faces no caller would send"


def test_a_caller_that_went_away_costs_one_wait_then_the_batch_follows_the_callers():
    sizes = []
    b = Batcher(lambda items: sizes.append(len(items)) or items, max_batch=32, max_wait_s=0.3)

    async def caller(k, rounds):
        for r in range(rounds):
            await b.submit([(k, r)])

    async def main():
        t = time.perf_counter()
        await asyncio.gather(*(caller(k, 6 if k else 2) for k in range(3)))  # caller 0 leaves after two rounds
        return time.perf_counter() - t

    dt = _run(main())
    b.close()
    assert sizes == [3, 3, 2, 2, 2, 2]
    assert dt < 0.3 * 2 + 0.9  # the first batch and the one after caller 0 left wait; the rest do not
