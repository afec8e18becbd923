"""fereval --folder: labelled face crops from another collection, one subfolder per class, through a real server."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from fermodels import CLASS_NAMES
from fermodels.evaluation.cli import main
from fermodels.evaluation.folder import class_of, scores


def _folder(root, faces, labels, names):
    """FER2013 faces written as a collection would ship them: PNG crops at another size, folders under other names."""
    for i, (face, k) in enumerate(zip(faces, labels)):
        d = root / names[k]
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(face).resize((96, 96), Image.Resampling.BICUBIC).save(d / f"p{i % 4}_{i:04d}.png")  # four "people", LFW-style names


def test_class_names_and_aliases():
    assert [class_of(n) for n in ("Anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral", "HAPPY")] == [0, 1, 2, 3, 4, 5, 6, 3]
    assert class_of("contempt") is None
    s = scores(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]))
    assert s["accuracy"] == 0.75 and s["recall"] == {"angry": 1.0, "disgust": 2 / 3} and s["mean_recall"] == pytest.approx(5 / 6)
    assert s["answers"]["disgust"][:2] == [1, 2] and sum(s["answers"]["disgust"]) == 3 and "groups" not in s


def test_scores_by_group_weigh_every_person_the_same():
    """Three images of one person, all wrong, and one of another, right: 25 % of images, 50 % of people."""
    s = scores(np.array([1, 1, 1, 0]), np.array([0, 0, 0, 0]), ["a", "a", "a", "b"])
    assert s["accuracy"] == 0.25 and s["groups"]["count"] == 2 and s["groups"]["accuracy_over_groups"] == 0.5
    assert s["groups"]["largest"] == [{"group": "a", "images": 3, "accuracy": 0.0}, {"group": "b", "images": 1, "accuracy": 1.0}]


def test_folder_mode_through_a_real_server(server, fer_test, tmp_path):
    faces, labels = fer_test[0][:60], fer_test[1][:60]
    names = dict(enumerate(["anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral"]))
    _folder(tmp_path / "set", faces, labels, names)
    (tmp_path / "set" / "contempt").mkdir()
    Image.fromarray(faces[0]).save(tmp_path / "set" / "contempt" / "x.png")
    (tmp_path / "set" / "anger" / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "out"
    assert main(["--folder", str(tmp_path / "set"), "--server", server.address, "--out", str(out), "--group-by", r"^(.+?)_\d+$"]) == 0
    r = json.loads((out / "folder.json").read_text())
    assert r["faces"] == 60 and r["skipped_classes"] == {"contempt": 1} and len(r["unreadable"]) == 1
    g = r["rows"][1]["groups"]
    assert g["count"] == 4 and [b["group"] for b in g["largest"]] == ["p0", "p1", "p2", "p3"] and sum(b["images"] for b in g["largest"]) == 60
    assert g["accuracy_over_groups"] == pytest.approx(np.mean([b["accuracy"] for b in g["largest"]]))
    assert [row["path"].split(",")[0] for row in r["rows"]] == ["classifier", "fercodec-v1 (image codec)", "fercodec-v1-expr (expression layer)"]
    present = {CLASS_NAMES[k] for k in labels}
    for row in r["rows"]:
        assert 0.4 < row["accuracy"] <= 1 and set(row["recall"]) == present  # FER2013's own faces: about 70 %
    text = (out / "folder.md").read_text()
    assert "contempt (1 images)" in text and "| mean recall |" in text and "| true class |" in text and "4 groups (--group-by)" in text


def test_folder_mode_refuses_a_folder_without_class_subfolders(tmp_path, capsys):
    (tmp_path / "cats").mkdir()
    assert main(["--folder", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "no images in subfolders named after FER2013's classes" in err and "cats" in err and "Traceback" not in err
    assert main(["--folder", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert "not a directory" in capsys.readouterr().err


def test_folder_of_photos_with_detect_finds_aligns_and_counts_a_photo_without_a_face_wrong(server, fer_test, tmp_path):
    """--detect: FER2013 faces pasted into synthetic photos (fereval --photos' canvases) are found and aligned as
    ferclient send does; a photo of a coffee cup is a face not found, counted wrong on every path."""
    import skimage.data

    from fermodels.evaluation.photos import canvas

    faces, labels = fer_test[0][:30], fer_test[1][:30]
    rng = np.random.default_rng(0)
    for i, (face, k) in enumerate(zip(faces, labels)):
        d = tmp_path / "set" / CLASS_NAMES[k]
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(canvas(face, rng, 0.0)[0]).save(d / f"{i:03d}.png")
    Image.fromarray(skimage.data.coffee()).save(tmp_path / "set" / "happy" / "coffee.jpg")
    out = tmp_path / "out"
    assert main(["--folder", str(tmp_path / "set"), "--detect", "--server", server.address, "--out", str(out)]) == 0
    r = json.loads((out / "folder.json").read_text())
    assert r["faces"] == 31 and r["detect"] and 1 <= len(r["missed"]) <= 8  # the coffee cup at least
    for row in r["rows"]:
        assert row["answers"]["happy"][-1] >= 1 and 0.3 < row["accuracy"] < 0.97  # the cup: a "no face" answer
    assert "No face found in" in (out / "folder.md").read_text()


def test_detect_or_group_by_without_folder_and_a_bad_pattern_are_usage_errors(capsys):
    for argv, message in ((["--detect"], "--detect and --group-by go with --folder"), (["--group-by", "(.+)"], "go with --folder"),
                          (["--folder", "x", "--group-by", "(unclosed"], "not a regular expression"),
                          (["--folder", "x", "--group-by", "no_group"], "needs a capture group")):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2 and message in capsys.readouterr().err


def test_folder_mode_serves_the_model_dir_it_measures(fer_test, tmp_path):
    """fereval --folder --model-dir X starts its ferserver with X: a copy of the shipped model whose classifier always
    answers disgust is answered disgust through the server too, not by the bundled classifier (same model tag)."""
    import torch

    from ferwire.card import DEFAULT_MODEL_DIR
    from fermodels.export import replace_classifier

    clf = torch.load(DEFAULT_MODEL_DIR / "classifier.pt", map_location="cpu", weights_only=True)
    for k, v in clf["state_dict"].items():
        if k.endswith("head.5.bias"):  # each member's last layer: disgust wins whatever the face
            v.copy_(torch.tensor([0, 1e4, 0, 0, 0, 0, 0], dtype=v.dtype))
    torch.save(clf, tmp_path / "disgust.pt")
    replace_classifier(DEFAULT_MODEL_DIR, [tmp_path / "disgust.pt"], tmp_path / "model")
    faces, labels = fer_test[0][:20], fer_test[1][:20]
    _folder(tmp_path / "set", faces, labels, dict(enumerate(CLASS_NAMES)))
    out = tmp_path / "out"
    assert main(["--folder", str(tmp_path / "set"), "--model-dir", str(tmp_path / "model"), "--expression-dir", "none", "--out", str(out)]) == 0
    rows = json.loads((out / "folder.json").read_text())["rows"]
    for row in rows:  # the uncompressed classifier and the served model: every face called disgust
        assert all(a[1] == sum(a) for a in row["answers"].values()), row["path"]
