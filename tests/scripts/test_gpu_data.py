"""scripts/gpu_data.py: the faces that travel to a GPU machine come back bit for bit."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _module():
    spec = importlib.util.spec_from_file_location("gpu_data", ROOT / "scripts" / "gpu_data.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_pack_unpack_is_lossless_and_smaller(tmp_path, fer_test):
    gpu_data = _module()
    x, y = fer_test
    src = tmp_path / "fer.npz"
    np.savez(src, x_train=x[:550], y_train=y[:550], x_val=x[550:600], y_val=y[550:600])  # partial tiles: the padding must not come back
    gpu_data.pack(str(tmp_path / "packed.npz"), str(src))
    gpu_data.unpack(str(tmp_path / "packed.npz"), str(tmp_path / "out.npz"))
    got, want = np.load(tmp_path / "out.npz"), np.load(src)
    for k in ("x_train", "y_train", "x_val", "y_val"):
        assert np.array_equal(got[k], want[k]), k
    assert (tmp_path / "packed.npz").stat().st_size < 0.8 * x[:600].nbytes


def test_unpack_refuses_changed_faces(tmp_path, fer_test):
    gpu_data = _module()
    x, y = fer_test
    src = tmp_path / "fer.npz"
    np.savez(src, x_train=x[:30], y_train=y[:30], x_val=x[30:40], y_val=y[30:40])
    gpu_data.pack(str(tmp_path / "packed.npz"), str(src))
    d = dict(np.load(tmp_path / "packed.npz", allow_pickle=True))
    d["train_sha256"] = np.array("0" * 64)
    np.savez(tmp_path / "bad.npz", **d)
    with pytest.raises(SystemExit, match="differ"):
        gpu_data.unpack(str(tmp_path / "bad.npz"), str(tmp_path / "out.npz"))
