"""Context-adaptive entropy tables: fixed integer pmfs per quality, channel, position and activity.

Why: the training-time entropy model (one learned density per channel) ignores
two things every aligned face shares: statistics differ by position in the
6x6 latent (cheeks and background vs eyes and mouth), and a latent's spread
follows the magnitude of the latents already coded at the same position (what
a hyperprior learns). Both are captured here *without floating point on the
decoding path*: the context of a symbol is an integer computed from integer
symbols already decoded, and every table is a fixed integer pmf counted on the
training set's latents at export time. So decoding stays exact whatever the
threads, batch or device on either end (../shared/NOTES.md), and with the
2 header bytes that format 2 drops, faces cost about 5 % fewer bytes than with
the learned per-channel tables (docs/bitstream.md gives the measurement).

Symbols are not quantized uniformly over the face: position p of the latent
grid is multiplied by scale[p] (geometric mean 1) before rounding, so its
quantization step 1/scale[p] is finer where the expression classifier looks
(eyes, brows, mouth) and coarser at the edges: LFIC's "bits where the
expression is" as region-adaptive quantization (ferexport derives scale from
the shipped classifier's saliency).

Numpy only: the edge client imports this.

Per quality q the channels are coded in a fixed order (largest symbol spread
first), GROUP channels per range-coder call (consecutive constant groups share one: ConstantRun).
For channel c at position p the context is

    activity[p] = sum over the groups coded before c's of min(|z|, ACTIVITY_CAP)
                  (an escaped symbol counts ACTIVITY_CAP)
    k           = number of edges[q, c] <= activity[p]          (0..CONTEXTS-1)

and the symbol z - lo[q, c] is coded with the table (p, k) of channel c: width[q, c] + 1
bins, the last one the escape for values outside lo .. lo + width - 1. The
tables of (q, c) are stored as one ragged block [positions, CONTEXTS, width + 1]
of a flat uint16 array, at pmf_start[q, c]: widths run from 2 to over 100 bins,
so a dense array would be 20 times larger to load.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

CONTEXTS = 4  # activity buckets per channel (quartiles on the training set)
GROUP = 8  # channels per coding step: 12 steps per face instead of 96 (decoding is a sequence of steps)
ACTIVITY_CAP = 15  # one symbol's contribution to its neighbours' context
ESCAPE_LIMIT = 1 << 20  # symbols are clipped to +-this; 22 bypass bits at most
PMF_TOTAL = 1 << 16  # every table sums to this; every bin >= 1, so uint16 holds it
SUPPORT_TAIL = 1e-5  # each side: rarer values are escaped instead of widening the table
PRIOR_COUNTS = 8.0  # pseudo-counts per context, spread like the position's pooled histogram


class EntropyTables:
    """Everything both ends need to map latents to symbols and code them (tables.npz); nothing else."""

    def __init__(self, arrays: dict[str, np.ndarray]):
        self.gain = np.asarray(arrays["gain"], np.float32)  # [Q, M]
        self.medians = np.asarray(arrays["medians"], np.float32)  # [Q, M], gain domain
        self.scale = np.asarray(arrays["scale"], np.float32)  # [h, w] per-position scale before rounding (step 1/scale)
        self.order = np.asarray(arrays["order"], np.int64)  # [Q, M] channel coding order
        self.lo = np.asarray(arrays["lo"], np.int64)  # [Q, M] lowest symbol with a regular bin
        self.width = np.asarray(arrays["width"], np.int64)  # [Q, M] regular bins; bin `width` escapes
        self.edges = np.asarray(arrays["edges"], np.int64)  # [Q, M, CONTEXTS - 1]
        self.pmf = np.asarray(arrays["pmf"], np.uint16)  # flat, ragged: see pmf_start
        self.pmf_start = np.asarray(arrays["pmf_start"], np.int64)  # [Q, M]
        self.latent_shape = tuple(int(v) for v in arrays["latent_shape"])  # (M, h, w)
        self.num_qualities, self.channels = self.gain.shape
        self.positions = self.latent_shape[1] * self.latent_shape[2]
        self._plans: dict[int, list[GroupPlan]] = {}
        self._steps: dict[int, list[GroupPlan | ConstantRun]] = {}
        self._row_base = np.arange(self.positions) * CONTEXTS  # row of context 0 at each position

    @classmethod
    def load(cls, path: str | Path) -> "EntropyTables":
        """ValueError naming the file when it is not a model's tables (a copy cut short, another file in its place)."""
        try:
            with np.load(path) as z:
                return cls({k: z[k] for k in z.files})
        except FileNotFoundError:
            raise
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:  # a file cut short: BadZipFile, an Exception of its own
            raise ValueError(f"{path} is not a model's entropy tables ({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''})") from None

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "gain": self.gain, "medians": self.medians, "scale": self.scale, "order": self.order.astype(np.int16),
            "lo": self.lo.astype(np.int32), "width": self.width.astype(np.int32), "edges": self.edges.astype(np.int32),
            "pmf": self.pmf, "pmf_start": self.pmf_start, "latent_shape": np.asarray(self.latent_shape, np.int32),
        }

    def save(self, path: str | Path) -> None:
        np.savez_compressed(path, **self.arrays())

    def symbols(self, y: np.ndarray, q: int) -> np.ndarray:
        """Analysis output [..., M, h, w] -> integer symbols (int32), centred on the learned medians."""
        z = np.rint((y * self.gain[q][:, None, None] - self.medians[q][:, None, None]) * self.scale)
        return np.clip(z, -ESCAPE_LIMIT, ESCAPE_LIMIT).astype(np.int32)

    def dequantize(self, z: np.ndarray, q: int) -> np.ndarray:
        """Symbols [..., M, h, w] -> latent in the gain domain (what synthesis takes)."""
        return z.astype(np.float32) / self.scale + self.medians[q][:, None, None]

    def block(self, q: int, c: int) -> np.ndarray:
        """Every table of channel c at quality q: [positions, CONTEXTS, width + 1] (a view)."""
        bins = int(self.width[q, c]) + 1
        start = int(self.pmf_start[q, c])
        return self.pmf[start : start + self.positions * CONTEXTS * bins].reshape(self.positions, CONTEXTS, bins)

    def plan(self, q: int) -> list["GroupPlan"]:
        """The channel groups of quality q in coding order, with what coding each needs precomputed (built once).

        No group is coded before the first, so its activity is zero for every face and its rows are the same for every
        face: kept in the plan (start_rows) and given once, not gathered per face. It is the widest group (165 bins at
        q5, 328 at q7): 380 kB a face at q5."""
        if q not in self._plans:
            order = [int(c) for c in self.order[q]]
            plans = [self._group_plan(q, order[i : i + GROUP]) for i in range(0, len(order), GROUP)]
            plans[0] = replace(plans[0], start_rows=self.context_rows(plans[0], np.zeros(self.positions, np.int64)))
            self._plans[q] = plans
        return self._plans[q]

    def prepare(self) -> "EntropyTables":
        """Build every quality's plan and steps now (a server, before its first request), not when first used."""
        for q in range(self.num_qualities):
            self.steps(q)
        return self

    def steps(self, q: int) -> list["GroupPlan | ConstantRun"]:
        """plan(q) with each stretch of two or more consecutive constant groups (every channel one regular symbol)
        merged into one ConstantRun: the range-coder calls a face needs while none of the run's symbols escapes."""
        if q not in self._steps:
            steps: list = []
            run: list[GroupPlan] = []
            for g in [*self.plan(q), None]:
                if g is not None and g.constant:
                    run.append(g)
                    continue
                steps += [self._constant_run(run)] if len(run) > 1 else run
                run = []
                if g is not None:
                    steps.append(g)
            self._steps[q] = steps
        return self._steps[q]

    def _constant_run(self, groups: list["GroupPlan"]) -> "ConstantRun":
        adds = np.array([int(g.contribution[:, 0].sum()) for g in groups])
        before = np.cumsum(adds) - adds  # activity the run's groups before each add at every position, none escaping
        last = self.channels * ACTIVITY_CAP
        # Each group's contexts as a function of the activity at the start of the run: one table lookup for the whole run.
        context = np.concatenate([g.context[:, np.minimum(np.arange(last + 1) + b, last)] for g, b in zip(groups, before)])
        merged = GroupPlan(np.concatenate([g.channels for g in groups]), np.concatenate([g.lo for g in groups]),
                           np.concatenate([g.width for g in groups]), context, np.concatenate([g.rows for g in groups]),
                           np.concatenate([g.contribution for g in groups]))
        return ConstantRun(tuple(groups), merged, int(adds.sum()))

    def _group_plan(self, q: int, channels: list[int]) -> "GroupPlan":
        lo, width = self.lo[q, channels], self.width[q, channels]
        bins = int(width.max()) + 1
        # Narrower channels' rows are zero-padded to the group's width; constriction
        # gives those bins its smallest probability, and no encoder ever codes them.
        rows = np.zeros((len(channels), self.positions * CONTEXTS, bins))
        contribution = np.full((len(channels), bins), ACTIVITY_CAP, np.int64)
        for i, c in enumerate(channels):
            rows[i, :, : width[i] + 1] = self.block(q, c).reshape(self.positions * CONTEXTS, -1)
            contribution[i, : width[i]] = np.minimum(np.abs(np.arange(lo[i], lo[i] + width[i])), ACTIVITY_CAP)
        # Context of every reachable activity (at most ACTIVITY_CAP per symbol of the other channels at a position):
        # one lookup per symbol instead of comparing it with each edge.
        reach = np.arange(self.channels * ACTIVITY_CAP + 1)
        context = (reach[None, :, None] >= self.edges[q, channels][:, None, :]).sum(-1).astype(np.uint8)
        return GroupPlan(np.array(channels), lo[:, None], width[:, None], context, rows, contribution)

    def context_rows(self, plan: "GroupPlan", activity: np.ndarray) -> np.ndarray:
        """One pmf row per symbol of the group, [channels * positions, bins], in the contexts `activity` [positions] selects;
        for activity [faces, positions], the rows of every face at once: [faces, channels * positions, bins]. The first
        group's rows are the same for every face: [channels * positions, bins] whatever activity's shape."""
        if plan.start_rows is not None:
            return plan.start_rows
        g, rows, bins = len(plan.channels), plan.rows.shape[1], plan.rows.shape[2]
        ch = np.arange(g)[:, None]
        k = plan.context[ch, activity[..., None, :]]
        # One take along the flattened rows, not a gather over two index arrays: a third less of decode_many's time here.
        flat = (ch * rows + self._row_base) + k
        return plan.rows.reshape(g * rows, bins).take(flat.reshape(-1), axis=0).reshape(*activity.shape[:-1], -1, bins)

    @classmethod
    def fit(cls, latents: np.ndarray, gain: np.ndarray, medians: np.ndarray, scale: np.ndarray | None = None,
            progress: Callable[[Iterable], Iterable] = iter) -> "EntropyTables":
        """Count the tables on analysis outputs [N, M, h, w] (the training set's), one quality at a time.

        scale: per-position scale before rounding [h, w] (default 1: uniform quantization)."""
        n, m, h, w = latents.shape
        q_count, positions = gain.shape[0], h * w
        tables = cls({
            "gain": gain, "medians": medians, "scale": np.ones((h, w)) if scale is None else scale, "order": np.zeros((q_count, m)), "lo": np.zeros((q_count, m)),
            "width": np.zeros((q_count, m)), "edges": np.zeros((q_count, m, CONTEXTS - 1)), "pmf": np.zeros(0), "pmf_start": np.zeros((q_count, m)),
            "latent_shape": (m, h, w),
        })
        pmfs = {}
        for q in progress(range(q_count)):
            z = tables.symbols(latents, q).reshape(n, m, positions)
            tables.order[q] = np.argsort(-z.std(axis=(0, 2)), kind="stable")
            activity = np.zeros((n, positions), np.int64)
            for r, c in enumerate(tables.order[q]):
                if r % GROUP == 0:  # a group's contexts count the groups before it
                    edges = np.quantile(activity, np.arange(1, CONTEXTS) / CONTEXTS, method="nearest").astype(np.int64)
                    k = np.searchsorted(edges, activity, side="right")
                    activity = activity.copy()
                zc = z[:, c].astype(np.int64)
                lo, hi = (int(v) for v in np.quantile(zc, [SUPPORT_TAIL, 1 - SUPPORT_TAIL], method="nearest"))
                width = hi - lo + 1
                s = zc - lo
                escaped = (s < 0) | (s >= width)
                s = np.where(escaped, width, s)
                flat = (np.arange(positions)[None, :] * CONTEXTS + k) * (width + 1) + s
                counts = np.bincount(flat.ravel(), minlength=positions * CONTEXTS * (width + 1)).reshape(positions, CONTEXTS, width + 1)
                pooled = counts.sum(1, keepdims=True) + 0.5
                smoothed = counts + PRIOR_COUNTS * pooled / pooled.sum(-1, keepdims=True)
                pmfs[q, c] = _integer_pmf(smoothed)
                tables.lo[q, c], tables.width[q, c], tables.edges[q, c] = lo, width, edges
                activity += np.where(escaped, ACTIVITY_CAP, np.minimum(np.abs(zc), ACTIVITY_CAP))
        blocks = [pmfs[q, c].ravel() for q in range(q_count) for c in range(m)]
        tables.pmf_start = np.cumsum([0] + [len(b) for b in blocks[:-1]]).reshape(q_count, m)
        tables.pmf = np.concatenate(blocks)
        return tables


