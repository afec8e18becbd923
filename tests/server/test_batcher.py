"""Batcher: concurrent submits share batches, order is kept, failures stay per item."""

from __future__ import annotations

import asyncio
import threading
import time

from ferserver.batcher import Batcher


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
