"""model.json's temperature as the server applies it: ferwire.card.tempered."""

from __future__ import annotations

import numpy as np

from ferwire.card import tempered


def test_tempered_keeps_labels_and_sums_to_one():
    z = np.random.default_rng(0).normal(0, 3.0, (200, 7))
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    for t in (0.5, 1.0, 2.0):
        q = tempered(p, t)
        assert np.allclose(q.sum(1), 1, atol=1e-5) and (q.argmax(1) == p.argmax(1)).all()
    assert tempered(p, 2.0).max(1).mean() < p.max(1).mean() < tempered(p, 0.5).max(1).mean()
    assert np.allclose(tempered(tempered(p, 2.0), 0.5), p, atol=1e-5)  # T then 1/T is the identity
