#!/usr/bin/env bash
# Runs the NetworkPolicy enforcer on a box node started by box/kubelet/up.sh, as upstream installs
# it: sigs.k8s.io/kube-network-policies v0.8.0 install.yaml (ServiceAccount, ClusterRole/Binding,
# the kube-system DaemonSet: hostNetwork, privileged, --hostname-override=$(MY_NODE_NAME) --v=2
# --nfqueue-id=98), read from the module cache, not re-typed. Changes, each for this box: the image
# tag is the version built here (v0.8.0; upstream's v0.8.0 install.yaml still names v0.7.0) with
# imagePullPolicy Never (nothing can be pulled), and --metrics-bind-address on loopback at a free
# port (upstream's default :9080 on the host network could collide with other work here), and no
# mountPropagation: HostToContainer on the /var/run/netns volume: this VM's / is a private mount,
# and containerd refuses it: `failed to generate spec: path "/var/run/netns" is mounted on "/" but
# it is not a shared or slave mount` (the volume serves the NRI plugin; containerd 1.6 has no NRI).
# The image must already be on the node: BOX_IMAGE_DIRS=<dir with kube-network-policies.oci.tar>
# before up.sh, or `ctr import`. Usage: box/netpol/enforcer.sh [WORKDIR]   (default /tmp/box-node)
set -euo pipefail
W=${1:-/tmp/box-node}
. "$W/env"
src=$(cd "$(dirname "$0")" && GOFLAGS=-mod=mod go list -m -f '{{.Dir}}' sigs.k8s.io/kube-network-policies)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
sed -e 's#image: registry.k8s.io/networking/kube-network-policies:v0.7.0#image: registry.k8s.io/networking/kube-network-policies:v0.8.0\n        imagePullPolicy: Never#' \
    -e "s#- --nfqueue-id=98#- --nfqueue-id=98\n        - --metrics-bind-address=127.0.0.1:$port#" \
    -e '/mountPropagation: HostToContainer/d' "$src/install.yaml" > "$W/netpol-install.yaml"
"$BIN/kubectl" apply -f "$W/netpol-install.yaml"
"$BIN/kubectl" -n kube-system rollout status ds/kube-network-policies --timeout=120s
