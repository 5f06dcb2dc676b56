#!/usr/bin/env bash
# Starts a one-node cluster from the box's binaries: etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler (flags as box/start-apiserver-smoke.sh, plus the networking ones below), then the
# node: kube-proxy (iptables mode) and the kubelet from the same Kubernetes source on Debian's
# containerd + runc (real-kubelet.sh), then CoreDNS as kubeadm installs it (the kube-system/coredns
# Deployment, image built from bin/<ver>/coredns, and the kube-dns Service).
# Usage: box/kubelet/up.sh [bin/v1.34.4] [WORKDIR]     (default WORKDIR /tmp/box-node)
# Writes WORKDIR/env (KUBECONFIG=..., NODE_IP=...) and WORKDIR/pids; box/kubelet/down.sh WORKDIR
# stops everything and removes the pod network.
# Networking (one node): node IP = the source address of the default route (or NODE_IP=...);
# Service CIDR 10.96.0.0/12 (apiserver and controller-manager), cluster DNS 10.96.0.10, pod CIDR
# CLUSTER_CIDR (default 10.244.0.0/16; controller-manager --cluster-cidr) of which the node gets the
# first /24, e.g. 10.244.0.0/24 (--allocate-node-cidrs), on the bridge cni0 (gateway .1).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
box=$(dirname "$here")
. "$box/lib.sh"
bin=$(cd "${1:-$box/bin/v1.34.4}" && pwd)
kver=$(basename "$bin")
W=${2:-/tmp/box-node}
NODE=${NODE_NAME:-box-node}
NODE_IP=${NODE_IP:-$(ip -4 route get 1.1.1.1 | sed -n 's/.* src \([0-9.]*\).*/\1/p')}
SVC_CIDR=10.96.0.0/12 CLUSTER_CIDR=${CLUSTER_CIDR:-10.244.0.0/16} DNS_IP=10.96.0.10
# The pod network must not overlap an address already on this machine (e.g. another stand-in's
# bridge): the host would route pod IPs elsewhere ("no route to host", pods' ARP INCOMPLETE).
if clash=$(ip -4 -o addr show to "$CLUSTER_CIDR" | awk '{print $2, $4}') && [ -n "$clash" ]; then
  echo "pod CIDR $CLUSTER_CIDR overlaps addresses here: $clash (set CLUSTER_CIDR=...)" >&2; exit 1
fi
[ ! -e "$W/pids" ] || { echo "$W/pids exists: run down.sh $W first" >&2; exit 1; }
mkdir -p "$W"; : > "$W/pids"
T0=$(date +%s.%N)
log() { printf '[%6.1fs] %s\n' "$(echo "$(date +%s.%N) - $T0" | bc)" "$*"; }
started() { echo "$1 $2" >> "$W/pids"; }   # name pid
read -r P_ETCD P_PEER P_API P_KCM P_SCHED P_KL P_KP P_KPH < <(box_free_ports 8 0.0.0.0)
log "$kver node=$NODE ip=$NODE_IP work=$W apiserver=https://$NODE_IP:$P_API"

# ---- PKI (box/lib.sh), the node's certs, kubeconfigs ----------------------------
box_pki "IP:127.0.0.1,IP:$NODE_IP"
cert kubelet-serving "/CN=$NODE" "$BOX_SERVER_EXT
subjectAltName=IP:127.0.0.1,IP:$NODE_IP,DNS:$NODE"
cert kubelet "/O=system:nodes/CN=system:node:$NODE" "$BOX_CLIENT_EXT"
cert kube-proxy "/CN=system:kube-proxy" "$BOX_CLIENT_EXT"
cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" "$BOX_CLIENT_EXT"
for n in admin kcm sched kubelet kube-proxy; do
  box_kubeconfig "$bin/kubectl" "https://$NODE_IP:$P_API" "$n" "$n"
done
export KUBECONFIG=$W/admin.kubeconfig
cat > "$W/env" <<EOF
export KUBECONFIG=$KUBECONFIG NODE_IP=$NODE_IP NODE_NAME=$NODE BIN=$bin
EOF

# ---- control plane -------------------------------------------------------------
"$bin/etcd" --name box --data-dir "$W/etcd" \
  --listen-client-urls "http://127.0.0.1:$P_ETCD" --advertise-client-urls "http://127.0.0.1:$P_ETCD" \
  --listen-peer-urls "http://127.0.0.1:$P_PEER" --initial-advertise-peer-urls "http://127.0.0.1:$P_PEER" \
  --initial-cluster "box=http://127.0.0.1:$P_PEER" --initial-cluster-state new > "$W/etcd.log" 2>&1 &
