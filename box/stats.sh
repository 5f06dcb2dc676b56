#!/usr/bin/env bash
# The box's memory, peak and now: each process box/up.sh started (VmHWM/VmRSS of /proc), the
# object store, and every pod together (the kubelet's cgroup root /boxnode in the v1 memory
# hierarchy: max_usage_in_bytes since the node started). Usage: box/stats.sh [WORKDIR]
W=${1:-/tmp/box}
mib() { echo $(( $1 / 1024 )); }
total_peak=0 total_now=0 line=""
for f in "$W/node/pids" "$(cat "$W/kserve-workdir" 2>/dev/null)/pids" "$W/objectstore/"*.pid; do
  [ -f "$f" ] || continue
  while read -r name pid; do
    [ -n "$pid" ] || { pid=$name; name=$(basename "$f" .pid); }
    peak=$(awk '/VmHWM/{print $2}' "/proc/$pid/status" 2>/dev/null) || continue
    now=$(awk '/VmRSS/{print $2}' "/proc/$pid/status")
    [ -n "$peak" ] || continue
    total_peak=$((total_peak + peak)) total_now=$((total_now + now))
    line+="$name=$(mib "$peak") "
  done < "$f"
done
pods=/sys/fs/cgroup/memory/boxnode
echo "processes, peak RSS MiB: ${line}(sum $(mib $total_peak), now $(mib $total_now))"
if [ -r "$pods/memory.max_usage_in_bytes" ]; then
  echo "pods (cgroup $pods): peak $(( $(cat "$pods/memory.max_usage_in_bytes") / 1048576 )) MiB, now $(( $(cat "$pods/memory.usage_in_bytes") / 1048576 )) MiB (page cache included)"
fi
