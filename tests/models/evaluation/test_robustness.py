"""fereval --robustness on a sliver of PrivateTest: every perturbation row, every column, the unperturbed row consistent."""

from __future__ import annotations

import json

from fermodels.evaluation.cli import main
from fermodels.perturb import conditions


def test_robustness_table(tmp_path, card, expression_card, capsys):
    out = tmp_path / "rob"
    assert main(["--robustness", "--limit", "60", "--out", str(out), "--extra-classifier", "clean=models/weights/clean-classifier/best.pt"]) == 0
    r = json.loads((out / "robustness.json").read_text())
    assert r["faces"] == 60 and r["columns"] == ["deployed, uncompressed", "clean, uncompressed", f"{card.model_id}, q{card.default_quality}", expression_card.model_id]
    assert [(row["kind"], row["severity"]) for row in r["rows"]] == conditions()
    rows = {(row["kind"], row["severity"]): row for row in r["rows"]}
    none = rows[("none", 0)]
    assert all(0.4 < none[c] <= 1 for c in r["columns"])
    assert rows[("blur", 1.5)]["deployed, uncompressed"] < none["deployed, uncompressed"] - 0.1  # heavy blur must cost accuracy
    assert "perturbations: 100%" in capsys.readouterr().err.replace("\r", "\n")  # 15 settings of minutes each: a bar
    text = (out / "robustness.md").read_text()
    assert "mean of the perturbed rows" in text and "| occlude | 20 |" in text
    _is_png(out / "robustness.png")

    # --model-dir none: the expression layer's column alone, the same figures as beside the image codec
    alone = tmp_path / "alone"
    assert main(["--robustness", "--model-dir", "none", "--limit", "60", "--out", str(alone)]) == 0
    a = json.loads((alone / "robustness.json").read_text())
    assert a["columns"] == [expression_card.model_id]
    assert [row[expression_card.model_id] for row in a["rows"]] == [row[expression_card.model_id] for row in r["rows"]]
    assert main(["--robustness", "--model-dir", "none", "--expression-dir", "none", "--out", str(alone)]) == 2
    assert "nothing to measure" in capsys.readouterr().err


def test_model_dir_none_is_for_robustness_only(capsys):
    import pytest

    with pytest.raises(SystemExit) as e:
        main(["--model-dir", "none", "--limit", "10"])
    assert e.value.code == 2 and "--model-dir none goes with --robustness" in capsys.readouterr().err


def _is_png(path) -> None:
    from PIL import Image

    with Image.open(path) as im:
        assert im.format == "PNG" and im.width > 400 and im.height > 400


def test_replot_draws_the_figure_again_from_the_json(tmp_path):
    """python -m fermodels.evaluation.robustness FOLDER: the published figure redrawn from its committed JSON, without the
    15-minute measurement; a folder without robustness.json is one line and exit 2."""
    import shutil
    import subprocess
    import sys

    shutil.copy("docs/robustness/robustness.json", tmp_path / "robustness.json")
    r = subprocess.run([sys.executable, "-m", "fermodels.evaluation.robustness", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == str(tmp_path / "robustness.png"), r.stderr
    _is_png(tmp_path / "robustness.png")
    r = subprocess.run([sys.executable, "-m", "fermodels.evaluation.robustness", str(tmp_path / "none")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "robustness.json: no such file" in r.stderr and "Traceback" not in r.stderr
