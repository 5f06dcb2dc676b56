#!/usr/bin/env bash
# Stops what box/up.sh started, newest first (KServe's work dir, the node with its pods, the
# object store's among them, and network, the registry), and removes WORKDIR. Usage: box/down.sh [WORKDIR]   (default /tmp/box)
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
W=${1:-/tmp/box}
[ -d "$W" ] || { echo "nothing in $W"; exit 0; }
[ -s "$W/kserve-workdir" ] && "$here/kserve/stop-kserve.sh" "$(cat "$W/kserve-workdir")"
[ -d "$W/node" ] && "$here/kubelet/down.sh" "$W/node"
[ -s "$W/registry.pid" ] && kill "$(cat "$W/registry.pid")" 2>/dev/null && echo "stopped the registry"
rm -rf "$W"
echo "box in $W stopped"
