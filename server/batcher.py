"""Dynamic batching: coroutines submit faces, one worker thread runs them in batches.

The worker takes the first waiting face, then keeps collecting until it has
max_batch faces or max_wait has passed since the first, and runs the model
function once for all of them. Results go back to each caller's event loop.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from typing import Any, Callable, Sequence

log = logging.getLogger("ferserver")
_STOP = object()


class Batcher:
    def __init__(self, fn: Callable[[list[Any]], list[Any]], max_batch: int = 32, max_wait_s: float = 0.005, on_batch: Callable[[int], None] | None = None):
        self._fn, self._max_batch, self._max_wait = fn, max_batch, max_wait_s
        self._on_batch = on_batch
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="fercodec-batcher", daemon=True)
        self._thread.start()

    async def submit(self, items: Sequence[Any]) -> list[Any]:
        """Results (or the exceptions the model function returned) in the order of items."""
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in items]
        for item, fut in zip(items, futures):
            self._queue.put((item, fut, loop))
        return list(await asyncio.gather(*futures))

    def close(self) -> None:
        """Finish what is queued, then stop the worker."""
        self._queue.put(_STOP)
        self._thread.join()

    def _collect(self) -> tuple[list, bool]:
        first = self._queue.get()
        if first is _STOP:
            return [], True
        batch, deadline = [first], time.monotonic() + self._max_wait
        while len(batch) < self._max_batch:
            remaining = deadline - time.monotonic()
            try:
                item = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                self._queue.put(_STOP)  # stop after this batch
                break
            batch.append(item)
        return batch, False

    def _work(self) -> None:
        while True:
            batch, stop = self._collect()
            if stop:
                return
            if self._on_batch:
                self._on_batch(len(batch))
            try:
                results = self._fn([item for item, _, _ in batch])
            except Exception as e:  # a bug in model code must fail these faces, not kill the worker
                log.exception("model batch failed")
                results = [e] * len(batch)
            for (_, fut, loop), res in zip(batch, results):
                loop.call_soon_threadsafe(_resolve, fut, res)


def _resolve(fut: asyncio.Future, res: Any) -> None:
    if not fut.done():  # the caller may have been cancelled meanwhile
        fut.set_result(res)
