"""Entropy decoding in worker processes.

Why: the range decoder is Python-level work per coding step that holds the GIL,
0.7 ms per image-codec face on one core when this was written (about 0.4 in a batch
since decode_batch decodes a batch's faces together). On a GPU the networks take about
0.01 ms per face in a batch of 256, so one decoding thread bounded the engine at
1,382 faces/s (docs/gpu). Worker processes decode slices of a batch at once.
Workers are spawned (never forked: the server holds gRPC and CUDA threads) and
import ferwire only, so they start in well under a second.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import os

import numpy as np

from ferwire.bitstream import BitstreamError, decode_many

_TABLES: dict = {}  # in each worker: model tag -> EntropyTables


def auto_workers(device: str, requested: int) -> int:
    """--decode-workers -1 (auto): on cuda one per CPU core but the one the model worker uses, at most 16; on cpu none,
    since torch already spreads the classifier over every core and decoding in-thread costs no transfers."""
    if requested >= 0:
        return requested
    return max(0, min(16, (os.cpu_count() or 1) - 1)) if device.startswith("cuda") else 0


def _load(paths: dict[int, str]) -> None:
    from ferwire.entropy import EntropyTables

    for tag, path in paths.items():
        _TABLES[tag] = EntropyTables.load(path).prepare()


def decode_batch(items: list[tuple[int, bytes]], tables: dict) -> list[tuple[int, np.ndarray] | BitstreamError]:
    """(model tag, bitstream) per face -> (quality, symbols) or the decoder's refusal, in order.

    Each model's faces are decoded together (ferwire.bitstream.decode_many). scripts/bench.py at 32 in flight, before and
    after, back to back on one VM: the entropy_decode stage 1.10 -> 0.66 ms per image-codec face, 0.50 -> 0.22 per expression face."""
    out: list = [None] * len(items)
    by_tag: dict[int, list[int]] = {}
    for i, (tag, _) in enumerate(items):
        by_tag.setdefault(tag, []).append(i)
    for tag, idx in by_tag.items():
        for i, r in zip(idx, decode_many([items[i][1] for i in idx], tables[tag], tag)):
            out[i] = r if isinstance(r, BitstreamError) else (r[0].quality, r[1])
    return out


def _decode_slice(items: list[tuple[int, bytes]]):
    """-> (per item: its quality, or (message, kind) for a refusal; the decoded symbols stacked, in item order).

    One array per slice: pickling a single array is a copy, pickling hundreds of small ones is not."""
    marks, symbols = [], []
    for r in decode_batch(items, _TABLES):
        if isinstance(r, BitstreamError):  # sent back as (message, kind): the exception's own pickling would drop kind
            marks.append((str(r), r.kind))
        else:
            marks.append(r[0])
            symbols.append(r[1])
    return marks, np.stack(symbols) if symbols and len({z.shape for z in symbols}) == 1 else symbols  # models differ in shape: a list


class DecodePool:
    """`decode([(model tag, bitstream), ...])` -> per item (quality, symbols) or a BitstreamError, in order."""

    def __init__(self, table_paths: dict[int, str], workers: int):
        self.workers, self._paths = workers, table_paths
        self._pool = self._start()

    def _start(self) -> cf.ProcessPoolExecutor:
        pool = cf.ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn"), initializer=_load, initargs=(self._paths,))
        # Start the workers now (load tables, build plans) so that the first batch does not pay for it.
        list(pool.map(_decode_slice, [[] for _ in range(self.workers)]))
        return pool

    def decode(self, items: list[tuple[int, bytes]]) -> list[tuple[int, np.ndarray] | BitstreamError]:
        """A worker that dies (killed, out of memory, a crash in the range coder) takes the pool down with it:
        start a new pool and retry the batch once; if that fails too, refuse the batch's faces, and serve on."""
        for attempt in range(2):
            try:
                return self._decode(items)
            except cf.process.BrokenProcessPool:
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = self._start()
        return [BitstreamError("a decode worker died twice on the batch holding this face; send it again alone", "invalid") for _ in items]

    def _decode(self, items):
        n = len(items)
        size = max(1, -(-n // self.workers))
        slices = [items[i : i + size] for i in range(0, n, size)]
        out: list = []
        for marks, symbols in self._pool.map(_decode_slice, slices):
            k = 0
            for m in marks:
                if isinstance(m, tuple):
                    out.append(BitstreamError(*m))
                else:
                    out.append((m, symbols[k]))
                    k += 1
        return out

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
