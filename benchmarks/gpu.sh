#!/usr/bin/env bash
# The GPU benchmarks in one command, for a lent CUDA machine (BENCHMARKS.md, "GPU"):
#
#   OUT=/some/folder benchmarks/gpu.sh      # JSON in $OUT/gpu.json (default ./gpu-results); under 8 minutes on an H200
#   OUT=/some/folder benchmarks/gpu.sh --steps resnet   # only the resnet on CIFAR-10- and CelebA-64-shaped data
#
# vaekit goes on top of the machine's own torch: pip install --no-deps -e . (falling back to PYTHONPATH=src
# where the machine cannot build it offline), plus whichever of the few other packages that training and
# evaluation import are missing (numpy, pillow, safetensors, tqdm; matplotlib and constriction are not needed).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu-results}"
PYTHON="${PYTHON:-python}"
mkdir -p "$OUT"
if ! "$PYTHON" -m pip install --no-deps --no-build-isolation -e . >"$OUT/pip.log" 2>&1; then
    echo "gpu.sh: pip install -e . failed (see $OUT/pip.log); using PYTHONPATH=$PWD/src" >&2
    export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
fi
missing=$("$PYTHON" -c '
import importlib.util
needed = {"numpy": "numpy", "PIL": "pillow", "safetensors": "safetensors", "tqdm": "tqdm"}
print(" ".join(package for module, package in needed.items() if importlib.util.find_spec(module) is None))')
if [ -n "$missing" ]; then
    echo "gpu.sh: installing $missing" >&2
    "$PYTHON" -m pip install $missing >>"$OUT/pip.log" 2>&1 || { echo "gpu.sh: cannot install $missing" >&2; exit 1; }
fi
"$PYTHON" -c 'import torch; assert torch.cuda.is_available(), "no CUDA device"' || exit 1
exec "$PYTHON" benchmarks/gpu.py --out "$OUT/gpu.json" "$@"
