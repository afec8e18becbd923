"""Prior correction and temperature scaling: the measures, the fits, and a real server applying model.json's."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from fermodels.evaluation.calibration import balanced_nll, calibrate, ece, fit_correction, fit_temperature, mean_recall, nll, raw_probabilities, recalls
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


def test_fit_correction_takes_the_training_prior_back_out():
    """A model that learned a skewed prior (its p is the posterior under it), scored on faces whose classes come
    evenly: the balanced fit finds s near 1 and T near 1, and mean recall rises."""
    rng = np.random.default_rng(1)
    prior = np.array([0.3, 0.3, 0.2, 0.15, 0.04, 0.01])
    z = rng.normal(0, 1.2, (6000, 6))
    even = np.exp(z) / np.exp(z).sum(1, keepdims=True)  # the truth when every class is equally common
    labels = np.array([rng.choice(6, p=q) for q in even])
    learned = even * prior / (even * prior).sum(1, keepdims=True)
    s, t = fit_correction(learned, labels, prior)
    assert s == pytest.approx(1.0, abs=0.15) and t == pytest.approx(1.0, abs=0.1)
    fixed = tempered(learned, t, -s * np.log(prior))
    assert mean_recall(fixed, labels) > mean_recall(learned, labels) + 0.05 and balanced_nll(fixed, labels) < balanced_nll(learned, labels)
    assert fit_correction(learned, labels, prior, strength=0.0)[0] == 0.0


def test_ece_is_zero_for_a_perfect_hard_classifier_and_recalls_count_per_class():
    y = np.array([0, 1, 2, 2])
    p = np.eye(3)[y]
    assert ece(p, y) == pytest.approx(0.0) and recalls(p, y, ["a", "b", "c"]) == {"a": 1.0, "b": 1.0, "c": 1.0}
    assert recalls(np.eye(3)[[0, 0, 2, 1]], y, ["a", "b", "c"]) == {"a": 1.0, "b": 0.0, "c": 0.5}


@pytest.mark.slow
def test_server_applies_the_model_temperature_and_prior_correction(tmp_path, expression_card, fer_test, capsys):
    """The same bitstreams through real servers, one reading T = 3 from its model.json (same labels, lower confidence),
    one also a strong prior correction (labels move toward FER2013's rare classes, exactly as ModelCard.served says).
    Calibration shows a bar for each pass (it was silent for minutes until its table)."""
    from fermodels.evaluation.photos import server_probabilities
    from ferserver.process import ServerProcess

    hot = tmp_path / "expr-hot"
    shutil.copytree(expression_card.path, hot)
    meta = json.loads((hot / "model.json").read_text())
    meta["temperature"] = 3.0 * meta.get("temperature", 1.0)
    (hot / "model.json").write_text(json.dumps(meta))
    fair = tmp_path / "expr-fair"
    shutil.copytree(expression_card.path, fair)
    prior = [0.14, 0.014, 0.14, 0.256, 0.17, 0.1, 0.18]
    meta.update(temperature=1.0, prior_correction={"strength": 1.5, "train_prior": prior})
    (fair / "model.json").write_text(json.dumps(meta))
    faces = fer_test[0][:32]
    with ServerProcess("--model-dir", str(expression_card.path)) as a, ServerProcess("--model-dir", str(hot)) as b, ServerProcess("--model-dir", str(fair)) as c:
        p = server_probabilities(a.address, expression_card.path, faces)
        q = server_probabilities(b.address, hot, faces)
        r = server_probabilities(c.address, fair, faces)
        row = calibrate(c.address, fair, limit=600)  # fits from the card's prior, not FER2013's; more faces than one 512-face chunk
    assert (p.argmax(1) == q.argmax(1)).all()
    assert np.allclose(q, tempered(p, 3.0), atol=2e-4)
    expect = tempered(raw_probabilities(p, expression_card), 1.0, -1.5 * np.log(prior))  # undo the shipped card's rule, apply fair's
    assert np.allclose(r, expect, atol=2e-4)
    assert (r.argmax(1) != p.argmax(1)).any() and (r[:, 1] > p[:, 1]).all()  # disgust (1.4 % of training faces) gains on every face
    assert row["train_prior"] == pytest.approx(prior) and row["previous"]["prior_strength"] == 1.5
    assert row["test"]["faces"] == 600 and 0 <= row["prior_strength"] <= 1.5
    err = capsys.readouterr().err.replace("\r", "\n")
    for split in ("val", "test"):
        assert f"{expression_card.model_id}: {split} faces through the server: 100%" in err and "| 600/600 [" in err
    assert f"{expression_card.model_id}: fitting s and T on val: 100%" in err


def test_a_quick_look_cannot_overwrite_the_shipped_figures(tmp_path, capsys):
    """--write --limit N stored s and T fitted on N faces in model.json without a word; --out naming a file failed with a
    traceback after --write had already changed model.json. Both are refused before anything runs."""
    import pytest

    from fermodels.evaluation.calibration import main

    (tmp_path / "afile").write_text("")
    for argv, says in ((["--limit", "10", "--write"], "drop --limit"), (["--out", str(tmp_path / "afile"), "--write"], "is a file")):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2 and says in capsys.readouterr().err



def test_reliability_and_confusion_agree_with_ece_and_accuracy_and_replot_draws_them(tmp_path, capsys):
    """The bins the figure draws are ece's bins (their weighted gap is the ECE), the confusion matrix's diagonal is the
    accuracy; --replot draws calibration.png from calibration.json alone and refuses a folder without one."""
    import pytest
    from PIL import Image

    from fermodels.evaluation.calibration import _measures, confusion, main, reliability

    rng = np.random.default_rng(3)
    names = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
    p = rng.dirichlet(np.ones(7) * 0.5, size=500)
    y = rng.integers(0, 7, 500)
    bins = reliability(p, y)
    assert sum(b[0] for b in bins) == 500
    assert sum(b[0] / 500 * abs(b[2] - b[1]) for b in bins) == pytest.approx(ece(p, y))
    m = np.array(confusion(p, y, 7))
    assert m.sum() == 500 and (m.sum(1) == np.bincount(y, minlength=7)).all() and np.trace(m) == (p.argmax(1) == y).sum()
    split = {"faces": 500, "before": _measures(p, y, names), "after": _measures(p, y, names)}
    row = {"model": "m", "prior_strength": 0.6, "temperature": 0.8, "val": split, "test": split}
    (tmp_path / "calibration.json").write_text(json.dumps([row]))
    assert main(["--replot", "--out", str(tmp_path)]) == 0
    with Image.open(tmp_path / "calibration.png") as im:
        assert im.format == "PNG" and im.width > 400
    with pytest.raises(SystemExit) as e:
        main(["--replot", "--out", str(tmp_path / "none")])
    assert e.value.code == 2 and "has none" in capsys.readouterr().err
