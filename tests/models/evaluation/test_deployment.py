"""Our points through the deployment path on a sliver of real FER2013 PrivateTest with the shipped model: shapes and bookkeeping, not quality."""

from __future__ import annotations

import math

import pytest

from fermodels.evaluation.deployment import evaluate_codec


def test_codec_one_point_per_quality(card, faces):
    x, y = faces
    points = evaluate_codec(card, x, y)
    assert [p["quality"] for p in points] == list(range(card.num_qualities))
    for p in points:
        assert p["bpp"] == pytest.approx(8 * p["bytes"] / (48 * 48))
        assert p["bytes"] > 8  # more than the bitstream header
        assert math.isfinite(p["psnr"]) and math.isfinite(p["ms_ssim"])
        assert 0 <= p["accuracy"] <= 1
