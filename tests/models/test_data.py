"""FER2013's archive read by every tool: a damaged file, or one that is not the archive, is one line, not a traceback."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from fermodels.data import DEFAULT_DATA, load_labels, load_split


def test_a_damaged_or_wrong_archive_is_one_line(tmp_path):
    """Each of these was a traceback in fertrain, ferexport, fereval and fermodels.quantize (an audit, 2026-12-08)."""
    with open(DEFAULT_DATA, "rb") as f:
        (tmp_path / "cut.npz").write_bytes(f.read(100_000))
    (tmp_path / "empty.npz").write_bytes(b"")
    (tmp_path / "text.npz").write_text("hello\n")
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with open(tmp_path / "one.npz", "wb") as f:  # a single .npy array under an .npz name
        np.save(f, np.zeros(3))
    shutil.copy(DEFAULT_DATA, tmp_path / "flipped.npz")
    with open(tmp_path / "flipped.npz", "r+b") as f:  # inside x_train's compressed bytes
        f.seek(5000)
        f.write(b"\0" * 2000)
    for name, split, says in (("cut", "val", "cannot be read (BadZipFile"), ("empty", "val", "cannot be read (EOFError"),
                              ("text", "val", "is not an .npz archive"), ("one", "val", "holds one array, not an .npz archive"), ("other", "val", "has no x_val, y_val: not FER2013's archive"),
                              ("flipped", "train", "cannot be read (BadZipFile: Bad CRC-32")):
        with pytest.raises(ValueError) as e:
            load_split(split, tmp_path / f"{name}.npz", limit=10)
        assert str(e.value).startswith(str(tmp_path / f"{name}.npz")) and says in str(e.value) and "\n" not in str(e.value), str(e.value)
    with pytest.raises(ValueError, match="has no y_test"):
        load_labels("test", tmp_path / "other.npz")
