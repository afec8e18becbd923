#!/usr/bin/env bash
# make demo: start ferserver on the shipped models, send a real photo through
# ferclient, print the result, stop the server cleanly (SIGTERM, exit 0).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="$PWD/.venv/bin"
work=$(mktemp -d)
port=${FERCODEC_DEMO_PORT:-50051}
mport=${FERCODEC_DEMO_METRICS_PORT:-9100}
trap 'kill -TERM ${pid:-} 2>/dev/null || true; rm -rf "$work"' EXIT

# A public-domain photo shipped inside scikit-image (NASA, astronaut Eileen Collins).
$BIN/python -c "import skimage.data, PIL.Image, sys; PIL.Image.fromarray(skimage.data.astronaut()).save(sys.argv[1])" "$work/astronaut.png"

$BIN/ferserver --host 127.0.0.1 --port "$port" --metrics-port "$mport" >"$work/server.log" 2>&1 &
pid=$!
echo "starting ferserver (pid $pid); loading models..."
for _ in $(seq 1 240); do
  grep -q "ready on" "$work/server.log" && break
  if ! kill -0 $pid 2>/dev/null; then
    cat "$work/server.log"
    grep -q "in use" "$work/server.log" && echo "a port is taken: set FERCODEC_DEMO_PORT and FERCODEC_DEMO_METRICS_PORT to free ones (FERCODEC_DEMO_PORT=50061 FERCODEC_DEMO_METRICS_PORT=9110 make demo)" >&2
    echo "ferserver failed to start" >&2
    exit 1
  fi
  sleep 0.5
done
grep "ready on" "$work/server.log" | sed 's/^.*INFO ferserver: //'

echo
cd "$work"  # so the rows name astronaut.png, as README shows them
echo "\$ ferclient send astronaut.png --reconstruct faces"
$BIN/ferclient send astronaut.png --server "127.0.0.1:$port" --reconstruct faces
echo
echo "\$ ferclient send astronaut.png --model fercodec-v1-expr   # the expression layer: fewest bytes, no image"
$BIN/ferclient send astronaut.png --server "127.0.0.1:$port" --model fercodec-v1-expr
echo
echo "\$ ferclient send astronaut.png --json"
$BIN/ferclient send astronaut.png --server "127.0.0.1:$port" --json
echo
echo "metrics (http://127.0.0.1:$mport/metrics):"
$BIN/python -c "import urllib.request,sys; print(''.join(l+'\n' for l in urllib.request.urlopen(sys.argv[1]).read().decode().splitlines() if l.startswith(('fercodec_requests_total','fercodec_predictions_total'))), end='')" "http://127.0.0.1:$mport/metrics"

kill -TERM $pid
wait $pid && echo "ferserver stopped cleanly (exit 0)"
pid=
