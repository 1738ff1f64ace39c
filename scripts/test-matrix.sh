#!/usr/bin/env bash
# The dependency matrix: the engine's tests (tests/core, tests/cli) and the front ends' tests
# without a browser, in a fresh virtual environment per job, with sam2ui's dependencies at
#
#   newest   the newest release this Python can install (`pip install --upgrade`), or
#   lowest   the lower bounds pyproject.toml declares (scripts/deps.py turns them into pins),
#            in two steps: the engine alone first (its own floors: huggingface_hub 0.23, ...),
#            then the front ends' floors added (gradio 6.19 raises huggingface_hub to 1.2).
#
#   bash scripts/test-matrix.sh newest|lowest [pytest arguments]
#
# torch stays the build scripts/install-test-deps.sh installs (2.13.0, a CPU build on a CPU
# machine): an upgraded torch would be a CUDA build of several GB. transformers is left out of
# the lowest job (its SAM 2 needs a newer huggingface_hub than the engine's floor), and with it
# tests/core/loading/test_hf_layout.py. The parity tests run in the main suite only: they
# compare torch arithmetic, which the matrix does not change. The environments live in
# .matrix/ (ignored by git) and are made again on every run.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

JOB="${1:-}"
shift || true
case "$JOB" in
    newest | lowest) ;;
    *)
        echo "usage: bash scripts/test-matrix.sh newest|lowest [pytest arguments]" >&2
        exit 2
        ;;
esac

TORCH_VERSION="2.13.0"
VENV=".matrix/$JOB"
PYTHON="$VENV/bin/python"
python -m venv --clear "$VENV"

pip_install() {
    "$PYTHON" -m pip install --disable-pip-version-check --no-input --quiet "$@"
}

# Runs pytest in the job's environment (without the browser tests, which run once, in the main
# suite); a failure is remembered, so that the second step still runs, and ends the job with
# exit status 1.
FAILED=0
run_tests() {
    "$PYTHON" -m pytest -p no:cacheprovider -m "not parity and not browser" "$@" \
        "${PYTEST_ARGS[@]}" || FAILED=1
}
PYTEST_ARGS=("$@")
ENGINE_TESTS=(tests/core tests/cli)
FRONT_END_TESTS=(tests/app tests/widgets tests/test_layout.py)

echo "== $JOB dependencies, $("$PYTHON" --version)"
pip_install --upgrade pip
pip_install "torch==$TORCH_VERSION"

# Each job in two steps, as users install sam2ui: the engine alone first (`.[video]`: gradio caps
# Pillow below 13, which the engine alone gets), then the front ends' extras added.
if [[ "$JOB" == "newest" ]]; then
    # shellcheck disable=SC2046  # one distribution name per word
    pip_install --upgrade --upgrade-strategy eager \
        $(python scripts/deps.py names video test) transformers
    pip_install --no-deps -e .
    PYTHON="$PYTHON" bash scripts/install-reference.sh
    "$PYTHON" -m pip list --disable-pip-version-check
    run_tests "${ENGINE_TESTS[@]}"
    # shellcheck disable=SC2046
    pip_install --upgrade --upgrade-strategy eager \
        $(python scripts/deps.py names video app notebook test) gradio_client
    "$PYTHON" -m pip list --disable-pip-version-check
    run_tests "${FRONT_END_TESTS[@]}"
    exit "$FAILED"
fi

# Pins at the floors of sam2ui's own dependencies (the test tools take what pip resolves).
# Those come as wheels only: an old release without a wheel for this Python would be compiled
# from source, which tests the compiler, not sam2ui.
floors() {
    python scripts/deps.py lowest "$@" >"$VENV/floors.txt"
    WHEELS_ONLY="$(python scripts/deps.py names "$@" | paste -sd, -)"
}

# lowest, step 1: the engine at its own floors.
floors video
pip_install --only-binary="$WHEELS_ONLY" -c "$VENV/floors.txt" -e ".[video,test]"
PYTHON="$PYTHON" bash scripts/install-reference.sh
"$PYTHON" -m pip list --disable-pip-version-check
run_tests "${ENGINE_TESTS[@]}" --ignore=tests/core/loading/test_hf_layout.py

# lowest, step 2: the front ends' floors on top (gradio, ipywidgets, anywidget, and the
# huggingface_hub that gradio needs).
floors video app notebook
pip_install --only-binary="$WHEELS_ONLY" -c "$VENV/floors.txt" -e ".[video,app,notebook,test]" \
    gradio_client
"$PYTHON" -m pip list --disable-pip-version-check
run_tests "${FRONT_END_TESTS[@]}"
exit "$FAILED"
