#!/usr/bin/env bash
# Start Arium on a VPS: install into ./.venv if needed, apply migrations, then
# run in the background with a pid file under BOT_DATA_DIR. The bot writes and
# rotates its own log (BOT_DATA_DIR/logs/arium.log, BOT_LOG_MAX_MB and
# BOT_LOG_BACKUPS); whatever the process prints outside logging (a crash
# before logging is set up, native library warnings) goes to logs/console.log.
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
console_file="$data_dir/logs/console.log"

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
    # exec keeps this pid, so the pid file names the bot (stop.sh, restore).
    echo $$ >"$pid_file"
    exec "$py" -m bot run
fi

# console.log only grows on crashes; still, keep one previous copy at most.
if [ -f "$console_file" ] && [ "$(stat -c %s "$console_file")" -gt 5242880 ]; then
    mv -f "$console_file" "$console_file.1"
fi
nohup "$py" -m bot run >>"$console_file" 2>&1 &
echo $! >"$pid_file"
sleep 2
if ! running_pid >/dev/null; then
    rm -f "$pid_file"
    echo "Arium failed to start; the end of $console_file and $log_file:" >&2
    tail -n 20 "$console_file" >&2
    [ -f "$log_file" ] && tail -n 20 "$log_file" >&2
    exit 1
fi
echo "Arium started (pid $(cat "$pid_file")); log: $log_file"
