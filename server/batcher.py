"""Dynamic batching: coroutines submit faces, one worker thread runs them in batches.

The worker takes the first waiting face, then keeps collecting until it has
as many faces as its last batch had or max_wait has passed since the first,
takes what else is already queued (up to max_batch), and runs the model
function once for all of them. Results go back to each caller's event loop.

The queue is bounded twice, so overload is refused at once instead of piling
up: by count (max_queue faces) and by time (a call whose deadline the queued
work would outlast is refused, using a running estimate of seconds per face).
Faces whose deadline passed, or whose caller went away, while they waited are
dropped before model work.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Sequence

log = logging.getLogger("ferserver")
_STOP = object()
_DRAIN = object()  # wakes a worker waiting for company: none will come
PRIOR_S_PER_FACE = 0.004  # about 250 faces/s batched on 2 CPU cores; replaced by measurement after the first batch
_EWMA = 0.2  # weight of each new batch in the seconds-per-face estimate


class Overloaded(Exception):
    """Refused before queueing: the queue is full, or would outlast the caller's deadline."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


class Expired(Exception):
    """The caller's deadline passed while the face waited (dropped without model work), or is too short for its own work."""


@dataclass
class _Entry:
    item: Any
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    deadline: float | None  # time.monotonic()


class _FairQueue:
    """Entries waiting for the worker, one queue per source, taken one entry per source in turn (round-robin by face).

    Control items jump the line (_DRAIN), or wait for the entries to run out (_STOP: finish what is queued)."""

    def __init__(self):
        self._ready = threading.Condition(threading.Lock())
        self._sources: dict[Hashable, deque] = {}  # insertion order is the ring's order
        self._drain = self._stop = False

    def put(self, source: Hashable, entries: list) -> None:
        with self._ready:
            self._sources.setdefault(source, deque()).extend(entries)
            self._ready.notify()

    def drain(self) -> None:
        with self._ready:
            self._drain = True
            self._ready.notify()

    def stop(self) -> None:
        with self._ready:
            self._stop = True
            self._ready.notify()

    def standing(self, source: Hashable, n: int) -> tuple[int, int, int]:
        """(ahead, mine, sources) for n more entries from source: the entries that would run before its last (its own
        queue, and from each other source as many as n: they take turns), its own queue, and the sources waiting."""
        with self._ready:
            mine = len(self._sources.get(source, ()))
            others = sum(min(len(q), n) for s, q in self._sources.items() if s != source)
            return mine + others, mine, len(self._sources)

    def get(self, timeout: float | None) -> Any:
        """The next entry or control item; queue.Empty past timeout (None: wait for ever; 0: don't wait)."""
        with self._ready:
            end = None if timeout is None else time.monotonic() + timeout
            while not (self._sources or self._drain or self._stop):
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    raise queue.Empty
                self._ready.wait(left)
            if self._drain:
                self._drain = False
                return _DRAIN
            if not self._sources:
                return _STOP
            source = next(iter(self._sources))
            q = self._sources.pop(source)
            entry = q.popleft()
            if q:
                self._sources[source] = q  # to the back of the ring
            return entry


