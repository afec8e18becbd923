#!/usr/bin/env bash
# Classifier candidates trained on a lent GPU (issue 17): several `fertrain classifier` runs at once on
# one GPU, each on FER2013 train with realistic-crop copies (--robust) and every quality's decoded
# faces (--decoded), distilled from the shipped classifier (--teacher), selected on val (PublicTest).
# The same commands run on a CPU, slower (docs/gpu_train).
#
#   here:  python scripts/gpu_data.py pack .gpudata/fer2013_trainval.npz     # the faces, losslessly (73 -> 52 MB)
#          mkdir -p .whl-train && cp .whl/{compressai,constriction,pytorch_msssim}-* .whl-train/   # after gpu_check.sh --fetch-wheels
#   there: WHEELS=.whl-train bash scripts/gpu_train.sh [SECONDS]   # every run stops after SECONDS (default 330)
#   smoke test on a CPU: DEVICE=cpu EXTRA='--limit 200 --epochs 1' RUNS_DIR=/tmp/runs_smoke OUT=/tmp/gpu_smoke bash scripts/gpu_train.sh
#
# To $OUT (else runs/gpu): <run>.pt, each run's best.pt (float16 when over 15 MB, so it can come back),
# and logs.tgz (log.jsonl and console output of each run).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
BUDGET=${1:-330}
OUT_DIR=${OUT:-runs/gpu}
RUNS_DIR=${RUNS_DIR:-/tmp/runs}
mkdir -p "$OUT_DIR" "$RUNS_DIR"
source scripts/gpu_env.sh  # sets PY
t0=$SECONDS

"$PY" scripts/gpu_data.py unpack .gpudata/fer2013_trainval.npz /tmp/fer2013.npz || exit 1
export FERCODEC_DATA=/tmp/fer2013.npz
M=models/weights/fercodec-v1
COMMON="--decoded $M --robust --teacher $M --device ${DEVICE:-cuda} --threads 3 --batch-size 128"
declare -A RUNS=(
  [w32]="--width 32 --lambda-kd 0.3 --epochs 60 --lr 2e-3 --weight-decay 0.05 --seed 11"
  [w32_kd5]="--width 32 --lambda-kd 0.5 --epochs 60 --lr 2e-3 --seed 12"
  [w48]="--width 48 --lambda-kd 0.3 --epochs 60 --lr 2e-3 --weight-decay 0.05 --seed 13"
  [ft32]="--init $M --lambda-kd 0.5 --epochs 25 --lr 5e-4 --weight-decay 0.05 --seed 14"
)
left=$((BUDGET - (SECONDS - t0)))
for name in "${!RUNS[@]}"; do
  echo "== $name: fertrain classifier $COMMON ${RUNS[$name]} ${EXTRA:-} (stopped after ${left} s)"
  timeout -s INT "$left" "$PY" -m fermodels.train classifier $COMMON ${RUNS[$name]} ${EXTRA:-} --out "$RUNS_DIR/$name" > "$RUNS_DIR/$name.log" 2>&1 &
done
# A line per run every 30 s: the output's tail says how far each got even if the call is cut.
while [[ -n "$(jobs -r)" ]]; do
  sleep 30
  for name in "${!RUNS[@]}"; do
    "$PY" - "$RUNS_DIR/$name/log.jsonl" "$name" <<'EOF'
import json, sys
try:
    rows = [json.loads(l) for l in open(sys.argv[1])]
except FileNotFoundError:
    rows = []
r = rows[-1] if rows else {}
best = max((x.get("val_mean_acc", x.get("val_acc", 0)) for x in rows), default=0)
print(f"{sys.argv[2]:8s} epoch {r.get('epoch', 0):3d} ({r.get('seconds', 0)} s)  val {r.get('val_acc', 0):.4f}  q7 {r.get('val_q7_acc', 0):.4f}  "
      f"perturbed {r.get('val_perturbed_acc', 0):.4f}  mean {r.get('val_mean_acc', 0):.4f}  best mean {best:.4f}")
EOF
  done
done
for name in "${!RUNS[@]}"; do
  tail -3 "$RUNS_DIR/$name.log"
  [[ -f "$RUNS_DIR/$name/best.pt" ]] || continue
  "$PY" - "$RUNS_DIR/$name/best.pt" "$OUT_DIR/$name.pt" <<'EOF'
import os, sys, torch
ck = torch.load(sys.argv[1], map_location="cpu", weights_only=False)
if os.path.getsize(sys.argv[1]) > 15 << 20:  # the device tool brings back files up to 16 MiB
    ck["models"] = {k: {n: t.half() if t.is_floating_point() else t for n, t in sd.items()} for k, sd in ck["models"].items()}
torch.save(ck, sys.argv[2])
print(f"{sys.argv[2]}: epoch {ck['epoch']}, val {ck['val']}")
EOF
done
tar -czf "$OUT_DIR/logs.tgz" -C "$RUNS_DIR" $(cd "$RUNS_DIR" && ls -d */log.jsonl *.log 2>/dev/null)
ls -la "$OUT_DIR"