started etcd $!
wait_for "etcd healthy" 30 curl -fsS "http://127.0.0.1:$P_ETCD/health"
# Bound to all addresses and advertised on the node IP (not loopback), so that the "kubernetes"
# Service (10.96.0.1:443) has an endpoint pods can reach through kube-proxy.
"$bin/kube-apiserver" --etcd-servers="http://127.0.0.1:$P_ETCD" \
  --bind-address=0.0.0.0 --secure-port="$P_API" --advertise-address="$NODE_IP" \
  --tls-cert-file="$P/apiserver.crt" --tls-private-key-file="$P/apiserver.key" --client-ca-file="$P/ca.crt" \
  --kubelet-client-certificate="$P/apiserver-kubelet-client.crt" \
  --kubelet-client-key="$P/apiserver-kubelet-client.key" --kubelet-certificate-authority="$P/ca.crt" \
  --kubelet-preferred-address-types=InternalIP,Hostname \
  --requestheader-client-ca-file="$P/front-proxy-ca.crt" --requestheader-allowed-names=front-proxy-client \
  --requestheader-username-headers=X-Remote-User --requestheader-group-headers=X-Remote-Group \
  --requestheader-extra-headers-prefix=X-Remote-Extra- \
  --proxy-client-cert-file="$P/front-proxy-client.crt" --proxy-client-key-file="$P/front-proxy-client.key" \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --service-account-key-file="$P/sa.pub" --service-account-signing-key-file="$P/sa.key" \
  --api-audiences=https://kubernetes.default.svc.cluster.local \
  --service-cluster-ip-range=$SVC_CIDR --authorization-mode=Node,RBAC \
  --enable-admission-plugins=NodeRestriction --allow-privileged=true --cert-dir="$W/apiserver-certs" \
  > "$W/apiserver.log" 2>&1 &
started kube-apiserver $!
wait_for "kube-apiserver /readyz" 120 "$bin/kubectl" get --raw /readyz
"$bin/kube-controller-manager" --kubeconfig="$W/kcm.kubeconfig" \
  --authentication-kubeconfig="$W/kcm.kubeconfig" --authorization-kubeconfig="$W/kcm.kubeconfig" \
  --bind-address=127.0.0.1 --secure-port="$P_KCM" --cert-dir="$W/kcm-certs" \
  --service-account-private-key-file="$P/sa.key" --root-ca-file="$P/ca.crt" \
  --cluster-signing-cert-file="$P/ca.crt" --cluster-signing-key-file="$P/ca.key" \
  --use-service-account-credentials=true --controllers='*,bootstrapsigner,tokencleaner' \
  --service-cluster-ip-range=$SVC_CIDR --allocate-node-cidrs=true --cluster-cidr=$CLUSTER_CIDR \
  --node-cidr-mask-size=24 --leader-elect=false > "$W/controller-manager.log" 2>&1 &
started kube-controller-manager $!
"$bin/kube-scheduler" --kubeconfig="$W/sched.kubeconfig" \
  --authentication-kubeconfig="$W/sched.kubeconfig" --authorization-kubeconfig="$W/sched.kubeconfig" \
  --bind-address=127.0.0.1 --secure-port="$P_SCHED" --leader-elect=false > "$W/scheduler.log" 2>&1 &
started kube-scheduler $!
wait_for "kube-controller-manager /healthz" 60 curl -fsSk "https://127.0.0.1:$P_KCM/healthz"
wait_for "kube-scheduler /healthz" 60 curl -fsSk "https://127.0.0.1:$P_SCHED/healthz"

# ---- node --------------------------------------------------------------------
sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1
"$here/real-kubelet.sh" "$bin" "$W" "$NODE" "$NODE_IP" "$P_KL" "$DNS_IP"
wait_for "node $NODE Ready" 120 bash -c \
  "'$bin/kubectl' get node $NODE -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}' | grep -qx True"
# kube-proxy as kubeadm's DaemonSet runs it (hostNetwork), iptables mode, with a config file; after
# the Node exists, as a DaemonSet pod would (started before, v1.32's kube-proxy retries "Failed to
# retrieve node info" with backoff and programs no Service for ~30 s).
cat > "$W/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $W/kube-proxy.kubeconfig}
mode: iptables
clusterCIDR: $CLUSTER_CIDR
hostnameOverride: $NODE
bindAddress: 0.0.0.0
healthzBindAddress: 127.0.0.1:$P_KPH
metricsBindAddress: 127.0.0.1:$P_KP
conntrack: {maxPerCore: 0}
EOF
"$bin/kube-proxy" --config="$W/kube-proxy.yaml" > "$W/kube-proxy.log" 2>&1 &
started kube-proxy $!
wait_for "kube-proxy /healthz" 60 curl -fsS "http://127.0.0.1:$P_KPH/healthz"

# ---- CoreDNS -------------------------------------------------------------------
cver=$("$bin/coredns" -version | sed -n 's/^CoreDNS-//p')
sed -e "s/@VERSION@/$cver/g" -e "s/@DNS_IP@/$DNS_IP/g" "$here/coredns.yaml" | "$bin/kubectl" apply -f - >/dev/null
# (not the Deployment's Available: with maxUnavailable 1 and 1 replica it is true at once)
wait_for "CoreDNS $cver Ready" 120 "$bin/kubectl" -n kube-system wait --for=condition=Ready \
  pod -l k8s-app=kube-dns --timeout=2s
log "UP ($kver): source $W/env"
