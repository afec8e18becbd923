"""scripts/rangecoder_bench.py on real faces: a row per model, the same words both ways, whole words at most 3 bytes longer."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_rangecoder_bench_reports_both_models():
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "rangecoder_bench.py"), "--faces", "40", "--repeats", "1"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [line.strip("|").split("|") for line in r.stdout.splitlines() if line.startswith("| fercodec")]
    assert [row[0].strip() for row in rows] == ["fercodec-v1", "fercodec-v1-expr"]
    for row in rows:
        t_c, t_r, b_c, b_r = (float(v) for v in row[2:6])
        assert t_c > 0 and t_r > 0 and 0 <= b_r - b_c <= 3
