"""Pillow baselines on a sliver of real FER2013 PrivateTest with the shipped classifier: shapes and bookkeeping, not quality."""

from __future__ import annotations

import math

from fermodels.bundle import load_classifier
from fermodels.evaluation.baselines import evaluate_baseline


def test_jpeg_bytes_rise_with_quality(card, faces):
    x, y = faces
    clf = load_classifier(card.file("classifier.pt"))
    points = evaluate_baseline("jpeg", x, y, {"deployed": clf}, settings=[10, 50, 90])
    sizes = [p["bytes"] for p in points]
    assert sizes == sorted(sizes) and len(set(sizes)) == 3
    for p in points:
        assert 0 <= p["accuracies"]["deployed"] == p["accuracy"] <= 1
        assert math.isfinite(p["psnr"]) and 0 < p["ms_ssim"] <= 1
