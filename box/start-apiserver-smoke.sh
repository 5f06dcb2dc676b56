#!/usr/bin/env bash
# Smoke test of one built control plane: etcd + kube-apiserver +
# kube-controller-manager + kube-scheduler on 127.0.0.1 (random free ports),
# with certificates and service-account keys made by openssl. Checks:
#   kubectl get --raw /version (must report the built version), /readyz,
#   kubectl apply of a Namespace + ConfigMap, the controller-manager's work
#   (default ServiceAccount and kube-root-ca.crt ConfigMap appear in the new
#   namespace), the scheduler's work (a Pod gets bound to a fake Node),
#   then prints each process's RSS, and stops everything it started.
# Usage: box/start-apiserver-smoke.sh [bin/v1.34.4]   (KEEP=1 keeps the work dir,
#   SETTLE_S=N waits N s before measuring RSS, API_EXTRA_FLAGS adds apiserver flags)
set -euo pipefail
box=$(cd "$(dirname "$0")" && pwd)
. "$box/lib.sh"
bin=$(cd "${1:-$box/bin/v1.34.4}" && pwd)
kver=$(basename "$bin")
W=$(mktemp -d /tmp/box-smoke.XXXXXX)
pids=()
cleanup() {
  local rc=$?
  local i
  # Reverse start order: scheduler, controller-manager, apiserver, then etcd.
  for (( i=${#pids[@]}-1; i>=0; i-- )); do
    kill "${pids[i]}" 2>/dev/null || true; wait "${pids[i]}" 2>/dev/null || true
  done
  if [ "$rc" != 0 ]; then
    echo "FAILED (rc=$rc); logs:"; for f in "$W"/*.log; do echo "== $f"; tail -20 "$f"; done
  fi
  if [ "${KEEP:-0}" = 1 ] || [ "$rc" != 0 ]; then echo "work dir kept: $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT
log() { printf '[%6.1fs] %s\n' "$(echo "$(date +%s.%N) - $T0" | bc)" "$*"; }
T0=$(date +%s.%N)

read -r P_ETCD P_PEER P_API P_KCM P_SCHED < <(box_free_ports 5)
log "bin=$bin work=$W ports etcd=$P_ETCD peer=$P_PEER apiserver=$P_API kcm=$P_KCM scheduler=$P_SCHED"

# ---- PKI -------------------------------------------------------------------
box_pki "IP:127.0.0.1"
for n in admin kcm sched; do box_kubeconfig "$bin/kubectl" "https://127.0.0.1:$P_API" "$n" "$n"; done
export KUBECONFIG=$W/admin.kubeconfig
log "PKI and kubeconfigs written (openssl $(openssl version | cut -d' ' -f2))"

# ---- etcd ------------------------------------------------------------------
"$bin/etcd" --name box --data-dir "$W/etcd" \
  --listen-client-urls "http://127.0.0.1:$P_ETCD" --advertise-client-urls "http://127.0.0.1:$P_ETCD" \
  --listen-peer-urls "http://127.0.0.1:$P_PEER" --initial-advertise-peer-urls "http://127.0.0.1:$P_PEER" \
  --initial-cluster "box=http://127.0.0.1:$P_PEER" --initial-cluster-state new \
  > "$W/etcd.log" 2>&1 &
pids+=($!); PID_ETCD=$!
wait_for "etcd healthy ($("$bin/etcd" --version | head -1))" 30 \
  curl -fsS "http://127.0.0.1:$P_ETCD/health"

# ---- kube-apiserver --------------------------------------------------------
API_FLAGS=(
  --etcd-servers="http://127.0.0.1:$P_ETCD"
  --bind-address=127.0.0.1 --secure-port="$P_API" --advertise-address=127.0.0.1
  --endpoint-reconciler-type=none   # the "kubernetes" Endpoints may not hold a loopback IP
  --tls-cert-file="$P/apiserver.crt" --tls-private-key-file="$P/apiserver.key"
  --client-ca-file="$P/ca.crt"
  --requestheader-client-ca-file="$P/front-proxy-ca.crt" --requestheader-allowed-names=front-proxy-client
  --requestheader-username-headers=X-Remote-User --requestheader-group-headers=X-Remote-Group
  --requestheader-extra-headers-prefix=X-Remote-Extra-
  --proxy-client-cert-file="$P/front-proxy-client.crt" --proxy-client-key-file="$P/front-proxy-client.key"
  --service-account-issuer=https://kubernetes.default.svc.cluster.local
  --service-account-key-file="$P/sa.pub" --service-account-signing-key-file="$P/sa.key"
  --api-audiences=https://kubernetes.default.svc.cluster.local
  --service-cluster-ip-range=10.96.0.0/12
  --authorization-mode=Node,RBAC
  --enable-admission-plugins=NodeRestriction
  --allow-privileged=true
  --cert-dir="$W/apiserver-certs"
)
# Extra flags for experiments, e.g. API_EXTRA_FLAGS=--endpoint-reconciler-type=lease
# (a later flag wins over an earlier one).
read -ra extra <<< "${API_EXTRA_FLAGS:-}"
API_FLAGS+=("${extra[@]}")
"$bin/kube-apiserver" "${API_FLAGS[@]}" > "$W/apiserver.log" 2>&1 &
pids+=($!); PID_API=$!
wait_for "kube-apiserver /readyz ok" 120 "$bin/kubectl" get --raw /readyz

# ---- kube-controller-manager and kube-scheduler ----------------------------
"$bin/kube-controller-manager" \
  --kubeconfig="$W/kcm.kubeconfig" \
  --authentication-kubeconfig="$W/kcm.kubeconfig" --authorization-kubeconfig="$W/kcm.kubeconfig" \
  --bind-address=127.0.0.1 --secure-port="$P_KCM" --cert-dir="$W/kcm-certs" \
  --service-account-private-key-file="$P/sa.key" --root-ca-file="$P/ca.crt" \
  --cluster-signing-cert-file="$P/ca.crt" --cluster-signing-key-file="$P/ca.key" \
  --use-service-account-credentials=true --controllers='*,bootstrapsigner,tokencleaner' \
  --service-cluster-ip-range=10.96.0.0/12 --leader-elect=false \
  > "$W/controller-manager.log" 2>&1 &
pids+=($!); PID_KCM=$!
"$bin/kube-scheduler" \
  --kubeconfig="$W/sched.kubeconfig" \
  --authentication-kubeconfig="$W/sched.kubeconfig" --authorization-kubeconfig="$W/sched.kubeconfig" \
  --bind-address=127.0.0.1 --secure-port="$P_SCHED" --leader-elect=false \
  > "$W/scheduler.log" 2>&1 &
pids+=($!); PID_SCHED=$!
wait_for "kube-controller-manager /healthz ok" 60 curl -fsSk "https://127.0.0.1:$P_KCM/healthz"
wait_for "kube-scheduler /healthz ok" 60 curl -fsSk "https://127.0.0.1:$P_SCHED/healthz"

# ---- checks ----------------------------------------------------------------
ver=$("$bin/kubectl" get --raw /version)
echo "$ver"
echo "$ver" | grep -q "\"gitVersion\": \"$kver\"" || { log "server version is not $kver"; exit 1; }
"$bin/kubectl" version --client | head -2
"$bin/kube-apiserver" --version

"$bin/kubectl" apply -f - <<YAML
apiVersion: v1
kind: Namespace
metadata: {name: box-smoke}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: hello, namespace: box-smoke}
data: {greeting: "hello from $kver"}
YAML
[ "$("$bin/kubectl" -n box-smoke get configmap hello -o jsonpath='{.data.greeting}')" = "hello from $kver" ]
log "namespace + ConfigMap applied and read back"
wait_for "controller-manager made ServiceAccount box-smoke/default" 60 \
  "$bin/kubectl" -n box-smoke get serviceaccount default
wait_for "controller-manager published ConfigMap box-smoke/kube-root-ca.crt" 60 \
  "$bin/kubectl" -n box-smoke get configmap kube-root-ca.crt

# A Node object with no kubelet behind it, and a Pod that tolerates every taint:
# the scheduler must bind it (nothing will run it).
"$bin/kubectl" apply -f - <<'YAML'
apiVersion: v1
kind: Node
metadata: {name: fake-node, labels: {kubernetes.io/hostname: fake-node}}
YAML
"$bin/kubectl" patch node fake-node --subresource=status --type=merge -p \
  '{"status":{"capacity":{"cpu":"4","memory":"8Gi","pods":"10"},"allocatable":{"cpu":"4","memory":"8Gi","pods":"10"},"conditions":[{"type":"Ready","status":"True","reason":"Fake","message":"no kubelet","lastHeartbeatTime":null}]}}' >/dev/null
"$bin/kubectl" apply -f - <<'YAML'
apiVersion: v1
kind: Pod
metadata: {name: scheduled, namespace: box-smoke}
spec:
  automountServiceAccountToken: false
  tolerations: [{operator: Exists}]
  containers: [{name: c, image: registry.invalid/none:0}]
YAML
wait_for "scheduler bound box-smoke/scheduled to $("$bin/kubectl" get nodes -o name)" 60 \
  bash -c "[ -n \"\$('$bin/kubectl' -n box-smoke get pod scheduled -o jsonpath='{.spec.nodeName}')\" ]"

# ---- memory ----------------------------------------------------------------
sleep "${SETTLE_S:-5}"
log "RSS after the checks (+${SETTLE_S:-5}s):"
for n in ETCD:etcd API:kube-apiserver KCM:kube-controller-manager SCHED:kube-scheduler; do
  pid_var=PID_${n%%:*}
  printf '  %-24s pid %-7s RSS %4d MiB\n' "${n#*:}" "${!pid_var}" \
    $(( $(ps -o rss= -p "${!pid_var}") / 1024 ))
done
log "SMOKE OK ($kver)"
