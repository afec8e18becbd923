"""model.json's temperature and prior correction as the server applies them: ferwire.card.tempered, ModelCard.served."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from ferwire.card import ModelCard, tempered


def test_tempered_keeps_labels_and_sums_to_one():
    z = np.random.default_rng(0).normal(0, 3.0, (200, 7))
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    for t in (0.5, 1.0, 2.0):
        q = tempered(p, t)
        assert np.allclose(q.sum(1), 1, atol=1e-5) and (q.argmax(1) == p.argmax(1)).all()
    assert tempered(p, 2.0).max(1).mean() < p.max(1).mean() < tempered(p, 0.5).max(1).mean()
    assert np.allclose(tempered(tempered(p, 2.0), 0.5), p, atol=1e-5)  # T then 1/T is the identity


def test_prior_correction_moves_labels_toward_rare_classes_and_undoes_exactly():
    """log_bias = -s log prior raises a rare class's odds by prior ratio ** s; applying -log_bias restores p."""
    prior = np.array([0.5, 0.45, 0.05])
    p = np.array([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1]])
    bias = -1.0 * np.log(prior)
    q = tempered(p, 1.0, bias)
    assert q[0].argmax() == 2 and q[1].argmax() == 2  # 0.1 / 0.05 beats 0.6 / 0.5 and 0.7 / 0.45
    assert np.allclose(q[0], (p[0] / prior) / (p[0] / prior).sum(), atol=1e-6)
    assert np.allclose(tempered(q, 1.0, -bias), p, atol=1e-6)


def test_card_reads_the_prior_correction_and_refuses_a_bad_prior(tmp_path, card):
    d = tmp_path / "m"
    shutil.copytree(card.path, d)
    meta = json.loads((d / "model.json").read_text())
    prior = [0.14, 0.014, 0.14, 0.256, 0.17, 0.1, 0.18]
    meta.update(temperature=0.8, prior_correction={"strength": 0.5, "train_prior": prior})
    (d / "model.json").write_text(json.dumps(meta))
    c = ModelCard.load(d)
    assert c.prior_correction == 0.5 and np.allclose(c.log_bias, -0.5 * np.log(prior))
    p = np.full((1, 7), 1 / 7)
    assert c.served(p).argmax() == 1  # equal evidence: the rarest training class wins once the prior is taken out
    meta["prior_correction"]["train_prior"] = prior[:6]
    (d / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="one positive share per class"):
        ModelCard.load(d)
    del meta["prior_correction"]
    (d / "model.json").write_text(json.dumps(meta))
    assert ModelCard.load(d).log_bias is None


def test_a_model_name_that_is_not_there_lists_the_bundled_ones(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"fercodec-v9: .*no such directory; the bundled models: fercodec-v1, fercodec-v1-expr\)$"):
        ModelCard.load("fercodec-v9")
    with pytest.raises(FileNotFoundError, match=r"not a fercodec model directory$"):  # a directory that is there: no list
        ModelCard.load(tmp_path)
