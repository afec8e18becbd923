"""ferexport writes a model directory all at once: an interrupt or an error leaves the directory as it was, a signal
while the files move in waits for them, and an export over an existing model says what it left stale."""

from __future__ import annotations

import json
import os
import shutil
import signal

import pytest

from fermodels import export
from ferwire.card import DEFAULT_MODEL_DIR


@pytest.fixture
def model(tmp_path):
    d = tmp_path / "m"
    shutil.copytree(DEFAULT_MODEL_DIR, d)
    return d


def _files(d):
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def _replace_in_place(d, *extra):
    return export.main(["--codec", str(d), "--classifier-only", "--classifier", str(d / "classifier.pt"), "--out", str(d), *extra])


def test_an_interrupted_export_leaves_the_directory_as_it_was(model, monkeypatch, capsys):
    before = _files(model)

    def interrupted(*a, **k):  # called once classifier.pt is written: before, it was already in the model directory
        raise KeyboardInterrupt

    monkeypatch.setattr(export, "_classifier_record", interrupted)
    assert _replace_in_place(model) == 130
    assert f"{model} is unchanged" in capsys.readouterr().err
    assert _files(model) == before
    assert [p.name for p in model.parent.iterdir()] == ["m"]  # no staging folder left beside it


def test_a_failed_export_into_a_new_directory_creates_nothing(model, tmp_path, monkeypatch, capsys):
    def full_disk(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(export, "_classifier_record", full_disk)
    out = tmp_path / "new"
    assert export.main(["--codec", str(model), "--classifier-only", "--classifier", str(model / "classifier.pt"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ferexport: ") and "No space left" in err and len(err.splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_a_new_model_directory_has_the_usual_permissions(model, tmp_path):
    """Not mkdtemp's 0700: a server run as another user (the Docker image's) must be able to read it."""
    out = tmp_path / "new"
    assert export.main(["--codec", str(model), "--classifier-only", "--classifier", str(model / "classifier.pt"), "--out", str(out)]) == 0
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask


def test_a_signal_while_the_files_move_in_waits_for_them(model, monkeypatch, capsys):
    moved, real = [], os.replace

    def replace_then_ctrl_c(src, dst):
        real(src, dst)
        moved.append(os.path.basename(dst))
        if len(moved) == 1:
            signal.raise_signal(signal.SIGINT)  # Ctrl-C after the first file: the rest must still move in

    monkeypatch.setattr(export.os, "replace", replace_then_ctrl_c)
    # Ctrl-C as from a terminal: a background shell (CI's) starts Python with SIGINT ignored, and then it raises nothing
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        meta = json.loads((model / "model.json").read_text())
        code = _replace_in_place(model, "--default-quality", "2")
        handler = signal.getsignal(signal.SIGINT)
    finally:
        signal.signal(signal.SIGINT, before)
    assert code == 130
    assert moved == ["classifier.pt", "model.json"]
    assert f"{model} holds the new model" in capsys.readouterr().err
    assert json.loads((model / "model.json").read_text())["default_quality"] == 2 != meta["default_quality"]
    assert handler is signal.default_int_handler  # put back as it was


def test_an_export_over_a_measured_model_says_what_is_stale(model, capsys):
    assert _replace_in_place(model) == 0
    err = capsys.readouterr().err
    assert "stale or cleared" in err and "metrics" in err and "temperature" in err and "MODEL_CARD.md" in err
    assert "classifier.int8.pt" in err and "prior_correction, kept" in err
    assert _replace_in_place(model) == 0  # nothing measured any more: nothing to say but the int8 file's
    assert "metrics" not in capsys.readouterr().err


def test_re_exporting_a_model_directory_keeps_its_default_quality(model, tmp_path):
    meta = json.loads((model / "model.json").read_text())
    meta["default_quality"] = 6
    (model / "model.json").write_text(json.dumps(meta))
    assert export.export(str(model), None, tmp_path / "again", limit=256)["default_quality"] == 6
    assert export.export(str(model), None, tmp_path / "given", limit=256, default_quality=1)["default_quality"] == 1
    assert json.loads((tmp_path / "again" / "model.json").read_text())["default_quality"] == 6


@pytest.mark.parametrize("name", ["bad/name x", "", ".hidden", "x" * 124])
def test_a_name_no_client_could_pull_is_refused(model, name, capsys):
    """--name "bad/name x" exported model "bad/name x-2def": ferserver served it, and clients refused its bundle
    ("manifest names no usable model id"); --name "" fell back to fercodec-v1 without a word."""
    with pytest.raises(SystemExit) as e:
        export.main(["--codec", str(DEFAULT_MODEL_DIR), "--classifier-only", "--out", str(model), "--name", name])
    assert e.value.code == 2 and "argument --name: must be letters, digits" in capsys.readouterr().err
