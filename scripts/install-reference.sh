#!/usr/bin/env bash
# Install Meta's reference `sam2` 1.1.0, which the parity tests compare against, into the
# environment of $PYTHON (default: python). Skipped when that version is already there.
#
# From its sdist, without the CUDA extension and without its dependencies: it asks for
# torchvision, which has no build for the CPU torch used here (tests/_stubs stands in for the
# few pieces it imports), and its runtime needs (hydra-core, iopath, tqdm) come with sam2ui's
# `test` extra. The sdist's setup.py imports torch, so it builds in this environment rather
# than an isolated one, which needs setuptools here (with bdist_wheel: 70.1 or newer).
set -euo pipefail

PYTHON="${PYTHON:-python}"
SAM2_VERSION="1.1.0"

installed=$("$PYTHON" - <<'PY'
import importlib.metadata as metadata

try:
    print(metadata.version("sam2"))
except metadata.PackageNotFoundError:
    pass
PY
)
if [[ "$installed" == "$SAM2_VERSION" ]]; then
    echo "reference sam2 $SAM2_VERSION already installed"
    exit 0
fi
pip_install() {
    "$PYTHON" -m pip install --disable-pip-version-check --no-input "$@"
}
pip_install --quiet "setuptools>=70.1"
SAM2_BUILD_CUDA=0 pip_install --quiet --no-build-isolation --no-deps "sam2==$SAM2_VERSION"
