#!/usr/bin/env bash
# One prepared run on a lent GPU machine (benchmarks/README.md, "On a GPU machine").
#
#   bash benchmarks/device_check.sh            # the GPU check (about 5 minutes)
#   bash benchmarks/device_check.sh compat     # only the newer-Python check
#   bash benchmarks/device_check.sh all        # both
#   TESTS="tests/core/video" bash benchmarks/device_check.sh compat   # fewer tests
#
# compat: the engine's tests (tests/core, tests/cli, the parity tests included) on that machine's
#   own Python and packages (3.12, numpy 2.5, its torch and transformers), with the releases only
#   Python 3.12+ gets that sam2ui's ranges admit: PyAV 19 and Pillow 13. That machine has no
#   package registry, so the wheels travel in .whl/ (named in the device tool's `carry`); make
#   them here with `bash benchmarks/device_wheels.sh`. Without .whl/ the installed packages are
#   used as they are.
#
# gpu: benchmarks/device_gpu.py, sam2ui against Meta's `sam2` 1.1.0 on the card: CUDA parity
#   (float32 <= 1e-4, bfloat16 IoU >= 0.98), then video FPS (eager, and compiled against
#   vos_optimized=True), peak memory, set_image, click and automatic masks, with the targets.
#   Needs Meta's `sam2` and hydra-core there (the wheels in .whl/, see above). GPU_ARGS passes
#   options, e.g. GPU_ARGS="--variants sam2.1-hiera-tiny --budget 200".
#
# Prints what it ran on and each check's outcome; with $OUT set (the device tool sets it) the
# logs are written there too. On a machine without CUDA it says "no CUDA" and runs the checks
# that need none. Exit status: the number of failed checks.
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON="${PYTHON:-python3}"
LOGS="${OUT:-$(mktemp -d)}"
WHAT="${1:-gpu}"
FAILED=0

echo "== machine"
"$PYTHON" - <<'PY'
import platform

import torch

print(f"python {platform.python_version()}, torch {torch.__version__}")
if torch.cuda.is_available():
    print(f"CUDA {torch.version.cuda}: {torch.cuda.get_device_name(0)}")
else:
    print("no CUDA")
PY

if [[ -d .whl ]] && compgen -G ".whl/*.whl" >/dev/null; then
    # Into a folder of their own, ahead of the machine's packages on the path.
    SITE="$(mktemp -d)"
    if "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE" .whl/*.whl; then
        export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
    else
        echo "the wheels in .whl/ do not install on this Python: using its own packages"
    fi
fi

compat() {
    echo "== compat: engine tests on this Python and its packages"
    "$PYTHON" - <<'PY'
import importlib.metadata as metadata

for name in ("numpy", "pillow", "av", "huggingface_hub", "safetensors", "transformers", "sam2"):
    try:
        print(f"{name} {metadata.version(name)}")
    except metadata.PackageNotFoundError:
        print(f"{name} missing")
PY
    local parallel=()
    if "$PYTHON" -c "import xdist" 2>/dev/null; then
        local workers=$(($(nproc) / 2))
        parallel=(-n $((workers > 8 ? 8 : workers)))
    fi
    # Two threads per worker, as on the 2-core CI machine; the tests pick the CPU themselves.
    OMP_NUM_THREADS=2 timeout 420 "$PYTHON" -m pytest -q -p no:cacheprovider \
        -o addopts="-ra --strict-markers" "${parallel[@]}" ${TESTS:-tests/core tests/cli} \
        -m "not browser" 2>&1 | tee "$LOGS/compat.log" | tail -40
    local status=${PIPESTATUS[0]}
    echo "compat: pytest exit status $status"
    [[ $status == 0 ]] || FAILED=$((FAILED + 1))
}

gpu() {
    echo "== gpu: sam2ui against Meta's sam2 on this card"
    # shellcheck disable=SC2086
    timeout 360 "$PYTHON" benchmarks/device_gpu.py ${GPU_ARGS:-} 2>&1 | tee "$LOGS/gpu.log"
    local status=${PIPESTATUS[0]}
    echo "gpu: exit status $status"
    [[ $status == 0 ]] || FAILED=$((FAILED + 1))
}

case "$WHAT" in
    compat) compat ;;
    gpu) gpu ;;
    all)
        compat
        gpu
        ;;
    *)
        echo "unknown check: $WHAT" >&2
        exit 2
        ;;
esac
exit "$FAILED"