@dataclass(frozen=True)
class GroupPlan:
    """One coding step at one quality: GROUP channels in one range-coder call (EntropyTables.plan)."""

    channels: np.ndarray  # [g]
    lo: np.ndarray  # [g, 1]
    width: np.ndarray  # [g, 1] regular bins; symbol `width` is the escape
    context: np.ndarray  # uint8 [g, channels * ACTIVITY_CAP + 1]: activity -> context (how many of the channel's edges it reaches)
    rows: np.ndarray  # float64 [g, positions * CONTEXTS, bins]: row p * CONTEXTS + k, zero-padded
    contribution: np.ndarray  # [g, bins] coded symbol (z - lo, or the escape) -> its share of the activity
    start_rows: np.ndarray | None = None  # the first group's rows, the same for every face (EntropyTables.plan)

    @property
    def constant(self) -> bool:
        """Every channel has one regular symbol (lo): unless one escapes, the group's symbols are known before decoding."""
        return bool((self.width == 1).all())


@dataclass(frozen=True)
class ConstantRun:
    """Consecutive constant groups coded in one range-coder call (EntropyTables.steps).

    Why: at every quality of the shipped image codec the last 8 or 9 of its 12 groups are constant (64-72 of its 96
    channels carry one value but for escapes). While none of their symbols escapes, each group adds a known amount to
    every position's activity, so every group's contexts are known from the activity at the start of the run, and the
    coder meets the same symbols with the same tables as group by group: the same bits in one call instead of 8.
    A face whose run holds an escape (coded symbol 1) is coded, and decoded again, group by group (ferwire.bitstream)."""

    groups: tuple[GroupPlan, ...]
    merged: GroupPlan  # the run as one group whose contexts read the activity at its start; what context_rows takes
    added: int  # activity the run adds at every position when none of its symbols escapes


def _integer_pmf(p: np.ndarray) -> np.ndarray:
    """Nonnegative weights [..., B] -> integers summing to PMF_TOTAL along the last axis, each >= 1 (largest-remainder rounding)."""
    bins = p.shape[-1]
    share = p / p.sum(-1, keepdims=True) * (PMF_TOTAL - bins)
    out = np.floor(share).astype(np.int64) + 1
    short = PMF_TOTAL - out.sum(-1)
    rank = np.argsort(-(share - np.floor(share)), axis=-1, kind="stable")
    bump = np.arange(bins) < short[..., None]  # the `short` largest remainders get one more
    np.put_along_axis(out, rank, np.take_along_axis(out, rank, -1) + bump, -1)
    return out.astype(np.uint16)
