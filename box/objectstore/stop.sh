#!/usr/bin/env bash
# Stops what start-seaweedfs.sh / start-minio.sh started (by the pid files they wrote): SIGTERM, then
# SIGKILL after 30 s (the pod default grace period). Usage: stop.sh [DATA_DIR...]   (default: run/seaweedfs run/minio)
here=$(cd "$(dirname "$0")" && pwd)
dirs=("$@"); [ ${#dirs[@]} -gt 0 ] || dirs=("$here/run/seaweedfs" "$here/run/minio")
for d in "${dirs[@]}"; do
  for f in "$d"/*.pid; do
    [ -f "$f" ] || continue
    pid=$(cat "$f")
    if kill "$pid" 2>/dev/null; then
      for _ in $(seq 1 120); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
      kill -9 "$pid" 2>/dev/null && echo "killed -9 $pid" || echo "stopped $pid ($f)"
    fi
    rm -f "$f"
  done
done
