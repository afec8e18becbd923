"""Temperature scaling: the measures, the fit, and a real server applying model.json's temperature."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from fermodels.evaluation.calibration import ece, fit_temperature, nll, recalls
from ferwire.card import tempered


def _overconfident(n=4000, seed=0):
    """Labels drawn from softmax(z), reported as softmax(2 z): a model twice too sure of itself."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, (n, 7))
    true = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    labels = np.array([rng.choice(7, p=p) for p in true])
    return tempered(true, 0.5), labels


def test_fit_recovers_a_known_temperature_and_lowers_ece():
    p, y = _overconfident()
    t = fit_temperature(p, y)
    assert t == pytest.approx(2.0, abs=0.15)
    assert ece(tempered(p, t), y) < 0.5 * ece(p, y) and nll(tempered(p, t), y) < nll(p, y)


def test_ece_is_zero_for_a_perfect_hard_classifier_and_recalls_count_per_class():
    y = np.array([0, 1, 2, 2])
    p = np.eye(3)[y]
    assert ece(p, y) == pytest.approx(0.0) and recalls(p, y, ["a", "b", "c"]) == {"a": 1.0, "b": 1.0, "c": 1.0}
    assert recalls(np.eye(3)[[0, 0, 2, 1]], y, ["a", "b", "c"]) == {"a": 1.0, "b": 0.0, "c": 0.5}


@pytest.mark.slow
def test_server_applies_the_model_temperature(tmp_path, expression_card, fer_test):
    """The same bitstreams through two real servers, one reading T = 3 from its model.json: same labels, lower confidence."""
    from fermodels.evaluation.photos import server_probabilities
    from ferserver.process import ServerProcess

    hot = tmp_path / "expr-hot"
    shutil.copytree(expression_card.path, hot)
    meta = json.loads((hot / "model.json").read_text())
    meta["temperature"] = 3.0 * meta.get("temperature", 1.0)
    (hot / "model.json").write_text(json.dumps(meta))
    faces = fer_test[0][:16]
    with ServerProcess("--model-dir", str(expression_card.path)) as a, ServerProcess("--model-dir", str(hot)) as b:
        p = server_probabilities(a.address, expression_card.path, faces)
        q = server_probabilities(b.address, hot, faces)
    assert (p.argmax(1) == q.argmax(1)).all()
    assert np.allclose(q, tempered(p, 3.0), atol=2e-4)