class Batcher:
    def __init__(self, fn: Callable[[list[Any]], list[Any]], max_batch: int = 32, max_wait_s: float = 0.005, on_batch: Callable[[int], None] | None = None,
                 max_queue: int = 4096, metrics: Any = None):
        if max_batch < 1:  # 0 means auto only to ferserver's config (config.max_batch resolves it); here it would mean batches of one
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self._fn, self._max_batch, self._max_wait = fn, max_batch, max_wait_s
        self._last_batch = max_batch  # start out batching
        self._draining = False  # set by drain(): run what is queued without waiting for company
        self._on_batch, self._max_queue, self._metrics = on_batch, max_queue, metrics
        self._queue = _FairQueue()
        self._lock = threading.Lock()
        self._queued = 0  # faces submitted and not yet taken by the worker
        self._running = 0  # faces in the batch the worker is running now
        self.s_per_face = PRIOR_S_PER_FACE
        self._thread = threading.Thread(target=self._work, name="fercodec-batcher", daemon=True)
        self._thread.start()

    async def submit(self, items: Sequence[Any], deadline: float | None = None, source: Hashable = None) -> list[Any]:
        """Results (or the exceptions the model function returned, or Expired) in the order of items.

        deadline is a time.monotonic() value (None: no deadline). source names who sent them (a stream's messages
        share one; None: a source of their own): sources take turns. Raises Overloaded, queueing nothing, when the
        items do not fit in the queue or the work ahead of them would outlast the deadline; Expired when the deadline
        is too short even for the items' own work.

        A full queue refuses only a source holding its share of it or more (max_queue over the sources waiting), so
        a few heavy sources cannot lock out a light one: the queue holds at most about twice max_queue.
        """
        loop = asyncio.get_running_loop()
        n = len(items)
        source = object() if source is None else source
        with self._lock:
            ahead, mine, sources = self._queue.standing(source, n)
            ahead += self._running
            if self._queued + n > self._max_queue and (n > self._max_queue or mine + n > self._max_queue // (sources + 1)):
                self._shed("queue_full", n)
                if n > self._max_queue:
                    raise Overloaded(f"request has {n} faces; this server queues at most {self._max_queue}", "queue_full")
                raise Overloaded(f"server busy: {self._queued} faces queued; with this request's {n} that is over the {self._max_queue} it queues; retry later", "queue_full")
            if deadline is not None:
                left, work = deadline - time.monotonic(), self._max_wait + (ahead + n) * self.s_per_face
                own = n * self.s_per_face
                if own > left:  # not a busy server: no queue would let this finish in time
                    self._shed("deadline", n)
                    raise Expired(f"deadline in {1000 * max(left, 0):.0f} ms is shorter than this request's own work (about {1000 * own:.0f} ms)")
                if work > left:
                    self._shed("deadline", n)
                    raise Overloaded(f"server busy: {ahead} faces queued, about {1000 * work:.0f} ms of work with this request's {n}, "
                                     f"deadline in {1000 * max(left, 0):.0f} ms", "deadline")
            self._queued += n
            self._gauge()
            futures = [loop.create_future() for _ in items]
            self._queue.put(source, [_Entry(item, fut, loop, deadline) for item, fut in zip(items, futures)])
        return list(await asyncio.gather(*futures))

    def drain(self) -> None:
        """Stop waiting for company: the server has stopped taking calls (SIGTERM), so a batch waiting to fill would
        only hold its callers until max_wait. Faces still submitted run at once."""
        self._queue.drain()

    def close(self) -> None:
        """Finish what is queued, then stop the worker."""
        self._queue.stop()
        self._thread.join()

    def _gauge(self) -> None:
        if self._metrics is not None:
            self._metrics.queued_faces.set(self._queued)

    def _shed(self, reason: str, n: int) -> None:
        if self._metrics is not None:
            self._metrics.faces_shed.labels(reason).inc(n)

    def _take(self, timeout: float | None) -> Any:
        """The next entry (queue.Empty past timeout; 0: don't wait), counted out of the queue at once."""
        entry = self._queue.get(timeout)
        if entry is _DRAIN:
            self._draining = True
            return self._take(0 if timeout is not None else None)
        if entry is not _STOP:
            with self._lock:
                self._queued -= 1
                self._running += 1
                self._gauge()
        return entry

    def _collect(self) -> tuple[list[_Entry], bool]:
        first = self._take(None)
        if first is _STOP:
            return [], True
        # Callers that were answered together come back together: wait for company (at most max_wait) only until the
        # batch is as large as the last one, then take only what is already queued. With 8 calls in flight a batch runs
        # once the 8th face is in, instead of waiting out max_wait for a 9th that no caller will send; after a batch of
        # one, a lone face runs at once. A caller that went away costs one batch max_wait, then the count follows.
        target, until = self._last_batch, time.monotonic() + self._max_wait
        batch = [first]
        while len(batch) < self._max_batch:
            try:
                entry = self._take(until - time.monotonic() if len(batch) < target and not self._draining else 0)
            except queue.Empty:
                break
            if entry is _STOP:  # it stays put: the worker stops after this batch
                break
            batch.append(entry)
        self._last_batch = len(batch)
        return batch, False

    def _drop_dead(self, batch: list[_Entry]) -> list[_Entry]:
        """The entries still worth model work: not cancelled by their caller, deadline not passed."""
        now, live, expired = time.monotonic(), [], []
        for e in batch:
            if e.future.cancelled():  # a read from another thread: at worst stale, and then the face is merely run
                self._shed("cancelled", 1)
            elif e.deadline is not None and e.deadline <= now:
                self._shed("expired", 1)
                expired.append((e, Expired("deadline passed while the face waited for the model")))
            else:
                live.append(e)
        _answer(expired)
        return live

    def _work(self) -> None:
        while True:
            batch, stop = self._collect()
            if stop:
                return
            live = self._drop_dead(batch)
            if live:
                if self._on_batch:
                    self._on_batch(len(live))
                t0 = time.perf_counter()
                try:
                    results = self._fn([e.item for e in live])
                except Exception as e:  # a bug in model code must fail these faces, not kill the worker
                    log.exception("model batch failed")
                    results = [e] * len(live)
                else:
                    # Small batches cost more per face, but only under load (full batches) does the estimate refuse anything.
                    self.s_per_face += _EWMA * ((time.perf_counter() - t0) / len(live) - self.s_per_face)
                _answer([(e, res) for e, res in zip(live, results)])
            with self._lock:
                self._running = 0


def _answer(answers: list[tuple[_Entry, Any]]) -> None:
    """Hand results to their callers' event loops: one wake-up per loop, not one per face (a batch of 32 woke the
    server's loop 32 times)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future, Any]]] = {}
    for e, res in answers:
        by_loop.setdefault(e.loop, []).append((e.future, res))
    for loop, pairs in by_loop.items():
        loop.call_soon_threadsafe(_resolve, pairs)


def _resolve(pairs: list[tuple[asyncio.Future, Any]]) -> None:
    for fut, res in pairs:
        if not fut.done():  # the caller may have been cancelled meanwhile
            fut.set_result(res)
