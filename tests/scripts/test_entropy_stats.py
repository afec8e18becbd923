"""scripts/entropy_stats.py on real val faces: one row per quality, the image codec's final constant run described."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_entropy_stats_reports_every_quality():
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "entropy_stats.py"), "--faces", "40", "--repeats", "2"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [line.strip("|").split("|") for line in r.stdout.splitlines() if line.startswith("| q") and not line.startswith("| quality")]
    assert [row[0].strip() for row in rows] == [f"q{q}" for q in range(8)]
    sizes = [float(row[1]) for row in rows]
    assert sizes == sorted(sizes) and 60 < sizes[0] < sizes[-1] < 1000  # rate rises with quality
    for row in rows:
        symbols, bits, escaped = int(row[2]), float(row[3]), int(row[4])
        assert 0 < symbols < 96 * 36 and 0 <= bits < 1 and 0 <= escaped <= 40
        assert all(float(v) > 0 for v in row[5:9])
