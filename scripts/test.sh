#!/usr/bin/env bash
# Install the test dependencies, then run the test suite; arguments go to pytest.
#   bash scripts/test.sh                 # everything
#   bash scripts/test.sh tests/cli -x
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/install-test-deps.sh
exec python -m pytest "$@"
