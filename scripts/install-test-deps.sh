#!/usr/bin/env bash
# Install everything the test suite needs, on a fresh machine or again on a ready one.
#
#   1. torch 2.13.0 first and by exact version: a CPU machine then takes its local CPU build,
#      whereas a bare `torch` (or another package asking for one) would pull several GB of CUDA
#      wheels. Any build of 2.13.0 already present (+cpu, +cu...) is kept.
#   2. sam2ui itself, editable, with the `dev` extra (pytest, linters, reference packages).
#      Always re-run, so the editable install points at this checkout even after a fresh clone.
#   3. Meta's reference `sam2` 1.1.0 for the parity tests, from its sdist without the CUDA
#      extension and without its dependencies (it asks for torchvision, which has no build for
#      this torch; tests/_stubs stands in for the few pieces it imports).
#   4. Debian's chromium for the browser tests (Playwright drives it; it cannot download a
#      browser of its own here). Needs root or sudo; skipped when chromium is already there.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

TORCH_VERSION="2.13.0"
SAM2_VERSION="1.1.0"

# Version of an installed distribution without its local label ("2.13.0+cpu" -> "2.13.0"),
# or nothing when it is not installed.
installed_version() {
    python - "$1" <<'PY'
import importlib.metadata as metadata
import sys

try:
    print(metadata.version(sys.argv[1]).split("+")[0])
except metadata.PackageNotFoundError:
    pass
PY
}

pip_install() {
    python -m pip install --disable-pip-version-check --no-input "$@"
}

if [[ "$(installed_version torch)" == "$TORCH_VERSION" ]]; then
    echo "torch $TORCH_VERSION already installed"
else
    pip_install "torch==$TORCH_VERSION"
fi

pip_install --quiet -e ".[dev]"

if [[ "$(installed_version sam2)" == "$SAM2_VERSION" ]]; then
    echo "reference sam2 $SAM2_VERSION already installed"
else
    # The sdist's setup.py imports torch, so it builds in this environment rather than an
    # isolated one, which needs setuptools here (with bdist_wheel: 70.1 or newer). Its runtime
    # dependencies hydra-core, iopath and tqdm come with the dev extra above.
    pip_install "setuptools>=70.1"
    SAM2_BUILD_CUDA=0 pip_install --no-build-isolation --no-deps "sam2==$SAM2_VERSION"
fi

if command -v chromium >/dev/null 2>&1; then
    echo "chromium already installed"
else
    SUDO=""
    if [[ "$(id -u)" != "0" ]]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium
fi
