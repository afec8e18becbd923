"""The deployed classifier: probabilities are a distribution, the same for a face and its mirror image; ensembles; weight averages."""

from __future__ import annotations

import pytest
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


def test_shipped_ensemble_averages_its_members(card, fer_test):
    """fercodec-v1 ships two classifiers; the server's probabilities are the mean of theirs, and the log-probability
    forward (what saliency and cross-entropy take) agrees with them."""
    from fermodels.classifier import ClassifierEnsemble, from_checkpoint

    ens = load_classifier(card.file("classifier.pt"))
    assert isinstance(ens, ClassifierEnsemble) and len(ens.members) == 2
    x = to_tensor(fer_test[0][:64])
    with torch.inference_mode():
        p = ens.probabilities(x)
        members = [m.probabilities(x) for m in ens.members]
        assert torch.allclose(p, (members[0] + members[1]) / 2, atol=1e-6)
        assert not torch.allclose(members[0], members[1], atol=1e-2)  # two different networks
        assert torch.allclose(ens(x).exp().sum(1), torch.ones(len(x)), atol=1e-5)
        rebuilt = from_checkpoint(ens.config(), ens.state_dict()).eval()
        assert torch.equal(rebuilt.probabilities(x), p)
    with pytest.raises(ValueError, match="at least two"):
        ClassifierEnsemble(ens.members[:1])


def test_average_weights_is_the_mean_and_refuses_mixed_widths(card):
    from fermodels.classifier import FERClassifier, average_weights, first_member

    ensemble = load_classifier(card.file("classifier.pt"))
    with pytest.raises(ValueError, match="ensemble"):
        average_weights([ensemble, ensemble])
    shipped = first_member(ensemble)
    other = FERClassifier(shipped.width).eval()
    soup = average_weights([shipped, other])
    for k, v in soup.state_dict().items():
        if v.is_floating_point():
            assert torch.allclose(v, (shipped.state_dict()[k] + other.state_dict()[k]) / 2)
    x = torch.rand(4, 1, 48, 48)
    with torch.inference_mode():
        assert torch.allclose(average_weights([shipped, shipped])(x), shipped(x), atol=1e-5)
    with pytest.raises(ValueError, match="different widths"):
        average_weights([shipped, FERClassifier(8)])


def test_teacher_probabilities_average_ten_shifted_views(card, fer_test):
    """The distillation teacher: a distribution per face; with no shift it is the deployed mirror pair, with shifts it differs."""
    from fermodels.classifier import teacher_probabilities

    clf = load_classifier(card.file("classifier.pt"))
    x = to_tensor(fer_test[0][:64])
    p = teacher_probabilities(clf, x, batch_size=16)
    assert p.shape == (64, 7) and torch.allclose(p.sum(1), torch.ones(64), atol=1e-5)
    with torch.inference_mode():
        assert torch.allclose(teacher_probabilities(clf, x, shift=0), clf.probabilities(x), atol=1e-6)
    assert (p - teacher_probabilities(clf, x, shift=0)).abs().max() > 1e-3
