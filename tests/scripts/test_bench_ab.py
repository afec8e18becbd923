"""scripts/bench_ab.py end to end: a committed revision against the working tree, two real servers, one table row per level
(calls in flight) and per arrival rate (open loop)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_ab_serves_a_revision_beside_the_working_tree_and_cleans_up():
    before = subprocess.run(["git", "-C", str(ROOT), "worktree", "list"], capture_output=True, text=True, check=True).stdout
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_ab.py"), "--before", "HEAD", "--levels", "1,4", "--rounds", "2",
                        "--seconds", "0.3", "--faces", "16", "--rates", "50"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = re.findall(r"^\| (\d+) \| ([\d.]+)x \(([\d.]+)-([\d.]+)\) \| (\d+) \| (\d+) \| ([\d.]+) \| ([\d.]+) \| (\d+) \| (\d+) \|$", r.stdout, re.M)
    assert [row[0] for row in rows] == ["1", "4"], r.stdout
    for _, ratio, lo, hi, a, b, p99_a, p99_b, max_a, max_b in rows:
        assert int(a) > 0 and int(b) > 0 and float(lo) - 0.005 <= float(ratio) <= float(hi) + 0.005  # the range is printed to 2 decimals, the median to 3
        assert 0 < float(p99_a) <= int(max_a) + 1 and 0 < float(p99_b) <= int(max_b) + 1
    arrivals = re.findall(r"^\| 50 \| ([\d.]+)x \(([\d.]+)-([\d.]+)\) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| (\d+) \| (\d+) \|$", r.stdout, re.M)
    assert len(arrivals) == 1 and "errors" not in r.stdout, r.stdout
    ratio, lo, hi, p50_a, p50_b, p99_a, p99_b, max_a, max_b = (float(v) for v in arrivals[0])
    assert lo - 0.005 <= ratio <= hi + 0.005 and 0 < p50_a <= p99_a <= max_a + 1 and 0 < p50_b <= p99_b <= max_b + 1
    after = subprocess.run(["git", "-C", str(ROOT), "worktree", "list"], capture_output=True, text=True, check=True).stdout
    assert after == before  # the revision's checkout is gone


def test_ab_refuses_an_unknown_revision():
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_ab.py"), "--before", "no-such-rev-1234", "--levels", "1"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "no-such-rev-1234" in r.stderr


@pytest.mark.parametrize("flags", [["--levels", "", "--rates", ""], ["--levels", "0"], ["--rates", "-5"], ["--levels", "x"]])
def test_ab_refuses_no_load_or_bad_numbers_in_one_line(flags):
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_ab.py"), "--before", "HEAD", *flags], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stderr.strip().splitlines()[-1].startswith("bench_ab.py: error:")
