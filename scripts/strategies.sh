#!/usr/bin/env bash
# Compare training strategies (arXiv 2509.17262) on FER2013 PrivateTest.
# Each run's best checkpoint is exported and evaluated with its own classifier
# through the real bitstream; docs/strategies/ gets each results.json and the
# table against the first run (0, the rate-distortion codec).
#   bash scripts/strategies.sh 0=runs/codec/best.pt A=runs/codec_A/best.pt B=runs/codec_B/best.pt
# A run without a classifier in its checkpoint (0, A) uses CLASSIFIER.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
CLASSIFIER=${CLASSIFIER:-runs/classifier/best.pt}
[ $# -gt 0 ] || { echo "usage: $0 NAME=CHECKPOINT ..." >&2; exit 2; }
mkdir -p docs/strategies
compare=()
for run in "$@"; do
  name=${run%%=*} ck=${run#*=}
  [ -f "$ck" ] || { echo "strategies.sh: $ck not found" >&2; exit 2; }
  $BIN/ferexport --codec "$ck" --classifier "$CLASSIFIER" --out "runs/export_$name" >/dev/null
  $BIN/fereval --model-dir "runs/export_$name" --baselines none --out "runs/eval/$name"
  cp "runs/eval/$name/results.json" "docs/strategies/$name.json"
  compare+=(--compare "$name=docs/strategies/$name.json")
done
$BIN/fereval "${compare[@]}" --out docs/strategies
