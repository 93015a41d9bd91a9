#!/usr/bin/env bash
# On the GPU test host: installs .gpu-carry/ (built here by `make gpu-carry`) under /tmp, then
# runs the GPU benchmark, which ends within its deadline (5 minutes by default). Figures go to
# $OUT/bench-gpu (or ./bench-gpu) section by section; it exits 1 when a section failed, and
# names them: rerun those alone with --sections.
#   bash loadtest/bench/gpu/host.sh [flags of loadtest.bench.gpu...]  e.g. --sections load-4
set -euo pipefail
cd "$(dirname "$0")/../../.."
CARRY=$PWD/.gpu-carry
SITE=/tmp/gpu-site
PYTHON=${PYTHON:-python3}  # the interpreter with torch and torchvision
rm -rf "$SITE" && mkdir -p "$SITE"
# Wheels are zip files: unpacking them is their whole install here (no pip, no network).
$PYTHON - "$CARRY/wheels" "$SITE" <<'PY'
import sys, zipfile
from pathlib import Path
for wheel in sorted(Path(sys.argv[1]).glob("*.whl")):
    zipfile.ZipFile(wheel).extractall(sys.argv[2])
PY
cp "$CARRY"/stubs/*_pb2*.py clients/python/segmentation/v1/
export PYTHONPATH=$SITE:$PWD:$PWD/clients/python
export LD_LIBRARY_PATH=$CARRY/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export SEGMENTATION_MODEL_DIR=$CARRY/models
$PYTHON - <<'PY'
import importlib.util

import torch

vision = importlib.util.find_spec("torchvision") and __import__("torchvision").__version__
print("torch", torch.__version__, "torchvision", vision or "none", "cuda", torch.cuda.is_available())
PY
exec $PYTHON -m loadtest.bench.gpu --model-dir "$CARRY/models" --out "${OUT:-.}/bench-gpu" "$@"
