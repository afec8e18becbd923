"""The deployed classifier's probabilities: a distribution, the same for a face and its mirror image."""

from __future__ import annotations

import torch

from fermodels.bundle import load_classifier
from fermodels.data import to_tensor


def test_probabilities_are_mirror_averaged(card, fer_test):
    clf = load_classifier(card.file("classifier.pt"))
    x = to_tensor(fer_test[0][:64])
    with torch.inference_mode():
        p, p_mirror, plain = clf.probabilities(x), clf.probabilities(x.flip(-1)), clf(x).softmax(1)
    assert torch.allclose(p.sum(1), torch.ones(len(x)), atol=1e-5)
    assert torch.allclose(p, p_mirror, atol=1e-5)
    assert not torch.allclose(p, plain, atol=1e-3)  # the mirror really is averaged in
