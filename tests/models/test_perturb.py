"""Perturbations of real crops: fixed severities for the robustness table, random draws for --robust training."""

from __future__ import annotations

import numpy as np
import pytest

from fermodels.data import load_split
from fermodels.perturb import conditions, perturb, random_perturbations


def test_robust_copies_are_deterministic_and_perturbed():
    faces, _ = load_split("train", limit=32)
    a, b = random_perturbations(faces, 3), random_perturbations(faces, 3)
    assert np.array_equal(a, b) and not np.array_equal(a, random_perturbations(faces, 4))
    assert (np.abs(a.astype(int) - faces).mean((1, 2)) > 0).mean() > 0.7  # most faces drew at least one perturbation
    for kind, severity in conditions():
        p = perturb(faces, kind, severity)
        assert p.shape == faces.shape and p.dtype == np.uint8
        assert np.array_equal(p, perturb(faces, kind, severity)) and (kind == "none") == np.array_equal(p, faces)
    with pytest.raises(ValueError, match="unknown perturbation"):
        perturb(faces, "fog", 1)
