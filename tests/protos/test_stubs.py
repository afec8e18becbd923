"""The committed stubs are exactly what `make protos` generates from fercodec.proto."""

from __future__ import annotations

import subprocess
import sys

from ..conftest import ROOT


def test_stubs_match_the_proto():
    r = subprocess.run([sys.executable, str(ROOT / "protos" / "generate.py"), "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_drift_is_detected(tmp_path):
    import shutil

    copy = tmp_path / "protos"
    shutil.copytree(ROOT / "protos", copy)
    proto = copy / "fercodec" / "v1" / "fercodec.proto"
    proto.write_text(proto.read_text().replace("string request_id = 3;", "string request_id = 3;\n  uint32 drift_probe = 99;"))
    r = subprocess.run([sys.executable, str(copy / "generate.py"), "--check"], capture_output=True, text=True)
    assert r.returncode == 1 and "drifted" in r.stderr
