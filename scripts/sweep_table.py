"""Loss-weight sweep table from fertrain logs: one row per run at the same epoch, on val (PublicTest).

    python scripts/sweep_table.py --epoch 1 runs/sweep_lc0.3 runs/codec_B runs/sweep_lc3.0

Rates are the entropy model's estimate (bpp from likelihoods, no container),
accuracy is the run's own classifier on its own reconstructions; BD-rate and
accuracy gain are against the first run. Selection data only: report on test
with fereval.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fermodels.evaluation.report import versus_first


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="fertrain --out directories")
    p.add_argument("--epoch", type=int, required=True)
    args = p.parse_args(argv)
    rows = []
    for run in args.runs:
        log = [json.loads(line) for line in (Path(run) / "log.jsonl").read_text().splitlines()]
        row = next((r for r in log if r["epoch"] == args.epoch), None)
        if row is None:
            print(f"sweep_table: {run} has no epoch {args.epoch}", file=sys.stderr)
            return 2
        qs = sorted(int(k[5:-4]) for k in row if k.startswith("val_q") and k.endswith("_bpp"))
        curve = [(row[f"val_q{q}_bpp"] * 48 * 48 / 8, row[f"val_q{q}_acc"]) for q in qs]
        rows.append((run, row["val_clean_acc"], curve))
    print(versus_first(rows, accuracy_label="clean accuracy", bytes_label="est. bytes"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
