"""FaceCodec: start_from (fertrain codec --init, with the same or a longer rate ladder), and the served synthesis' SubPixelConv and FixedGDN."""

from __future__ import annotations

import pytest
import torch

from fermodels.bundle import load_training_models
from fermodels.codec import FaceCodec
from ferwire.card import DEFAULT_MODEL_DIR


@pytest.fixture(scope="module")
def shipped():
    codec, _ = load_training_models(DEFAULT_MODEL_DIR)
    return codec


def test_a_longer_ladder_keeps_every_quality_it_starts_from(shipped, fer_test):
    from fermodels.data import to_tensor

    grown = FaceCodec(shipped.n, shipped.m, tuple(shipped.lambdas.tolist()) + (0.4, 0.8), synthesis=shipped.synthesis_widths)
    grown.start_from(shipped)
    grown.eval()
    x = to_tensor(fer_test[0][:8])  # real faces: on uniform noise (unseeded, as before) the error ordering flipped once
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
    other = FaceCodec(shipped.n, shipped.m, (0.001,) + tuple(shipped.lambdas.tolist())[1:], synthesis=shipped.synthesis_widths)
    with pytest.raises(ValueError, match="does not begin"):
        other.start_from(shipped)
    with pytest.raises(ValueError, match="cannot start"):
        FaceCodec(shipped.n, 32).start_from(shipped)
    with pytest.raises(ValueError, match="cannot start"):  # another synthesis transform's shape
        FaceCodec(shipped.n, shipped.m, tuple(shipped.lambdas.tolist()), synthesis=(32, 32)).start_from(shipped)


def test_subpixel_conv_is_the_transposed_convolution(shipped, fer_test):
    """SubPixelConv computes what the _deconv layer it is made from computes (every one of the shipped synthesis'
    three, on real latents' activations and on noise), and the served codec (for_inference: it replaces the last)
    reconstructs real faces as the loaded one does; any other transposed convolution is refused."""
    from fermodels.bundle import for_inference
    from fermodels.codec import SubPixelConv
    from fermodels.data import to_tensor

    x = to_tensor(fer_test[0][:64])
    with torch.no_grad():
        h = shipped.g_a(x) * shipped._gain(5)
        for layer in shipped.g_s:
            if isinstance(layer, torch.nn.ConvTranspose2d):
                for v in (h, torch.randn(3, *h.shape[1:])):
                    want = layer(v)
                    assert torch.allclose(SubPixelConv(layer)(v), want, atol=1e-5 * float(want.abs().max()))
            h = layer(h)
        served = for_inference(shipped)
        assert isinstance(served.g_s[-1], SubPixelConv) and not isinstance(shipped.g_s[-1], SubPixelConv)
        y = shipped.g_a(x) * shipped._gain(5)
        assert (served.synthesize(y.round(), 5) - shipped.synthesize(y.round(), 5)).abs().max() < 1e-5
    with pytest.raises(ValueError, match="5x5, stride 2"):
        SubPixelConv(torch.nn.ConvTranspose2d(4, 4, 3, stride=2, padding=1, output_padding=1))


def test_fixed_gdn_is_the_gdn(shipped, fer_test):
    """FixedGDN answers as the trained GDN it is made from, bit for bit (both synthesis layers on real activations, and
    the analysis' forward GDN); the served codec has one in place of each synthesis GDN, and its bfloat16 copy
    (for_inference(..., bf16=True), what ferserver runs on a CPU with bfloat16) reconstructs within a few grey levels."""
    from compressai.layers import GDN

    from fermodels.bundle import for_inference
    from fermodels.codec import FixedGDN
    from fermodels.data import to_tensor

    x = to_tensor(fer_test[0][:64])
    with torch.no_grad():
        h = x
        for layer in shipped.g_a.net:
            if isinstance(layer, GDN):
                assert not layer.inverse and torch.equal(FixedGDN(layer)(h), layer(h))
            h = layer(h)
        y = (h * shipped._gain(5)).round()
        h = y * shipped._inv_gain(5)
        for layer in shipped.g_s:
            if isinstance(layer, GDN):
                assert layer.inverse and torch.equal(FixedGDN(layer)(h), layer(h))
            h = layer(h)
        served, bf16 = for_inference(shipped, channels_last=False), for_inference(shipped, bf16=True)
        assert sum(isinstance(m, FixedGDN) for m in served.g_s) == 2 and not any(isinstance(m, GDN) for m in served.g_s)
        assert bf16.g_s[0].weight.dtype == torch.bfloat16 and shipped.g_s[0].weight.dtype == torch.float32
        want = shipped.synthesize(y, 5)
        assert (served.synthesize(y, 5) - want).abs().max() < 1e-5
        got = bf16.synthesize(y, 5)
        assert got.dtype == torch.bfloat16 and 0 < (got.float() - want).abs().max() < 4 / 255
    with pytest.raises(ValueError, match="image codec"):
        for_inference(torch.nn.Sequential(torch.nn.Conv2d(1, 1, 1)), bf16=True)
