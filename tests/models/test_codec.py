"""FaceCodec: starting from a trained codec (fertrain codec --init), with a longer rate ladder or a post-filter."""

from __future__ import annotations

import pytest
import torch

from fermodels.bundle import DEFAULT_MODEL_DIR, load_training_models
from fermodels.codec import FaceCodec


@pytest.fixture(scope="module")
def shipped():
    codec, _ = load_training_models(DEFAULT_MODEL_DIR)
    return codec


def _codec(src, extra=(), post_filter=None):
    c = FaceCodec(src.n, src.m, tuple(src.lambdas.tolist()) + tuple(extra), post_filter)
    c.start_from(src) if post_filter is None else c.load_state_dict(src.state_dict(), strict=False)
    return c.eval()


def test_a_longer_ladder_keeps_every_quality_it_starts_from(shipped):
    grown = _codec(shipped, extra=(0.1, 0.2))
    x = torch.rand(4, 1, 48, 48)
    with torch.no_grad():
        for q in range(shipped.num_qualities):
            a, b = shipped(x, q), grown(x, q)
            assert torch.equal(a["x_hat"], b["x_hat"]) and torch.allclose(a["likelihoods"], b["likelihoods"])
        # Each added quality doubles lambda, so its gain grows by sqrt(2): finer steps, more bits, less error.
        last = shipped.num_qualities - 1
        assert torch.allclose(grown.log_gain[last + 1], shipped.log_gain[last] + 0.5 * torch.log(torch.tensor(2.0)))
        err = [torch.mean((grown(x, q)["x_hat"] - x) ** 2) for q in (last, last + 2)]
        assert err[1] < err[0]


def test_a_ladder_that_does_not_begin_with_the_source_is_refused(shipped):
    other = FaceCodec(shipped.n, shipped.m, (0.001,) + tuple(shipped.lambdas.tolist())[1:])
    with pytest.raises(ValueError, match="does not begin"):
        other.start_from(shipped)
    with pytest.raises(ValueError, match="cannot start"):
        FaceCodec(shipped.n, 32).start_from(shipped)


def test_an_untrained_post_filter_is_the_identity(shipped):
    filtered = _codec(shipped, post_filter=(4, 1))
    y = torch.randn(2, shipped.m, 6, 6)
    with torch.no_grad():
        assert torch.equal(filtered.synthesize(y, 3), shipped.synthesize(y, 3))
