#!/usr/bin/env bash
# The vectorized and serial backends on CUDA at P = 8, 32, 128, written to one JSON:
# benchmarks/results/gpu_check.json (within ~8 minutes on one GPU).
#
# Installs nothing: it runs this checkout's src/ with the Python given as $PYTHON
# (default: .venv/bin/python when its torch sees a GPU, else python3), which must
# already have a CUDA build of torch and the project's dependencies.
#
#     bash benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."

cuda_ok() { "$1" -c "import torch, sys; sys.exit(not torch.cuda.is_available())" 2>/dev/null; }
if [ -n "${PYTHON:-}" ]; then PY=$PYTHON
elif [ -x .venv/bin/python ] && cuda_ok .venv/bin/python; then PY=.venv/bin/python
else PY=python3
fi
if ! cuda_ok "$PY"; then
    echo "gpu_check: $PY has no torch that sees a CUDA GPU; set PYTHON to one that does." >&2
    exit 2
fi
missing=$("$PY" - <<'PYEOF'
import importlib.util
need = ["numpy", "scipy", "threadpoolctl", "sqlalchemy", "alembic", "rich", "mlxtend"]
print(" ".join(n for n in need if importlib.util.find_spec(n) is None))
PYEOF
)
if [ -n "$missing" ]; then
    echo "gpu_check: $PY lacks $missing (the project's dependencies); install them or set PYTHON." >&2
    exit 2
fi
"$PY" -c "import torch; print('gpu_check:', torch.__version__, torch.cuda.get_device_name(0))"
PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" timeout 480 \
    "$PY" benchmarks/vectorized.py --device cuda:0 --sizes 8,32,128 --steps 200 --repeats 1 --workloads small,mnist \
    --name gpu_check
