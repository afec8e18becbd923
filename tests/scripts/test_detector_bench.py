"""scripts/detector_bench.py on a small bench of the same layout: the turned-photo comparison finds the astronaut stored turned
(ferclient.faces.turn_boxes, which it turns the truth with, is tested in tests/client/test_faces.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import skimage.data
from PIL import Image

from ..client.test_faces import ASTRONAUT_FACE

ROOT = Path(__file__).resolve().parents[2]


def test_turned_comparison_on_a_small_bench(tmp_path):
    bench = tmp_path / "bench"
    (bench / "faces").mkdir(parents=True)
    (bench / "nofaces").mkdir()
    Image.fromarray(skimage.data.astronaut()).save(bench / "faces" / "astronaut.png")
    Image.fromarray(skimage.data.coffee()).save(bench / "nofaces" / "coffee.png")
    manifest = {"faces": [{"file": "faces/astronaut.png", "boxes": [list(ASTRONAUT_FACE)], "ignore": []}],
                "nofaces": [{"file": "nofaces/coffee.png"}], "sources": []}
    (bench / "manifest.json").write_text(json.dumps(manifest))
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "detector_bench.py"), str(bench), "--turned", "--out", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    without, with_turned = json.loads((out / "turned.json").read_text())["rows"]
    assert not without["turned_passes"] and with_turned["turned_passes"]
    for row in (without, with_turned):
        assert row["face_free"]["false_faces_per_photo"] == 0
        assert row["upright"]["recall"] == 1 and row["upright"]["precision"] == 1
        # Turned 90 degrees, the astronaut is found either way (the upright pass finds her); her box is right.
        assert row["stored_turned"]["recall"] == 1
    assert "| yes |" in (out / "turned.md").read_text()
