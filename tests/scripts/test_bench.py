"""make bench's quick mode end to end: real servers for every path, a table with every row and sane figures."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PATHS = ("fercodec", "fercodec_expr", "naive", "jpeg")


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench.py"), "--quick", "--out", str(out)], capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads((out / "serving.json").read_text()), (out / "serving.md").read_text(), r, out


@pytest.mark.slow
def test_quick_bench_measures_every_path_at_every_level(quick):
    s, md, r, _ = quick
    assert set(s["rows"]) == set(PATHS)
    assert s["levels"] == [1, 32]
    for key in PATHS:
        row = s["rows"][key]
        assert [lv["in_flight"] for lv in row["levels"]] == s["levels"]
        for lv in row["levels"]:
            assert lv["errors"] == 0, (key, lv["first_error"])
            assert lv["faces"] > 0 and lv["faces_per_s"] > 0
            assert 0 < lv["p50_ms"] <= lv["p99_ms"] < 30_000
            assert 0 < lv["server_cpu_s_per_face"] < 1.0, (key, lv)  # /proc saw the server work
        # every server reads its faces right: far above chance (1/7) on 64 faces
        assert row["accuracy"] > 0.45, (key, row["accuracy"])
    # progress went to stderr, the table to stdout
    assert "in flight" in r.stderr and "| path |" in r.stdout


@pytest.mark.slow
def test_quick_bench_bytes_order_and_report(quick):
    s, md, _, _ = quick
    b = {k: s["rows"][k]["levels"][0]["bytes_per_face"] for k in PATHS}
    # the expression layer's latent < the image codec's bitstream < CompressAI's strings of the same latent < the JPEG file
    assert b["fercodec_expr"] < b["fercodec"] < b["naive"] < b["jpeg"], b
    payload = s["rows"]["naive"]["levels"][0]["payload_bytes_per_face"]
    assert payload + 2 <= b["naive"] <= payload + 4  # proto framing only; the naive payload counts its shape bytes
    jq = s["jpeg_quality"]
    assert jq["measured"] and jq["quality"] in [t["quality"] for t in jq["tried"]]
    assert s["commit"] and s["machine"] and s["date"]
    for key in ("fercodec", "fercodec_expr"):
        g = s["goals"][key]
        assert set(g["vs_naive"]) == {"1", "32"} and isinstance(g["p99_at_32"], bool)
        # the verdicts follow the figures
        f, n = s["rows"][key]["levels"][1], s["rows"]["naive"]["levels"][1]
        assert g["vs_naive"]["32"] == (f["faces_per_s"] >= 5 * n["faces_per_s"])
        assert g["p99_at_32"] == (f["p99_ms"] <= 50)
    table, rest = md.split("Accuracy of each path", 1)
    accuracy = rest.split("Where ferserver", 1)[0]
    for key in PATHS:
        what = s["rows"][key]["what"]
        for level in s["levels"]:
            assert sum(line.startswith(f"| {what} | {level} | ") for line in table.splitlines()) == 1, (what, level)
        assert f"| {what} | {100 * s['rows'][key]['accuracy']:.1f} % |" in accuracy
    assert "Goals (issue 18)" in md
    # head to head: each fercodec path and (c) in alternating windows, one ratio per pair, in the report
    h = s["head_to_head"]
    assert h["rounds"] == 2 and set(h["ratios"]) == {"fercodec", "fercodec_expr"}
    for key, by_level in h["ratios"].items():
        assert set(by_level) == {"1", "32"} and all(len(r) == 2 and all(0 < x < 100 for x in r) for r in by_level.values())
        h2h = md.split("Head to head against (c)", 1)[1].split("Open loop:", 1)[0]
        assert sum(line.startswith(f"| {s['rows'][key]['what']} | ") for line in h2h.splitlines()) == 1
    # open loop: each fercodec path and (c) in alternating windows of random arrivals, a row per path and rate
    o = s["open_loop"]
    assert o["rounds"] == 2 and set(o["windows"]) == {"fercodec", "fercodec_expr"}
    for key, by_rate in o["windows"].items():
        assert list(by_rate) == ["50.0"]
        for side in ("ours", "jpeg"):
            assert len(by_rate["50.0"][side]) == 2 and all(w["errors"] == 0 and 0 < w["p50_ms"] <= w["p99_ms"] < 1000 for w in by_rate["50.0"][side])
        rows = [line for line in md.split("Open loop:", 1)[1].splitlines() if line.startswith(f"| {s['rows'][key]['what']} | 50 | ")]
        assert len(rows) == 1 and rows[0].endswith("| 0 |"), rows
    assert not any(math.isnan(v) for v in b.values())


@pytest.mark.slow
def test_quick_bench_draws_its_figure_and_replot_draws_it_again(quick):
    """serving.png beside the table (throughput, p99 and head-to-head panels); --replot draws it from serving.json
    alone, measuring nothing, and says what is missing when there is no serving.json."""
    from PIL import Image

    _, _, r, out = quick
    png = out / "serving.png"
    first = Image.open(png)
    assert first.format == "PNG" and first.size[0] > 2.5 * first.size[1]  # three panels side by side
    png.unlink()
    again = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench.py"), "--replot", "--out", str(out)], capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and Image.open(png).size == first.size, again.stderr[-2000:]
    (out / "serving.json").rename(out / "moved.json")
    try:
        missing = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench.py"), "--replot", "--out", str(out)], capture_output=True, text=True, timeout=60)
    finally:
        (out / "moved.json").rename(out / "serving.json")
    assert missing.returncode != 0 and "--replot needs" in missing.stderr and "Traceback" not in missing.stderr
