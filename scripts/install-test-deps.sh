#!/usr/bin/env bash
# Install everything the test suite needs, on a fresh machine or again on a ready one.
#
#   1. torch 2.13.0 first and by exact version: a CPU machine then takes its local CPU build,
#      whereas a bare `torch` (or another package asking for one) would pull several GB of CUDA
#      wheels. Any build of 2.13.0 already present (+cpu, +cu...) is kept.
#   2. sam2ui itself, editable, with the `dev` extra (pytest, linters, reference packages).
#      Always re-run, so the editable install points at this checkout even after a fresh clone.
#   3. Meta's reference `sam2` 1.1.0 for the parity tests (scripts/install-reference.sh).
#   4. Debian's chromium for the browser tests (Playwright drives it; it cannot download a
#      browser of its own here). Needs root or sudo; skipped when chromium is already there.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

TORCH_VERSION="2.13.0"

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

bash scripts/install-reference.sh

if command -v chromium >/dev/null 2>&1; then
    echo "chromium already installed"
else
    SUDO=""
    if [[ "$(id -u)" != "0" ]]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium
fi
