#!/usr/bin/env bash
# The GPU check (issue 18, part 5), one command on a CUDA machine:
#   bash scripts/gpu_check.sh                         # all 3,589 PrivateTest faces on cuda
#   bash scripts/gpu_check.sh --device cpu --faces 200 --seconds 0.5   # the same path on a CPU
# 1. nvidia-smi and torch's view of CUDA; 2. pytest -m gpu; 3. scripts/gpu_check.py
# (CUDA vs CPU agreement, throughput sweep, ferserver's footprint), whose
# arguments are this script's. Results: $OUT (when set), else docs/gpu, else (with --device cpu, a dry run
# that must not overwrite the recorded GPU run) /tmp/gpu_check_cpu.
#
# Python: scripts/gpu_env.sh. Fetch the wheels a bare GPU machine lacks beforehand,
# where PyPI is reachable, with
#   bash scripts/gpu_check.sh --fetch-wheels [python version, default 3.12]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

if [[ "${1:-}" == "--fetch-wheels" ]]; then
  # The server's dependencies a CUDA image with torch usually lacks (compressai's
  # pytorch-msssim included), for that image's Python; .whl/ stays out of git.
  pyver=${2:-3.12}
  grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
  python3 -m pip download --no-deps --only-binary=:all: --python-version "$pyver" --implementation cp \
    --platform manylinux_2_34_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any -d .whl \
    constriction==0.5.0 compressai==1.2.8 pytorch-msssim grpcio-health-checking grpcio-reflection 'protobuf>=7.35.1,<8' 'grpcio>=1.85.1'
  ls -la .whl
  exit 0
fi

default_out=$ROOT/docs/gpu
prev=
for a in "$@"; do
  [[ "$prev" == "--device" && "$a" != cuda* || "$a" == --device=cpu* ]] && default_out=/tmp/gpu_check_cpu
  prev=$a
done
OUT_DIR=${OUT:-$default_out}
mkdir -p "$OUT_DIR"
export PYTHONUNBUFFERED=1

source scripts/gpu_env.sh  # sets PY

echo "== nvidia-smi"
nvidia-smi || echo "(no nvidia-smi: no NVIDIA driver here)"
echo "== torch"
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available(), *(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())))"

echo "== pytest -m gpu"
set +e
"$PY" -m pytest -q -m gpu -rs -p no:cacheprovider tests 2>&1 | tee "$OUT_DIR/pytest_gpu.log"
tests_rc=${PIPESTATUS[0]}
echo "== gpu_check.py $*"
"$PY" scripts/gpu_check.py --out "$OUT_DIR" "$@" 2>&1 | tee "$OUT_DIR/gpu_check.log"
check_rc=${PIPESTATUS[0]}
set -e
# pytest exits 5 when it selected no test; anything else non-zero is a failure.
[[ $tests_rc == 0 || $tests_rc == 5 ]] && [[ $check_rc == 0 ]] && echo "gpu_check: PASS" && exit 0
echo "gpu_check: FAIL (pytest $tests_rc, gpu_check.py $check_rc)"
exit 1
