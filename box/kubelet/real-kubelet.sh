#!/usr/bin/env bash
# The real kubelet (bin/<ver>/kubelet, from the same k8s.io/kubernetes source) on Debian's
# containerd 1.6.20 + runc 1.1.5 + containernetworking-plugins 1.1.1 (bridge + host-local IPAM on
# the node's podCIDR). Called by up.sh with KUBELET=real: BIN WORKDIR NODE NODE_IP PORT DNS_IP.
# Images come from no registry: mkimage.py builds OCI archives (images/*.sh) that
# `ctr -n k8s.io images import` loads; the sandbox ("pause") image is pause.c of the same source.
# BOX_CONTAINERD_ROOT keeps containerd's content and snapshots outside WORKDIR (a node's
# /var/lib/containerd: imported images outlive the node; box/up.sh uses it for the 6 GB runtime).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=$1 W=$2 NODE=$3 NODE_IP=$4 PORT=$5 DNS_IP=$6
C=$W/containerd; mkdir -p "$C/net.d" "$W/kubelet" "$W/manifests"
started() { echo "$1 $2" >> "$W/pids"; }
kver=$(basename "$bin")
pause_ver=3.10.1; [[ $kver == v1.32.* ]] && pause_ver=3.10   # kubeadm constants.go PauseVersion
cat > "$C/config.toml" <<EOF
version = 2
root = "${BOX_CONTAINERD_ROOT:-$C/root}"
state = "$C/state"
[grpc]
  address = "$C/containerd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  # This VM's root lacks CAP_SYS_RESOURCE (CapBnd 000001fffeffffff), so runc cannot lower
  # oom_score_adj below 0: the pod sandbox's -998 failed with "nsexec: failed to update
  # /proc/self/oom_score_adj: Permission denied" -> "can't get final child's PID from pipe: EOF".
  # containerd's option for that case (rootless) clamps to containerd's own value (0).
  restrict_oom_score_adj = true
  sandbox_image = "registry.k8s.io/pause:$pause_ver"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$C/net.d"
EOF
# BOX_REGISTRY (box/lib.sh): docker.io and quay.io images come from the box's registry, as
# from a mirror (containerd 1.6 docs/hosts.md: hosts.toml under config_path, tried before the
# server, which cannot be reached from here).
if [ -n "${BOX_REGISTRY:-}" ]; then
  cat >> "$C/config.toml" <<EOF
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$C/certs.d"
EOF
  for host in docker.io=https://registry-1.docker.io quay.io=https://quay.io; do
    mkdir -p "$C/certs.d/${host%%=*}"
    printf 'server = "%s"\n[host."http://%s"]\n  capabilities = ["pull", "resolve"]\n' \
      "${host#*=}" "$BOX_REGISTRY" > "$C/certs.d/${host%%=*}/hosts.toml"
  done
fi
containerd --config "$C/config.toml" > "$W/containerd.log" 2>&1 &
started containerd $!
for _ in $(seq 50); do [ -S "$C/containerd.sock" ] && break; sleep 0.2; done
ctr() { command ctr -a "$C/containerd.sock" -n k8s.io "$@"; }
# Images: pause from upstream build/pause/linux/pause.c, then whatever images/*.sh build.
src=$(cd "$here/../k8s-v${kver:1:4}" && go list -m -f '{{.Dir}}' k8s.io/kubernetes)
mkdir -p "$W/img/pause"
gcc -Os -static -DVERSION="$pause_ver" -o "$W/img/pause/pause" "$src/build/pause/linux/pause.c"
python3 "$here/mkimage.py" "$W/img/pause" "registry.k8s.io/pause:$pause_ver" "$W/img/pause.tar" --entrypoint /pause
ctr images import --all-platforms "$W/img/pause.tar" >/dev/null
for s in "$here"/images/*.sh; do "$s" "$bin" "$W/img"; done
# Plus every *.oci.tar in $BOX_IMAGE_DIRS (space-separated folders: other parts of the box).
for t in "$W"/img/*.oci.tar $(for d in ${BOX_IMAGE_DIRS:-}; do ls "$d"/*.oci.tar 2>/dev/null; done); do
  ctr images import --all-platforms "$t" >/dev/null
done
echo "images imported: $(ctr images ls -q | grep -v '^sha256:' | tr '\n' ' ')"
# The node's podCIDR is assigned by the controller-manager after the Node registers; the bridge
# CNI config is written once it is known (as a CNI DaemonSet would).
cat > "$W/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $W/pki/ca.crt}
authorization: {mode: Webhook}
cgroupDriver: cgroupfs
cgroupRoot: /boxnode
containerRuntimeEndpoint: unix://$C/containerd.sock
clusterDNS: [$DNS_IP]
clusterDomain: cluster.local
failSwapOn: false
address: $NODE_IP
port: $PORT
readOnlyPort: 0
healthzPort: 0
tlsCertFile: $W/pki/kubelet-serving.crt
tlsPrivateKeyFile: $W/pki/kubelet-serving.key
staticPodPath: $W/manifests
podLogsDir: $W/pod-logs
resolvConf: /etc/resolv.conf
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%}
imageGCHighThresholdPercent: 100
EOF
# State outside WORKDIR that down.sh removes: /var/lib/cni/{networks/box,results/box-*} (host-local
# IPAM, CNI results), /run/netns/cni-* (containerd's pod netns), /run/containerd (runc state, shim
# sockets, fifos), the cgroups /sys/fs/cgroup/*/boxnode.
# cgroupRoot must exist in every v1 hierarchy ("cgroup ["boxnode"] has some missing paths"); a v1
# cpuset child starts with no CPUs/memory nodes, so they are copied from the root.
for h in /sys/fs/cgroup/*/; do
  [ -e "$h/cgroup.procs" ] && [ "$h" != /sys/fs/cgroup/unified/ ] && mkdir -p "$h/boxnode"
done
cat /sys/fs/cgroup/cpuset/cpuset.cpus > /sys/fs/cgroup/cpuset/boxnode/cpuset.cpus
cat /sys/fs/cgroup/cpuset/cpuset.mems > /sys/fs/cgroup/cpuset/boxnode/cpuset.mems
"$bin/kubelet" --config="$W/kubelet.yaml" --kubeconfig="$W/kubelet.kubeconfig" \
  --hostname-override="$NODE" --node-ip="$NODE_IP" --root-dir="$W/kubelet" \
  > "$W/kubelet.log" 2>&1 &
started kubelet $!
for _ in $(seq 120); do
  cidr=$("$bin/kubectl" --kubeconfig="$W/admin.kubeconfig" get node "$NODE" -o jsonpath='{.spec.podCIDR}' 2>/dev/null || true)
  [ -n "$cidr" ] && break; sleep 0.5
done
cat > "$C/net.d/10-box.conflist" <<EOF
{"cniVersion": "0.4.0", "name": "box", "plugins": [
  {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "$cidr"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}
EOF
echo "real kubelet started; podCIDR $cidr"
