"""bundle.py helpers that the tools share."""

from __future__ import annotations

import platform

import pytest

from fermodels.bundle import keep_freed_memory, pick_device


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_keep_freed_memory_is_accepted_by_glibc():
    assert keep_freed_memory() is True


def test_pick_device_refuses_cuda_without_a_gpu():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert pick_device("auto") == "cpu"
    with pytest.raises(ValueError, match="no CUDA device"):
        pick_device("cuda")


def test_decoded_faces_are_what_the_bitstream_round_trip_reconstructs():
    """The decoded fine-tune trains on what the deployment path (ONNX encoder, range coder) gives the classifier.

    ONNX Runtime and torch run the analysis transform with different kernels, so a latent within float error of a
    rounding boundary can land one step apart: 1 face of 64 at the top quality on one 2-core AMD EPYC, 0 on another.
    Such a face differs a little in a few pixels; every other face is identical."""
    import numpy as np
    from tqdm import tqdm

    from ferclient.encoder import FaceEncoder
    from fermodels.bundle import decoded_faces, load_torch_models
    from fermodels.data import load_split, to_tensor
    from fermodels.evaluation.deployment import _reconstruct
    from ferwire.card import ModelCard

    card = ModelCard.load()
    codec, _ = load_torch_models(card)
    encoder = FaceEncoder(card.path)
    faces, _ = load_split("val", limit=64)
    for q in (0, card.num_qualities - 1):
        _, via_bitstreams = _reconstruct(encoder, codec, faces, q, 32, tqdm(disable=True))
        direct = decoded_faces(codec, encoder.tables, to_tensor(faces), q)
        diff = np.abs((direct - via_bitstreams).numpy()).reshape(len(faces), -1).max(axis=1)
        assert (diff > 1e-5).sum() <= 2 and diff.max() < 0.05, (q, diff.max(), (diff > 1e-5).sum())


def test_expression_layer_without_a_recorded_width_or_split_loads_as_the_first_one(tmp_path):
    """Layers exported before --hidden and --front-blocks (fercodec-v1-expr-140f) record neither; the server must still
    load them as what they were: a 96-channel bottleneck after the classifier's third block."""
    import shutil

    import torch

    from fermodels.bundle import load_expression
    from fermodels.expression import ExpressionCodec
    from ferwire.card import ModelCard

    shutil.copytree(ModelCard.load("fercodec-v1-expr").path, tmp_path / "old")
    codec = ExpressionCodec(64, 2e-5, 32, hidden=96, front_blocks=3)
    config = {k: v for k, v in codec.config().items() if k not in ("hidden", "front_blocks")}
    torch.save({"config": config, "state_dict": codec.state_dict()}, tmp_path / "old" / "expression.pt")
    old = load_expression(ModelCard.load(tmp_path / "old"))
    assert old.encoder.bottleneck[0].out_channels == 96 and len(old.encoder.front) == 3 and len(old.decoder.tail) == 1


def test_for_inference_answers_as_the_loaded_networks(card, expression_card, fer_test):
    """What the server runs (BatchNorm folded, channels-last) answers as the loaded networks do, labels included:
    the shipped ensemble, one network, and the expression layer's server half; the loaded ones are left as they were."""
    import torch

    from ferclient.encoder import FaceEncoder
    from fermodels.bundle import for_inference, load_classifier, load_expression
    from fermodels.classifier import first_member
    from fermodels.data import to_tensor
    from ferwire.entropy import EntropyTables

    faces = fer_test[0][:256]
    ens = load_classifier(card.file("classifier.pt"))
    x = to_tensor(faces)
    for clf in (ens, first_member(ens)):
        served = for_inference(clf)
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in served.modules())
        assert any(isinstance(m, torch.nn.BatchNorm2d) for m in clf.modules())
        with torch.inference_mode():
            p, q = clf.probabilities(x), served.probabilities(x)
        assert torch.allclose(p, q, atol=1e-5)
        assert torch.equal(p.argmax(1), q.argmax(1))
    tables = EntropyTables.load(expression_card.file("tables.npz"))
    z = tables.symbols(FaceEncoder(str(expression_card.path)).latents(faces), 0)
    expr = load_expression(expression_card)
    with torch.inference_mode():
        p, q = expr.probabilities(z, tables), for_inference(expr).probabilities(z, tables)
    assert torch.allclose(p, q, atol=1e-5) and torch.equal(p.argmax(1), q.argmax(1))
