"""The int8 classifier: the shipped file answers as the float network on real faces, is tied to its classifier.pt,
and a model without a usable one falls back to the float network with a reason."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from fermodels import quantize
from fermodels.bundle import for_inference, load_classifier
from fermodels.data import to_tensor


def _float_and_int8(card, faces):
    x = to_tensor(faces)
    with torch.no_grad():
        return for_inference(load_classifier(card.path)).probabilities(x).numpy(), quantize.load(card).probabilities(x).numpy()


def test_the_shipped_int8_classifier_agrees_with_the_float_one(card, fer_test):
    """On real PrivateTest faces (uncompressed; calibration saw decoded train faces only): the same label on >= 97 %
    (99.2 % on all of val), probabilities within a few hundredths, and accuracy within a point."""
    faces, labels = fer_test
    p32, p8 = _float_and_int8(card, faces)
    assert p8.shape == p32.shape and np.allclose(p8.sum(1), 1, atol=1e-4)
    assert (p8.argmax(1) == p32.argmax(1)).mean() >= 0.97
    assert np.abs(p8 - p32).mean() < 0.01 and np.abs(p8 - p32).max() < 0.15
    assert abs((p8.argmax(1) == labels).mean() - (p32.argmax(1) == labels).mean()) <= 0.01


def test_quantize_calibrates_any_classifier(card, fer_test, capsys):
    """quantize() on a fresh calibration set gives a module that answers any batch size, mirror-averaged as the float one;
    its calibration passes (most of a minute for the shipped model, once silent) show a bar on stderr."""
    faces = to_tensor(fer_test[0][:64])
    module = quantize.quantize(load_classifier(card.path), faces)
    assert "int8 calibration, 2 networks: 100%" in capsys.readouterr().err.replace("\r", "\n")  # 128 faces with mirrors: 1 batch a network
    with torch.no_grad():
        one, three = module(faces[:1]), module(faces[:3])
        mirrored = module(faces[:3].flip(-1))
        p32 = load_classifier(card.path).probabilities(faces[:3]).numpy()
    assert one.shape == (1, 7) and three.shape == (3, 7) and torch.allclose(one[0], three[0], atol=1e-6)
    assert torch.allclose(three, mirrored, atol=0.02)  # a face and its mirror image get the same answer, up to int8 rounding
    assert np.abs(three.numpy() - p32).max() < 0.15


def test_a_stale_or_missing_int8_file_falls_back_to_float(card, tmp_path):
    from ferwire.card import ModelCard

    notes = []
    stale = tmp_path / "stale"
    shutil.copytree(card.path, stale)
    meta = json.loads((stale / "model.json").read_text())
    meta["int8"]["classifier_sha256"] = "0" * 64
    (stale / "model.json").write_text(json.dumps(meta))
    assert quantize.load(ModelCard.load(stale), notes.append) is None and "made from another classifier.pt" in notes[-1]
    (stale / quantize.INT8_FILE).unlink()
    assert quantize.load(ModelCard.load(stale), notes.append) is None and "is missing" in notes[-1]
    del meta["int8"]
    (stale / "model.json").write_text(json.dumps(meta))
    assert quantize.load(ModelCard.load(stale), notes.append) is None and len(notes) == 2  # no int8 at all: nothing to say


def test_the_shipped_record_names_its_classifier(card):
    meta = json.loads((card.path / "model.json").read_text())["int8"]
    assert meta["file"] == quantize.INT8_FILE and meta["engine"] == quantize.ENGINE
    assert meta["classifier_sha256"] == quantize._sha256(card.path / "classifier.pt")


def test_an_expression_model_has_nothing_to_quantize(expression_card):
    with pytest.raises(ValueError, match="only an image model"):
        quantize.write(expression_card.path)


def test_check_measures_both_reduced_precisions_on_val(card, capsys):
    """--check's figures on 256 val faces: the int8 classifier and bfloat16 synthesis each agree with float on most
    faces, and every timing is a positive number of milliseconds. Its passes and its timing show a bar each on stderr,
    each ending where its total said."""
    r = quantize.check(card.path, limit=256, repeats=3)
    err = capsys.readouterr().err.replace("\r", "\n")
    assert "--check: passes over 256 val faces: 100%" in err and "| 2304/2304 [" in err and "--check: timing: 100%" in err and "| 64/64 [" in err
    assert r["faces"] == 256
    for name in ("uncompressed", f"q{card.default_quality}", "synthesis"):
        assert 0.9 <= r[name]["same_label"] <= 1.0, (name, r[name])
    assert 0 < r["synthesis"]["max_abs_pixel_diff"] < 0.05
    for key in ("ms_per_face_fp32", "ms_per_face_int8", "ms_one_face_fp32", "ms_one_face_int8"):
        assert 0 < r[key] < 1000
    assert 0 < r["synthesis"]["ms_per_face_bf16"] < 1000 and 0 < r["synthesis"]["ms_per_face_fp32"] < 1000


def test_a_users_error_is_one_line_and_exit_2(expression_card, tmp_path, capsys):
    """It exited 1 where fertrain, ferexport and fereval exit 2; and a model directory's path was said twice."""
    assert quantize.main([str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fermodels.quantize: no model.json in ") and err[0].count(str(tmp_path / "nope")) == 1
    assert quantize.main([str(expression_card.path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"fermodels.quantize: {expression_card.path}: only an image model") and err[0].count(str(expression_card.path)) == 1


def test_ctrl_c_is_one_line_and_exit_130():
    """Ctrl-C in `python -m fermodels.quantize` printed a KeyboardInterrupt traceback and died of the signal (an audit)."""
    import signal
    import subprocess
    import sys

    p = subprocess.Popen([sys.executable, "-m", "fermodels.quantize", "--check"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # CI's shell ignores SIGINT
    seen = b""
    while b"--check: passes" not in seen:  # its first progress bar: main() is running
        chunk = p.stderr.read1(256)
        assert chunk, seen.decode()
        seen += chunk
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130 and err.decode().strip().splitlines()[-1].endswith("fermodels.quantize: interrupted"), (seen + err).decode()
    assert "Traceback" not in (seen + err).decode()
