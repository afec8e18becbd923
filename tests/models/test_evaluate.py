"""fereval on a sliver of real FER2013 PrivateTest with the shipped model: shapes and bookkeeping, not quality."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from fermodels import evaluate as ev
from fermodels.bundle import load_classifier
from fermodels.data import load_split
from ferwire.card import ModelCard


@pytest.fixture(scope="module")
def faces():
    return load_split("test", limit=50)


@pytest.fixture(scope="module")
def card():
    return ModelCard.load()


def test_bd_rate_known_answers():
    b = [(100, 0.40), (200, 0.50), (400, 0.60), (800, 0.65)]
    half = [(n / 2, a) for n, a in b]
    assert ev.bd_rate(half, b) == pytest.approx(-50.0)
    assert ev.bd_rate(b, half) == pytest.approx(100.0)
    assert ev.bd_rate(b, b) == pytest.approx(0.0, abs=1e-9)
    # A dominated point (more bytes, less accuracy) and the order of points change nothing.
    assert ev.bd_rate(half[::-1] + [(700, 0.45)], b) == pytest.approx(-50.0)
    assert ev.bd_rate([(10, 0.1), (20, 0.2)], b) is None
    assert ev.bd_rate([(10, 0.5)], b) is None


def test_bytes_at_accuracy():
    b = [(100, 0.40), (400, 0.60)]
    assert ev.bytes_at_accuracy(b, 0.50) == pytest.approx(200.0)
    assert ev.bytes_at_accuracy(b, 0.30) == pytest.approx(100.0)
    assert ev.bytes_at_accuracy(b, 0.61) is None


def test_default_quality_rule():
    pts = [{"codec": "fercodec", "quality": q, "bytes": 100.0 * (q + 1), "accuracy": a} for q, a in enumerate([0.60, 0.652, 0.656, 0.655])]
    pts.append({"codec": "jpeg", "quality": None, "bytes": 50.0, "accuracy": 0.70})
    # The cheapest quality within half a point of uncompressed, baselines ignored.
    assert ev.default_quality(pts, 0.660) == {"quality": 2, "within_tolerance": True, "gap_points": 0.4, "bytes": 300.0}
    # None within: the most accurate one, flagged.
    d = ev.default_quality(pts, 0.670)
    assert d["quality"] == 2 and not d["within_tolerance"] and d["gap_points"] == pytest.approx(1.4)


def test_jpeg_bytes_rise_with_quality(card, faces):
    x, y = faces
    clf = load_classifier(card.file("classifier.pt"))
    points = ev.evaluate_baseline("jpeg", x, y, {"deployed": clf}, settings=[10, 50, 90])
    sizes = [p["bytes"] for p in points]
    assert sizes == sorted(sizes) and len(set(sizes)) == 3
    for p in points:
        assert 0 <= p["accuracies"]["deployed"] == p["accuracy"] <= 1
        assert math.isfinite(p["psnr"]) and 0 < p["ms_ssim"] <= 1


def test_codec_one_point_per_quality(card, faces):
    x, y = faces
    points = ev.evaluate_codec(card, x, y)
    assert [p["quality"] for p in points] == list(range(card.num_qualities))
    for p in points:
        assert p["bpp"] == pytest.approx(8 * p["bytes"] / (48 * 48))
        assert p["bytes"] > 8  # more than the bitstream header
        assert math.isfinite(p["psnr"]) and math.isfinite(p["ms_ssim"])
        assert 0 <= p["accuracy"] <= 1


def test_main_writes_every_output(tmp_path, card):
    out = tmp_path / "res"
    assert ev.main(["--limit", "40", "--baselines", "jpeg", "--out", str(out)]) == 0
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
    assert r["command"].startswith("fereval --limit 40") and r["machine"]["cpu_count"]
    assert "fercodec/deployed" in (out / "results.md").read_text()
    assert r["default_quality"]["quality"] in range(card.num_qualities) and "## Default quality" in (out / "results.md").read_text()


def test_bad_inputs_are_one_line(tmp_path, capsys):
    assert ev.main(["--data", str(tmp_path / "nope.npz"), "--out", str(tmp_path)]) == 2
    assert "FER2013 archive not found" in capsys.readouterr().err
    assert ev.main(["--model-dir", str(tmp_path), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "not a fercodec model directory" in err and len(err.strip().splitlines()) == 1
    assert ev.main(["--model-dir", "fercodec-v1-expr", "--out", str(tmp_path)]) == 2
    assert "pass it as --expression-dir" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        ev.main(["--baselines", "gif"])


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
    assert ev.main(args) == 0
    assert json.loads((e / "model.json").read_text())["metrics"]["faces"] == 20 and "| fercodec-expr | q0 |" in (e / "MODEL_CARD.md").read_text()
    assert (EXPRESSION_MODEL_DIR / "model.json").read_text() == shipped
    m = json.loads((d / "model.json").read_text())["metrics"]
    assert m["faces"] == 20 and set(m["bits_per_pixel"]) == {str(q) for q in range(card.num_qualities)}
    text = (d / "MODEL_CARD.md").read_text()
    assert text.startswith("# card\n\nintro\n\n<!-- metrics:start -->\n") and text.endswith("<!-- metrics:end -->\n\nafter\n")
    assert "old" not in text and "| fercodec | q0 |" in text
    assert np.isfinite(m["uncompressed_accuracy"])


def test_bd_accuracy_known_answer():
    from fermodels.evaluate import bd_accuracy

    a = [(100, 0.50), (200, 0.60), (400, 0.70)]
    b = [(n, acc - 0.02) for n, acc in a]
    assert bd_accuracy(a, b) == pytest.approx(2.0)
    assert bd_accuracy(a, [(1000, 0.5), (2000, 0.6)]) is None
