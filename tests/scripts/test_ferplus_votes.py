"""scripts/ferplus_votes.py on real FER2013 faces written as FER+ lays them out: each npz face finds its own image
(its votes, in fermodels' class order), a face FER+ left out gets none."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from fermodels.data import load_split

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = {"train": ("Training", "FER2013Train"), "val": ("PublicTest", "FER2013Valid"), "test": ("PrivateTest", "FER2013Test")}


def test_matches_each_face_to_its_own_image(tmp_path):
    # A small archive: 40 faces per split, FER+'s copies written as PNG in shuffled order, one of each split left out.
    rng = np.random.default_rng(0)
    arrays, rows, truth = {}, ["Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF"], {}
    n = 0
    for split, (usage, folder) in FOLDERS.items():
        x, y = load_split(split, limit=40)
        arrays[f"x_{split}"], arrays[f"y_{split}"] = x, y
        (tmp_path / "img" / folder).mkdir(parents=True)
        want = np.zeros((40, 7), np.uint8)
        for i in rng.permutation(40)[:-1]:  # the last face of the shuffle is one FER+ dropped
            name = f"fer{n:07d}.png"
            n += 1
            Image.fromarray(x[i]).save(tmp_path / "img" / folder / name)
            plus = rng.integers(0, 5, 10)
            plus[7:] = 0
            rows.append(f"{usage},{name}," + ",".join(map(str, plus)))
            want[i] = plus[[4, 5, 6, 1, 3, 2, 0]]  # ours: angry, disgust, fear, happy, sad, surprise, neutral
        truth[split] = want
    np.savez(tmp_path / "fer.npz", **arrays)
    (tmp_path / "fer2013new.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "votes.npz"
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "ferplus_votes.py"), str(tmp_path / "fer2013new.csv"), str(tmp_path / "img"),
                        "--data", str(tmp_path / "fer.npz"), "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    with np.load(out) as d:
        for split, want in truth.items():
            assert np.array_equal(d[f"votes_{split}"], want), split
    assert "39 of 40 matched" in r.stderr
