#!/usr/bin/env bash
# Set up the virtualenv with the test dependencies and run the whole suite.
# Extra arguments go to pytest (e.g. scripts/test.sh -k telegram).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
bash scripts/install.sh --dev
exec .venv/bin/python -m pytest "$@"
