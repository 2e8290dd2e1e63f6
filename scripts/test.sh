#!/usr/bin/env bash
# Set up the virtualenv with the test dependencies and run the whole suite.
# Extra arguments go to pytest (e.g. scripts/test.sh -k telegram).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
bash scripts/install.sh --dev
# Two worker processes (pytest-xdist): each makes its own PostgreSQL database
# and temp dirs, and the suite takes about 60% of the time it takes in one.
# Arguments after these win: `scripts/test.sh -n 0` runs in one process.
exec .venv/bin/python -m pytest -n "${ARIUM_TEST_WORKERS:-2}" "$@"
