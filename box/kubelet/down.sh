#!/usr/bin/env bash
# Stops what up.sh started (WORKDIR/pids, last started first) and removes the node's traces:
# pods' processes, containerd's shims, network namespaces, cni0 and veths, kube-proxy's and the
# pod network's iptables rules, the kubelet's cgroups, mounts under WORKDIR. KEEP=1 keeps WORKDIR.
# Usage: box/kubelet/down.sh [WORKDIR]    (default /tmp/box-node)
set -uo pipefail
W=${1:-/tmp/box-node}
[ -e "$W/pids" ] || { echo "nothing to stop in $W"; exit 0; }
. "$W/env" 2>/dev/null || true
C=$W/containerd
stop() { # name pid: SIGTERM, 15 s, SIGKILL
  kill "$2" 2>/dev/null || return 0
  for _ in $(seq 150); do kill -0 "$2" 2>/dev/null || return 0; sleep 0.1; done
  echo "$1 ($2) ignored SIGTERM for 15 s: SIGKILL"; kill -9 "$2" 2>/dev/null
}
# Pods first, while the kubelet still runs them: deleting them makes the kubelet stop their
# containers (and the real one tears down their sandboxes' network through CNI).
if [ -n "${KUBECONFIG:-}" ] && kubectl_=$BIN/kubectl && "$kubectl_" get --raw /readyz >/dev/null 2>&1; then
  "$kubectl_" delete deployments,replicasets,daemonsets,statefulsets,jobs --all -A --wait=false >/dev/null 2>&1
  "$kubectl_" delete pods --all -A --grace-period=5 --timeout=40s >/dev/null 2>&1 \
    || echo "pods not all gone within 40 s"
fi
tac "$W/pids" | while read -r name pid; do
  if [ "$name" = containerd ] && [ -S "$C/containerd.sock" ]; then
    for t in $(ctr -a "$C/containerd.sock" -n k8s.io tasks ls -q 2>/dev/null); do
      ctr -a "$C/containerd.sock" -n k8s.io tasks kill -s SIGKILL "$t" >/dev/null 2>&1
    done
  fi
  stop "$name" "$pid"
done
# containerd-shim-runc-v2 processes of this containerd (their command line names its socket).
for p in $(pgrep -f "containerd-shim-runc-v2 .*-address $C/containerd.sock" 2>/dev/null); do
  kill -9 "$p" 2>/dev/null
done
# The pod network: kube-proxy's rules (its own cleanup), the bridge and the pod namespaces.
[ -x "${BIN:-}/kube-proxy" ] && "$BIN/kube-proxy" --cleanup >/dev/null 2>&1
for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^(cni-|box-)'); do ip netns delete "$ns"; done
ip link show cni0 >/dev/null 2>&1 && ip link delete cni0
# Chains left behind: the bridge plugin's ipMasq chains (CNI-*), the kubelet's KUBE-FIREWALL and
# KUBE-KUBELET-CANARY (it never removes them), anything of kube-proxy's --cleanup missed.
for ipt in iptables ip6tables; do
  for t in nat filter mangle; do
    for ch in $($ipt -t $t -S 2>/dev/null | awk '/^-N (CNI-|KUBE-)/{print $2}'); do
      $ipt -t $t -S 2>/dev/null | grep -E -- "-j $ch( |$)" | grep -v "^-A $ch " | sed 's/^-A/-D/' |
        while read -r r; do eval "$ipt -t $t $r"; done
      $ipt -t $t -F "$ch"
    done
    for ch in $($ipt -t $t -S 2>/dev/null | awk '/^-N (CNI-|KUBE-)/{print $2}'); do $ipt -t $t -X "$ch"; done
  done
done 2>/dev/null  # iptables-nft warns "iptables-legacy tables present" (empty, from mode probes)
rm -rf /var/lib/cni/networks/box /var/lib/cni/results/box-*
pgrep -x containerd >/dev/null || rm -rf /run/containerd
rmdir /var/lib/cni/networks /var/lib/cni/results /var/lib/cni 2>/dev/null
# The real kubelet's cgroups (cgroupRoot /boxnode), deepest first.
for h in /sys/fs/cgroup/*/boxnode; do [ -d "$h" ] && find "$h" -depth -type d -exec rmdir {} + 2>/dev/null; done
# Mounts under the work dir (kubelet volumes, containerd's rootfs/shm), deepest first.
awk -v w="$W/" 'index($2, w) == 1 {print $2}' /proc/mounts | sort -r | while read -r m; do umount -l "$m"; done
[ "${KEEP:-0}" = 1 ] && { mv "$W/pids" "$W/pids.stopped"; echo "stopped; kept $W"; exit 0; }
rm -rf "$W"; echo "stopped; removed $W"
