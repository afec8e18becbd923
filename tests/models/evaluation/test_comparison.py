"""Rate-accuracy maths on curves with known answers: BD-rate, bytes at an accuracy, the default-quality rule, BD-accuracy."""

from __future__ import annotations

import pytest

from fermodels.evaluation.comparison import bd_rate, bytes_at_accuracy, default_quality


def test_bd_rate_known_answers():
    b = [(100, 0.40), (200, 0.50), (400, 0.60), (800, 0.65)]
    half = [(n / 2, a) for n, a in b]
    assert bd_rate(half, b) == pytest.approx(-50.0)
    assert bd_rate(b, half) == pytest.approx(100.0)
    assert bd_rate(b, b) == pytest.approx(0.0, abs=1e-9)
    # A dominated point (more bytes, less accuracy) and the order of points change nothing.
    assert bd_rate(half[::-1] + [(700, 0.45)], b) == pytest.approx(-50.0)
    assert bd_rate([(10, 0.1), (20, 0.2)], b) is None
    assert bd_rate([(10, 0.5)], b) is None


def test_bytes_at_accuracy():
    b = [(100, 0.40), (400, 0.60)]
    assert bytes_at_accuracy(b, 0.50) == pytest.approx(200.0)
    assert bytes_at_accuracy(b, 0.30) == pytest.approx(100.0)
    assert bytes_at_accuracy(b, 0.61) is None


def test_default_quality_rule():
    pts = [{"codec": "fercodec", "quality": q, "bytes": 100.0 * (q + 1), "accuracy": a} for q, a in enumerate([0.60, 0.652, 0.656, 0.655])]
    pts.append({"codec": "jpeg", "quality": None, "bytes": 50.0, "accuracy": 0.70})
    # The cheapest quality within half a point of uncompressed, baselines ignored.
    assert default_quality(pts, 0.660) == {"quality": 2, "within_tolerance": True, "gap_points": 0.4, "bytes": 300.0}
    # None within: the most accurate one, flagged.
    d = default_quality(pts, 0.670)
    assert d["quality"] == 2 and not d["within_tolerance"] and d["gap_points"] == pytest.approx(1.4)


def test_bd_accuracy_known_answer():
    from fermodels.evaluation.comparison import bd_accuracy

    a = [(100, 0.50), (200, 0.60), (400, 0.70)]
    b = [(n, acc - 0.02) for n, acc in a]
    assert bd_accuracy(a, b) == pytest.approx(2.0)
    assert bd_accuracy(a, [(1000, 0.5), (2000, 0.6)]) is None
