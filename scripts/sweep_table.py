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

from fermodels import argtypes


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, help="fertrain codec --out directories (trained with a classifier, --lambda-c)")
    p.add_argument("--epoch", type=argtypes.count, required=True)
    args = p.parse_args(argv)
    for run in args.runs:
        if not run.is_dir():
            p.error(f"{run}: no such directory")
        if not (run / "log.jsonl").is_file():
            p.error(f"{run}: no log.jsonl in it (not a fertrain --out directory)")
    rows = []
    for run in args.runs:
        log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
        row = next((r for r in log if r["epoch"] == args.epoch), None)
        if row is None:
            print(f"sweep_table: {run} has no epoch {args.epoch}", file=sys.stderr)
            return 2
        qs = sorted(int(k[5:-4]) for k in row if k.startswith("val_q") and k.endswith("_bpp"))
        if "val_clean_acc" not in row or not qs or any(f"val_q{q}_acc" not in row for q in qs):  # a classifier's run, or a codec's without one
            print(f"sweep_table: {run} is not a codec run trained with a classifier (--lambda-c): its log.jsonl has no val_clean_acc "
                  "and val_qN_acc", file=sys.stderr)
            return 2
        curve = [(row[f"val_q{q}_bpp"] * 48 * 48 / 8, row[f"val_q{q}_acc"]) for q in qs]
        rows.append((str(run), row["val_clean_acc"], curve))

    from fermodels.evaluation.report import versus_first  # imports torch: after the runs are checked

    print(versus_first(rows, accuracy_label="clean accuracy", bytes_label="est. bytes"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
