"""fereval on a sliver of real FER2013 PrivateTest with the shipped model: shapes and bookkeeping, not quality."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fermodels.evaluation.cli import main


def test_main_writes_every_output(tmp_path, card):
    out = tmp_path / "res"
    assert main(["--limit", "40", "--baselines", "jpeg", "--out", str(out)]) == 0
    for name in ("results.json", "results.md", "rate_accuracy.png", "rate_psnr.png"):
        assert (out / name).stat().st_size > 0
    r = json.loads((out / "results.json").read_text())
    assert r["faces"] == 40 and r["split"] == "test"
    assert {p["codec"] for p in r["points"]} == {"fercodec", "fercodec-expr", "jpeg"}  # the bundled expression layer is measured too
    assert len([p for p in r["points"] if p["codec"] == "fercodec"]) == card.num_qualities
    (expr,) = [p for p in r["points"] if p["codec"] == "fercodec-expr"]
    assert expr["psnr"] is None and 0 < expr["bytes"] < 100 and r["expression"]["id"].startswith("fercodec-v1-expr-")
    assert "fercodec-expr/deployed" in r["bytes_within_1_point"] and "## fercodec-expr (the expression layer" in (out / "results.md").read_text()
    assert set(r["bd_rate"]) == {"fercodec/deployed"} and set(r["bd_rate"]["fercodec/deployed"]) == {"jpeg/deployed"}
    assert r["command"].startswith("fereval --limit 40") and r["machine"]["cpu_count"] and r["commit"] not in ("", "unknown")
    assert "fercodec/deployed" in (out / "results.md").read_text()
    assert r["default_quality"]["quality"] in range(card.num_qualities) and "## Default quality" in (out / "results.md").read_text()


def test_bad_inputs_are_one_line(tmp_path, capsys):
    assert main(["--data", str(tmp_path / "nope.npz"), "--out", str(tmp_path)]) == 2
    assert "FER2013 archive not found" in capsys.readouterr().err
    assert main(["--model-dir", str(tmp_path), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "not a fercodec model directory" in err and len(err.strip().splitlines()) == 1
    assert main(["--model-dir", "fercodec-v1-expr", "--out", str(tmp_path)]) == 2
    assert "pass it as --expression-dir" in capsys.readouterr().err
    # refused before minutes of measuring, not after the image codec's pass (an audit, 2026-12-08)
    (tmp_path / "afile").write_text("")
    for flags, says in ((["--out", str(tmp_path / "afile")], "is a file; give a folder"),
                        (["--expression-dir", "fercodec-v1", "--out", str(tmp_path)], "holds a model of kind 'image', not the expression layer"),
                        (["--data", str(tmp_path / "afile"), "--out", str(tmp_path / "o")], "cannot be read (EOFError"),
                        (["--compare", f"a={tmp_path / 'a.json'}", "--compare", f"b={tmp_path / 'b.json'}", "--out", str(tmp_path)], "their split differ")):
        (tmp_path / "a.json").write_text(json.dumps({"split": "test", "faces": 20}))
        (tmp_path / "b.json").write_text(json.dumps({"split": "val", "faces": 20}))
        assert main(flags) == 2
        err = capsys.readouterr().err
        assert says in err and len(err.strip().splitlines()) == 1, err
    for flags, says in ((["--device", "bogus"], "must be cpu, cuda, cuda:N or auto"), (["--server", "localhost:1"], "--server goes with --photos or --folder"),
                        (["--seed", "3"], "--seed go with --photos")):
        with pytest.raises(SystemExit):
            main(flags)
        assert says in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--baselines", "gif"])
    # a 20-face or val measurement went into the shipped card, under its "FER2013 PrivateTest" heading
    for flags in (["--limit", "20"], ["--split", "val"], ["--limit", "20", "--model-dir", "fercodec-v1", "--expression-dir", "none"]):
        with pytest.raises(SystemExit) as e:
            main([*flags, "--update-card", "--out", str(tmp_path)])
        assert e.value.code == 2 and "--update-card into a shipped model's card" in capsys.readouterr().err


def test_update_card_fills_model_json_and_the_marked_block(tmp_path, card, faces):
    import shutil

    from ferwire.card import EXPRESSION_MODEL_DIR

    # Copies of both shipped models: --update-card writes into each model directory it measured.
    d, e = tmp_path / "model", tmp_path / "expr"
    shutil.copytree(card.path, d)
    shutil.copytree(EXPRESSION_MODEL_DIR, e)
    shipped = (EXPRESSION_MODEL_DIR / "model.json").read_text()
    (d / "MODEL_CARD.md").write_text("# card\n\nintro\n\n<!-- metrics:start -->\nold\n<!-- metrics:end -->\n\nafter\n")
    args = ["--model-dir", str(d), "--expression-dir", str(e), "--limit", "20", "--baselines", "none", "--out", str(tmp_path / "res"), "--update-card"]
    assert main(args) == 0
    assert json.loads((e / "model.json").read_text())["metrics"]["faces"] == 20 and "| fercodec-expr | q0 |" in (e / "MODEL_CARD.md").read_text()
    assert (EXPRESSION_MODEL_DIR / "model.json").read_text() == shipped
    m = json.loads((d / "model.json").read_text())["metrics"]
    assert m["faces"] == 20 and set(m["bits_per_pixel"]) == {str(q) for q in range(card.num_qualities)}
    text = (d / "MODEL_CARD.md").read_text()
    assert text.startswith("# card\n\nintro\n\n<!-- metrics:start -->\n") and text.endswith("<!-- metrics:end -->\n\nafter\n")
    assert "old" not in text and "| fercodec | q0 |" in text
    assert np.isfinite(m["uncompressed_accuracy"])


def test_a_quick_look_writes_outside_the_published_results(tmp_path, monkeypatch):
    """--out defaulted to docs/results: `fereval --limit 30` from the checkout replaced the committed 3,589-face tables."""
    from fermodels.evaluation.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["--limit", "10", "--baselines", "none", "--expression-dir", "none", "--threads", "1"]) == 0
    assert (tmp_path / "runs" / "fereval" / "results.json").is_file() and not (tmp_path / "docs").exists()
