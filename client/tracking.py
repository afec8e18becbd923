"""Face tracks across video frames: IoU matching with the Hungarian assignment, ids that stay put.

A detection joins the track whose box, moved on as the track has been moving,
it overlaps (IoU at least min_iou) or, for a face that moved fast between sampled
frames, whose centre lies within max_shift box sizes of it; the assignment is solved jointly for all faces of a frame
(the Hungarian method, `assignment` below), so two faces crossing do not swap
ids greedily. It is written here rather than taken from SciPy, which would add
143 MB to the edge install for a few faces per frame. A track unseen for max_missed
sampled frames ends; a new face gets the next id, never a reused one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def assignment(cost: np.ndarray) -> list[tuple[int, int]]:
    """(row, column) pairs of a minimum-cost matching of every row or every column, whichever is fewer.

    The Hungarian method with potentials and shortest augmenting paths, O(n^2 m):
    each row in turn is matched, re-routing earlier matches along the cheapest path.
    """
    cost = np.asarray(cost, dtype=np.float64)
    if cost.size == 0:
        return []
    if cost.shape[0] > cost.shape[1]:
        return sorted((r, c) for c, r in assignment(cost.T))
    n, m = cost.shape
    u, v = np.zeros(n + 1), np.zeros(m + 1)  # potentials; index 0 is a virtual start
    match = np.zeros(m + 1, dtype=int)  # match[column] = row (1-based), 0 = free
    for row in range(1, n + 1):
        match[0], col0 = row, 0
        best = np.full(m + 1, np.inf)  # cheapest reduced cost to reach each column
        came = np.zeros(m + 1, dtype=int)
        used = np.zeros(m + 1, dtype=bool)
        while match[col0]:
            used[col0] = True
            r = match[col0]
            reduced = cost[r - 1] - u[r] - v[1:]
            free = ~used[1:]
            better = free & (reduced < best[1:])
            best[1:][better], came[1:][better] = reduced[better], col0
            j = 1 + int(np.argmin(np.where(free, best[1:], np.inf)))
            delta = best[j]
            u[match[used]] += delta
            v[used] -= delta
            best[1:][free] -= delta
            col0 = j
        while col0:  # re-route the matches along the path back to the start
            prev = came[col0]
            match[col0] = match[prev]
            col0 = prev
    return sorted((int(match[c]) - 1, c - 1) for c in range(1, m + 1) if match[c])


def shift(a, b) -> float:
    """Distance between box centres, in units of the larger box's longer side."""
    (ax, ay, aw, ah), (bx, by, bw, bh) = a, b
    d = np.hypot(ax + aw / 2 - bx - bw / 2, ay + ah / 2 - by - bh / 2)
    return float(d / max(aw, ah, bw, bh, 1))


def iou(a, b) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    ih = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    inter = iw * ih
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


# A track's velocity: this much of the last one kept, the rest from its latest move. Boxes are matched against where the
# velocity puts them: without it, two faces crossing at 200 px/s swapped ids (5 sampled frames a second).
VELOCITY_KEEP = 0.5
MAX_PREDICTED_STEPS = 2


@dataclass
class Track:
    id: int
    box: tuple[int, int, int, int]
    missed: int = 0
    hits: int = 1
    state: dict = field(default_factory=dict)  # what the caller keeps per track (last latent sent, smoothed probabilities)
    velocity: tuple[float, float] = (0.0, 0.0)  # its box's centre's move per sampled frame, smoothed

    def predicted(self) -> tuple[float, float, float, float]:
        """Where the box should be in the next sampled frame, moving on as it moved (one missed frame included, not
        more: a face that stopped while unseen would be looked for ever further from where it stopped)."""
        steps = min(self.missed + 1, MAX_PREDICTED_STEPS)
        return (self.box[0] + self.velocity[0] * steps, self.box[1] + self.velocity[1] * steps, self.box[2], self.box[3])


class IouTracker:
    def __init__(self, min_iou: float = 0.3, max_shift: float = 1.0, max_missed: int = 10):
        self.min_iou, self.max_shift, self.max_missed = min_iou, max_shift, max_missed
        self.tracks: list[Track] = []
        self._next = 1

    def update(self, boxes: list[tuple[int, int, int, int]]) -> list[Track]:
        """The track of each box, in the order of boxes; tracks not seen for too long are dropped."""
        assigned: list[Track | None] = [None] * len(boxes)
        if self.tracks and boxes:
            ahead = [t.predicted() for t in self.tracks]
            overlap = np.array([[iou(p, b) for b in boxes] for p in ahead])
            moved = np.array([[shift(p, b) for b in boxes] for p in ahead])
            for ti, bi in assignment(1.0 - overlap + 0.5 * np.minimum(moved, 2.0)):
                if overlap[ti, bi] >= self.min_iou or moved[ti, bi] <= self.max_shift:
                    assigned[bi] = self.tracks[ti]
        matched = {id(t) for t in assigned if t is not None}
        for t in self.tracks:
            if id(t) not in matched:
                t.missed += 1
        self.tracks = [t for t in self.tracks if t.missed <= self.max_missed]
        for i, b in enumerate(boxes):
            t = assigned[i]
            if t is None:
                t = assigned[i] = Track(self._next, tuple(b))
                self._next += 1
                self.tracks.append(t)
            else:
                steps = t.missed + 1
                dx = (b[0] + b[2] / 2 - t.box[0] - t.box[2] / 2) / steps
                dy = (b[1] + b[3] / 2 - t.box[1] - t.box[3] / 2) / steps
                t.velocity = (dx, dy) if t.hits == 1 else (VELOCITY_KEEP * t.velocity[0] + (1 - VELOCITY_KEEP) * dx,
                                                            VELOCITY_KEEP * t.velocity[1] + (1 - VELOCITY_KEEP) * dy)
                t.box, t.missed, t.hits = tuple(b), 0, t.hits + 1
        return assigned
