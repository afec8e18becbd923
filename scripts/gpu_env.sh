# Sourced by scripts/gpu_check.sh and scripts/gpu_train.sh (from the repository root): sets PY to a
# Python that has torch and this project.
#
# The project's .venv when it has torch; otherwise (a bare GPU machine whose python3 holds torch
# but not this project) a venv over python3's packages, the project put on its path without pip
# (no registry needed), plus the wheels in $WHEELS (default .whl/) for what python3 lacks.
ROOT=${ROOT:-$PWD}
WHEELS=${WHEELS:-.whl}
if [[ -x .venv/bin/python ]] && .venv/bin/python -c "import torch, ferserver" 2>/dev/null; then
  PY=$ROOT/.venv/bin/python
else
  V=/tmp/fercodec-venv
  python3 -m venv --system-site-packages "$V"
  # python3 may itself be a venv (its torch is then not in the base site-packages the new venv sees): add its paths.
  python3 -c "import site; print('\n'.join(site.getsitepackages()))" > "$(dirname "$(ls -d "$V"/lib/python3*/site-packages)")/site-packages/fercodec-parent.pth"
  if compgen -G "$WHEELS/*.whl" >/dev/null; then
    "$V/bin/python" -m pip install -q --no-index --no-deps --no-compile "$WHEELS"/*.whl
  fi
  # The import names are not the folder names (pyproject's package-dir): link them.
  mkdir -p "$V/src"
  for pair in ferserver:server ferclient:client ferwire:wire fermodels:models fercodec:protos/fercodec; do
    ln -sfn "$ROOT/${pair#*:}" "$V/src/${pair%%:*}"
  done
  "$V/bin/python" -c "import site, sys; open(site.getsitepackages()[0] + '/fercodec-src.pth', 'w').write(sys.argv[1])" "$V/src"
  # Console scripts (ServerProcess starts bin/ferserver beside the interpreter).
  for pair in ferserver:ferserver.main ferclient:ferclient.cli; do
    # The __main__ guard matters: the server's decode workers are spawned, and spawn re-runs the main script.
    printf '#!%s\nimport sys\nfrom %s import main\nif __name__ == "__main__":\n    sys.exit(main())\n' "$V/bin/python" "${pair#*:}" > "$V/bin/${pair%%:*}"
    chmod +x "$V/bin/${pair%%:*}"
  done
  PY=$V/bin/python
fi

