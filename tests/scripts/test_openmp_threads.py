"""scripts/openmp_threads.py: each case in a child process, a row per thread count and gap."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "openmp_threads.py"


def test_prints_a_row_per_case():
    r = subprocess.run([sys.executable, str(SCRIPT), "--faces", "1", "--gaps-ms", "0", "--repeat", "3"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rows = [line.split("|")[1:-1] for line in r.stdout.splitlines() if line.startswith("| ") and "thread |" in line]
    cases = {(c[0].strip(), c[2].strip()) for c in rows}
    assert {("main thread", "1"), ("passing thread", "1")} <= cases
    assert all(float(c[4]) > 0 for c in rows)
