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

# The browser test of the eval results page drives Debian's chromium through
# Playwright (whose own browser download cannot be used offline). Checked
# before the up-to-date stamp: the package can be missing on a machine whose
# virtualenv is current.
if [ -n "$extras" ] && [ ! -x /usr/bin/chromium ]; then
    if ! command -v apt-get >/dev/null; then
        echo "install.sh: /usr/bin/chromium is missing and apt-get is not available; install chromium by hand" >&2
        exit 1
    fi
    echo "Installing Debian's chromium (for the browser tests)"
    export DEBIAN_FRONTEND=noninteractive
    # A fresh machine has no package lists yet; refresh them only then.
    if ! apt-get install -y --no-install-recommends chromium >/dev/null 2>&1; then
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends chromium >/dev/null
    fi
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
