#!/usr/bin/env bash
# Builds .gpu-carry/: what the GPU test host lacks for `python -m loadtest.bench.gpu` (it has
# Python 3.12, PyTorch, torchvision, OpenCV and grpcio, no network). About 31 MB:
#   wheels/    PyTurboJPEG 1.8.3 (an sdist on PyPI: built here), and for cp312 manylinux x86_64:
#              grpcio 1.85.3, protobuf 7.36.2, grpcio-health-checking and -reflection 1.85.1 (the
#              stubs need grpcio >= 1.85.1 and protobuf >= 7.35.1), ai-edge-litert 2.3.0 (only
#              its flatbuffer schema is used), flatbuffers, prometheus-client, tqdm
#   lib/       Debian's libturbojpeg0, extracted (on LD_LIBRARY_PATH there)
#   models/    the two selfie .tflite files
#   stubs/     the generated gRPC stubs (git-ignored, so not in the copied tree)
# Run it with `make gpu-carry`; loadtest/bench/gpu/host.sh uses it on the GPU host.
# CARRY_PYTHON=3.11 builds it for another Python: a rehearsal of the GPU host's run on a
# machine without one.
set -euo pipefail
cd "$(dirname "$0")/../../.."
PYTHON=${PYTHON:-.venv/bin/python}
CARRY=.gpu-carry
CARRY_PYTHON=${CARRY_PYTHON:-3.12}  # the GPU host's Python, which the wheels are built for
rm -rf "$CARRY" && mkdir -p "$CARRY"/{wheels,lib,models,stubs}

$PYTHON -m pip wheel -q --no-deps --wheel-dir "$CARRY/wheels" PyTurboJPEG==1.8.3
version() { $PYTHON -c "import importlib.metadata as m; print(m.version('$1'))"; }
$PYTHON -m pip download -q --no-deps --only-binary=:all: --python-version "$CARRY_PYTHON" \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_28_x86_64 \
  --implementation cp --dest "$CARRY/wheels" \
  grpcio==1.85.3 protobuf==7.36.2 grpcio-health-checking==1.85.1 grpcio-reflection==1.85.1 \
  ai-edge-litert==2.3.0 "flatbuffers==$(version flatbuffers)" \
  "prometheus-client==$(version prometheus_client)" "tqdm==$(version tqdm)"

deb_dir=$(mktemp -d)
(cd "$deb_dir" && apt-get download -qq libturbojpeg0)
dpkg -x "$deb_dir"/libturbojpeg0_*.deb "$deb_dir/root"
cp -a "$deb_dir"/root/usr/lib/*/libturbojpeg.so.0* "$CARRY/lib/"
rm -rf "$deb_dir"

$PYTHON - "$CARRY" <<'PY'
import shutil, sys
from pathlib import Path

from models.fetch import default_model_dir, ensure_model_files
from models.registry import MODELS

carry = Path(sys.argv[1])
for name, path in ensure_model_files(MODELS.values(), default_model_dir(), fetch=True).items():
    shutil.copy(path, carry / "models" / path.name)
PY
cp clients/python/segmentation/v1/*_pb2*.py "$CARRY/stubs/"
du -sh "$CARRY"
