"""python -m fermodels.evaluation.crowd: the shipped classifier scored against FER2013's labels and a crowd's majority."""

from __future__ import annotations

import numpy as np

from fermodels.data import load_split
from fermodels.evaluation.crowd import main
from ferwire.card import DEFAULT_MODEL_DIR


def _votes(tmp_path, val_votes):
    n = {s: len(load_split(s)[1]) for s in ("train", "val", "test")}
    path = tmp_path / "votes.npz"
    np.savez(path, votes_train=np.zeros((n["train"], 7), np.uint8), votes_val=val_votes, votes_test=np.zeros((n["test"], 7), np.uint8))
    return path


def _scores(capsys):
    line = capsys.readouterr().out.strip()
    return [float(part.split(" %")[0]) for part in line.split(": ", 1)[1].split(", ")]


def test_a_crowd_that_agrees_with_fer2013_scores_the_same(tmp_path, capsys):
    _, labels = load_split("val")
    agree = np.zeros((len(labels), 7), np.uint8)
    agree[np.arange(len(labels)), labels] = 10
    assert main(["--votes", str(_votes(tmp_path, agree)), "--limit", "64", str(DEFAULT_MODEL_DIR)]) == 0
    fer, crowd = _scores(capsys)
    assert fer == crowd and fer > 50
    # A crowd that always names the next class: the model mostly disagrees with it.
    shifted = np.roll(agree, 1, axis=1)
    assert main(["--votes", str(_votes(tmp_path, shifted)), "--limit", "64", str(DEFAULT_MODEL_DIR)]) == 0
    fer2, crowd2 = _scores(capsys)
    assert fer2 == fer and crowd2 < 25


def test_votes_for_another_archive_are_one_line(tmp_path, capsys):
    assert main(["--votes", str(_votes(tmp_path, np.zeros((10, 7), np.uint8))), str(DEFAULT_MODEL_DIR)]) == 2
    err = capsys.readouterr().err
    assert "written for another fer2013.npz" in err and len(err.strip().splitlines()) == 1
