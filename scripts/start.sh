#!/usr/bin/env bash
# Start Arium on a VPS: install into ./.venv if needed, apply migrations, then
# run in the background with a pid file and a log file under BOT_DATA_DIR.
#   scripts/start.sh               background (refuses a second copy)
#   scripts/start.sh --foreground  stay in the foreground (systemd, containers)
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1

bash scripts/install.sh
py=".venv/bin/python"

if [ ! -f .env ] && [ -z "${TELEGRAM_BOT_TOKEN:-}" ]; then
    cp .env.example .env
    echo "Created .env from .env.example. Put your TELEGRAM_BOT_TOKEN and model key in it, then run scripts/start.sh again." >&2
    exit 2
fi

# Check the settings before going to the background: a bad or incomplete
# configuration stops us here with one clear line instead of in the log.
data_dir="$("$py" - <<'PY'
import sys
from bot.errors import ConfigError
from bot.settings import load_settings
try:
    settings = load_settings()
except ConfigError as exc:
    sys.exit(f"configuration error: {exc}")
missing = settings.missing_for_run()
if missing:
    sys.exit(f"configuration error: missing {', '.join(missing)}; put it in .env (see .env.example)")
print(settings.bot_data_dir.resolve())
PY
)" || exit 2
mkdir -p "$data_dir/logs"
pid_file="$data_dir/arium.pid"
log_file="$data_dir/logs/arium.log"

running_pid() {
    [ -f "$pid_file" ] || return 1
    local pid
    pid="$(cat "$pid_file" 2>/dev/null)"
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && grep -q "bot" "/proc/$pid/cmdline" 2>/dev/null && echo "$pid"
}

if pid="$(running_pid)"; then
    echo "Arium is already running (pid $pid); log: $log_file"
    exit 0
fi
rm -f "$pid_file"

"$py" -m bot migrate

if [ "${1:-}" = "--foreground" ]; then
    exec "$py" -m bot run
fi

nohup "$py" -m bot run >>"$log_file" 2>&1 &
echo $! >"$pid_file"
sleep 2
if ! running_pid >/dev/null; then
    rm -f "$pid_file"
    echo "Arium failed to start; the end of $log_file:" >&2
    tail -n 20 "$log_file" >&2
    exit 1
fi
echo "Arium started (pid $(cat "$pid_file")); log: $log_file"
