#!/usr/bin/env bash
# Stops what start.sh started, newest first (podlet stops its pods' processes and
# network namespaces on SIGTERM), then removes the bridge. KEEP=1 keeps the work dir.
set -uo pipefail
[ -e /tmp/kn-box.current ] || { echo "nothing running"; exit 0; }
W=$(cat /tmp/kn-box.current)
if [ -f "$W/pids" ]; then
  tac "$W/pids" | while read -r pid; do
    kill "$pid" 2>/dev/null || continue
    for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
fi
# Whatever podlet could not clean up (e.g. it was killed): its namespaces and veths.
for ns in $(ip netns list 2>/dev/null | awk '/^kn-pod/{print $1}'); do
  for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null; done
  ip netns del "$ns"; rm -rf "/etc/netns/$ns"
done
ip link del kn-br0 2>/dev/null || true
rm -f /tmp/kn-box.current
if [ "${KEEP:-1}" = 1 ]; then echo "stopped; logs kept in $W"; else rm -rf "$W"; echo stopped; fi
