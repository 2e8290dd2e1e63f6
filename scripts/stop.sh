#!/usr/bin/env bash
# Stop Arium gracefully: SIGTERM, then wait for replies in flight to finish.
#   scripts/stop.sh            wait up to ARIUM_STOP_TIMEOUT seconds (default 45)
#   scripts/stop.sh --force    SIGKILL if it is still running after the wait
set -euo pipefail
cd "$(dirname "$0")/.."
py=".venv/bin/python"
[ -x "$py" ] || py="python3"
data_dir="$("$py" -c 'from bot.settings import load_settings; print(load_settings().bot_data_dir.resolve())' 2>/dev/null || echo "$PWD/data")"
pid_file="$data_dir/arium.pid"
timeout="${ARIUM_STOP_TIMEOUT:-45}"

pid="$(cat "$pid_file" 2>/dev/null || true)"
if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; then
    rm -f "$pid_file"
    echo "Arium is not running"
    exit 0
fi

kill -TERM "$pid"
for _ in $(seq 1 $((timeout * 10))); do
    if ! kill -0 "$pid" 2>/dev/null; then
        rm -f "$pid_file"
        echo "Arium stopped (pid $pid)"
        exit 0
    fi
    sleep 0.1
done

if [ "${1:-}" = "--force" ]; then
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$pid_file"
    echo "Arium did not stop within ${timeout}s; killed (pid $pid)"
    exit 0
fi
echo "Arium is still running after ${timeout}s (pid $pid); run 'scripts/stop.sh --force' to kill it" >&2
exit 1
