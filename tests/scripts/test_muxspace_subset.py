"""scripts/muxspace_subset.py on a small checkout of the same layout: classes mapped, contempt left out, the cap drawn reproducibly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "muxspace_subset.py"), *args], capture_output=True, text=True, timeout=60)


def test_builds_one_folder_per_fer2013_class(tmp_path):
    src = tmp_path / "checkout"
    (src / "data").mkdir(parents=True)
    (src / "images").mkdir()
    rows = ["user.id,image,emotion"]
    for i in range(30):
        rows.append(f"1,n{i}.jpg,NEUTRAL" if i % 2 else f"1,n{i}.jpg,neutral")  # the legend's case varies
    rows += ["2,a.jpg,anger", "2,h.jpg,happiness", "2,s.jpg,sadness ", "2,c.jpg,contempt", "2,gone.jpg,fear"]  # gone.jpg is not in images/
    (src / "data" / "legend.csv").write_text("\n".join(rows) + "\n")
    for name in [f"n{i}.jpg" for i in range(30)] + ["a.jpg", "h.jpg", "s.jpg", "c.jpg"]:
        (src / "images" / name).write_bytes(b"jpeg")
    picks = []
    for out in (tmp_path / "one", tmp_path / "two"):
        r = _run(str(src), str(out), "--per-class", "10")
        assert r.returncode == 0, r.stderr
        assert sorted(p.name for p in out.iterdir()) == ["angry", "happy", "neutral", "sad"]
        assert [p.name for p in (out / "angry").iterdir()] == ["a.jpg"] and (out / "angry" / "a.jpg").resolve() == (src / "images" / "a.jpg").resolve()
        picks.append(sorted(p.name for p in (out / "neutral").iterdir()))
    assert len(picks[0]) == 10 and picks[0] == picks[1]  # capped, and the same draw each time
    assert "neutral: 10 of 30" in r.stdout


def test_refuses_a_wrong_checkout_or_an_existing_folder(tmp_path):
    r = _run(str(tmp_path), str(tmp_path / "out"))
    assert r.returncode == 2 and "legend.csv: not found" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "legend.csv").write_text("user.id,image,emotion\n")
    r = _run(str(tmp_path), str(tmp_path))
    assert r.returncode == 2 and "exists" in r.stderr


def test_parts_split_people_not_photos(tmp_path):
    """--part train|val|test: every photo of one person lands in the same part, and the parts cover the collection once."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import muxspace_subset as m
    finally:
        sys.path.pop(0)
    assert m.person("George_W_Bush_0012.jpg") == "George_W_Bush" and m.person("HrithikRoshan_17.jpg") == "HrithikRoshan"
    assert m.person("facial-expressions_2868588k.jpg") == "facial-expressions"
    src = tmp_path / "checkout"
    (src / "data").mkdir(parents=True)
    (src / "images").mkdir()
    names = [f"Person_{p}_{i:04d}.jpg" for p in range(40) for i in range(1, 4)]
    (src / "data" / "legend.csv").write_text("user.id,image,emotion\n" + "".join(f"1,{n},neutral\n" for n in names))
    for n in names:
        (src / "images" / n).write_bytes(b"jpeg")
    seen = {}
    for part in ("train", "val", "test"):
        r = _run(str(src), str(tmp_path / part), "--part", part, "--per-class", "1000")
        assert r.returncode == 0, r.stderr
        got = [p.name for p in (tmp_path / part / "neutral").iterdir()] if (tmp_path / part / "neutral").is_dir() else []
        assert all(m.part_of(n) == part for n in got)
        seen.update({n: part for n in got})
    assert sorted(seen) == sorted(names)  # each photo in exactly one part
    assert all(len({seen[f"Person_{p}_{i:04d}.jpg"] for i in range(1, 4)}) == 1 for p in range(40))  # a person's photos together
    assert len(set(seen.values())) == 3
