"""Comparing rate-accuracy curves: Pareto frontier, BD-rate and BD-accuracy, bytes at an accuracy, the default quality.

Curves are [(bytes, accuracy), ...]; bytes are compared in log space, piecewise
linearly between points.
"""

from __future__ import annotations

import numpy as np

from .measure import EXPRESSION, OURS


def _frontier(curve) -> np.ndarray:
    """The points no other point beats on both bytes and accuracy, as [[accuracy, log bytes], ...] rising in both."""
    kept: list[tuple[float, float]] = []
    for nbytes, acc in sorted(curve, key=lambda p: (-p[1], p[0])):  # most accurate first, cheapest first in a tie
        if nbytes > 0 and np.isfinite(acc) and (not kept or nbytes < kept[-1][0]):
            kept.append((nbytes, acc))
    return np.array([(acc, np.log(nbytes)) for nbytes, acc in reversed(kept)]).reshape(-1, 2)


def _mean_gap(a: np.ndarray, b: np.ndarray) -> float | None:
    """Mean of a(x) - b(x) over the x range both cover; a, b are [[x, y], ...] rising in x, linear between knots.

    Both curves are linear between the union of their knots, so the trapezoid rule is exact there.
    """
    if len(a) < 2 or len(b) < 2:
        return None
    lo, hi = max(a[0, 0], b[0, 0]), min(a[-1, 0], b[-1, 0])
    if hi <= lo:
        return None
    x = np.union1d(np.concatenate([a[:, 0], b[:, 0]]), [lo, hi])
    x = x[(x >= lo) & (x <= hi)]
    diff = np.interp(x, a[:, 0], a[:, 1]) - np.interp(x, b[:, 0], b[:, 1])
    return float(np.sum((diff[1:] + diff[:-1]) / 2 * np.diff(x)) / (hi - lo))


def bd_rate(curve_a, curve_b) -> float | None:
    """Mean byte difference of a over b in % at equal accuracy (Bjontegaard style, piecewise linear).

    Curves are [(bytes, accuracy), ...]; negative means a needs fewer bytes.
    None when the accuracy ranges do not overlap.
    """
    mean = _mean_gap(_frontier(curve_a), _frontier(curve_b))
    return None if mean is None else float(np.expm1(mean) * 100)


def bd_accuracy(curve_a, curve_b) -> float | None:
    """Mean accuracy difference of a over b, in points, at equal bytes (over the overlapping log-byte range).

    Curves are [(bytes, accuracy), ...] in any order; positive means a is more accurate.
    """

    def xy(curve):
        return np.array(sorted((np.log(n), acc) for n, acc in curve)).reshape(-1, 2)

    mean = _mean_gap(xy(curve_a), xy(curve_b))
    return None if mean is None else mean * 100


def bytes_at_accuracy(curve, target: float) -> float | None:
    """Fewest bytes per face that reach `target` accuracy, interpolated in log bytes; None if no point reaches it."""
    f = _frontier(curve)
    if not len(f) or f[-1, 0] < target:
        return None
    if f[0, 0] >= target:  # already there at the cheapest point: no extrapolation below the curve
        return float(np.exp(f[0, 1]))
    return float(np.exp(np.interp(target, f[:, 0], f[:, 1])))


PARITY_POINTS = 0.5  # the bar for the default quality


def default_quality(points, uncompressed: float, tolerance: float = PARITY_POINTS / 100) -> dict:
    """The quality to ship as default: the cheapest one whose deployed accuracy is within
    `tolerance` of uncompressed, else the most accurate one. Run it on val (PublicTest)."""
    ours = sorted((p for p in points if p["codec"] == OURS), key=lambda p: p["quality"])
    within = [p for p in ours if p["accuracy"] >= uncompressed - tolerance]
    pick = within[0] if within else max(ours, key=lambda p: p["accuracy"])
    return {"quality": pick["quality"], "within_tolerance": bool(within), "gap_points": round((uncompressed - pick["accuracy"]) * 100, 2), "bytes": pick["bytes"]}


def curves(points) -> dict[str, list[tuple[float, float]]]:
    """Rate-accuracy curves keyed "codec/classifier"."""
    out: dict[str, list] = {}
    for p in points:
        for clf, acc in p["accuracies"].items():
            out.setdefault(f"{p['codec']}/{clf}", []).append((p["bytes"], acc))
    return out


def compare(points, uncompressed: dict) -> tuple[dict, dict]:
    """(BD-rate of each of our curves vs each baseline curve, bytes to stay within 1 point of uncompressed, per curve)."""
    cs = curves(points)
    ours = [k for k in cs if k.startswith(OURS + "/")]
    bd = {a: {b: bd_rate(cs[a], cs[b]) for b in cs if b not in ours and not b.startswith(EXPRESSION + "/")} for a in ours}
    within = {k: bytes_at_accuracy(c, uncompressed[k.split("/", 1)[1]] - 0.01) for k, c in cs.items()}
    return bd, within
