#!/usr/bin/env bash
# Create the virtualenv (./.venv) and install Arium into it. Idempotent: a second
# run with an unchanged pyproject.toml does nothing.
#   scripts/install.sh          runtime dependencies
#   scripts/install.sh --dev    plus the test dependencies
set -euo pipefail
cd "$(dirname "$0")/.."

extras=""
[ "${1:-}" = "--dev" ] && extras="[dev]"
venv="${ARIUM_VENV:-.venv}"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
    echo "Creating virtualenv in $venv"
    "$python" -m venv "$venv"
fi

stamp="$venv/.arium-installed$extras"
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
up_to_date() { [ -f "$1" ] && [ "$(cat "$1")" = "$want" ]; }
# A dev install includes everything a runtime install has.
if up_to_date "$stamp" || { [ -z "$extras" ] && up_to_date "$venv/.arium-installed[dev]"; }; then
    exit 0
fi

# torch first, pinned: an unpinned torch (pulled in by sentence-transformers)
# would bring several GB of CUDA packages. 2.13.0 resolves to the CPU wheel here.
"$venv/bin/pip" install --quiet "torch==2.13.0"
"$venv/bin/pip" install --quiet -e ".$extras"
echo "$want" > "$stamp"
echo "Installed Arium into $venv"
