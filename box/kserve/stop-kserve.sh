#!/usr/bin/env bash
# Stops what start-kserve.sh started (newest first, SIGTERM then SIGKILL after 10 s), removes
# the pod IP it added to lo, and the work dir unless KEEP=1.
# Usage: box/kserve/stop-kserve.sh [W]   (default: the last start's work dir)
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
W=${1:-$(cat "$here/.last-workdir" 2>/dev/null)}
[ -n "$W" ] && [ -d "$W" ] || { echo "no work dir" >&2; exit 0; }
if [ -f "$W/pids" ]; then
  tac "$W/pids" | while read -r name pid; do
    kill -0 "$pid" 2>/dev/null || continue
    kill "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && { echo "$name ($pid) ignored SIGTERM; SIGKILL"; kill -9 "$pid"; }
    echo "stopped $name ($pid)"
  done
fi
[ -f "$W/added-ip" ] && ip addr del "$(cat "$W/added-ip")/32" dev lo && echo "removed $(cat "$W/added-ip")/32 from lo"
rm -f "$W/added-ip" "$W/pids"
if [ "${KEEP:-0}" = 1 ]; then echo "work dir kept: $W"; else rm -rf "$W"; fi
