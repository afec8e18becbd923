"""scripts/face_crops.py on a few val faces: the folder fereval --folder reads, and the found counts."""

import re

from scripts.face_crops import main


def test_writes_class_folders_and_counts_the_crops_found(tmp_path, capsys):
    assert main([str(tmp_path / "crops"), "--limit", "40"]) == 0
    pngs = sorted((tmp_path / "crops").glob("*/*.png"))
    assert len(pngs) == 40 and {p.parent.name for p in pngs} <= {"angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"}
    plain, found = map(int, re.search(r"found in (\d+) .* as they are, (\d+) ", capsys.readouterr().out).groups())
    assert plain < found >= 38  # the close-up pass finds crops the first pass misses
