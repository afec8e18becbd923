"""FaceCodec's training pass with the shipped quantizer (fertrain codec --quantizer deployed)."""

from __future__ import annotations

import numpy as np
import torch

from fermodels.bundle import ModelCard, decoded_faces, load_torch_models
from fermodels.data import load_split, to_tensor
from fermodels.entropy import EntropyTables


def _shipped():
    card = ModelCard.load()
    codec, _ = load_torch_models(card)
    return codec, EntropyTables.load(card.file("tables.npz")), card


def test_deployed_pass_reconstructs_what_the_server_decodes():
    """In eval mode the scaled, rounded pass is the bitstream's quantizer: the same faces the server rebuilds."""
    codec, tables, card = _shipped()
    x = to_tensor(load_split("val", limit=64)[0])
    scale = torch.from_numpy(tables.scale)
    with torch.no_grad():
        for q in (0, card.num_qualities - 1):
            out = codec(x, q, scale)
            np.testing.assert_array_equal(out["x_hat"].numpy(), decoded_faces(codec, tables, x, q).numpy())
            # and the plain pass (uniform rounding) is not the same thing
            assert not torch.equal(codec(x, q)["x_hat"], out["x_hat"])


def test_deployed_pass_trains_the_encoder_through_rounding():
    """Straight-through rounding: the analysis transform gets a gradient from the distortion, the rate stays finite."""
    codec, tables, _ = _shipped()
    codec.train()
    x = to_tensor(load_split("train", limit=16)[0])
    out = codec(x, 0, torch.from_numpy(tables.scale))
    # The distortion alone: with a plain torch.round the encoder's gradient would be exactly zero.
    torch.nn.functional.mse_loss(out["x_hat"], x).backward()
    grad = codec.g_a.net[0].weight.grad
    assert grad is not None and grad.abs().sum() > 0
    assert torch.isfinite(out["likelihoods"].log2().sum()) and (out["likelihoods"] > 0).all()
