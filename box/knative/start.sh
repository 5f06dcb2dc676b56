#!/usr/bin/env bash
# Starts a control plane (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler from box/bin/<k8s>) and Knative Serving knative-v1.16.2 on it:
# the objects Kubeflow installs for Knative (select_objects.py, from the
# release's rendered example.yaml.gz), and the controller, webhook, activator,
# autoscaler and the KIngress stand-in (in net-istio-controller's pod) as host
# processes run by podlet.py, each in its own network namespace on the bridge
# kn-br0 (10.244.0.0/24; the host, where the apiserver listens, is 10.244.0.1).
#
# Usage: box/knative/start.sh [kubeflow-1.11|kubeflow-1.10]   (default kubeflow-1.11)
# Leaves everything running; prints `export KUBECONFIG=...`. Stop with stop.sh.
# State: /tmp/kn-box.current -> the work dir (logs, pids, kubeconfigs).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
box=$(cd "$here/.." && pwd)
. "$box/lib.sh"
target=${1:-kubeflow-1.11}
case $target in
  kubeflow-1.11) bin=$box/bin/v1.34.4; tag=v1.11.0 ;;
  kubeflow-1.10) bin=$box/bin/v1.32.13; tag=v1.10.2 ;;
  *) echo "unknown target $target" >&2; exit 2 ;;
esac
[ -e /tmp/kn-box.current ] && { echo "already running ($(cat /tmp/kn-box.current)); run stop.sh first" >&2; exit 1; }
for b in controller webhook activator autoscaler queue kingress; do
  [ -x "$here/bin/$b" ] || { echo "missing $here/bin/$b: run build.sh" >&2; exit 1; }
done
W=$(mktemp -d /tmp/kn-box.XXXXXX)
echo "$W" > /tmp/kn-box.current
echo "$target" > "$W/target"
T0=$(date +%s.%N)
log() { printf '[%6.1fs] %s\n' "$(echo "$(date +%s.%N) - $T0" | bc)" "$*"; }
started() { echo "$2" >> "$W/pids"; echo "$1 $2" >> "$W/pids.named"; }
trap 'rc=$?; [ $rc = 0 ] || { log "FAILED rc=$rc; stopping"; "$here/stop.sh"; }' EXIT

HOSTIP=10.244.0.1
# ---- network: a bridge for the pods' veths ------------------------------------------
ip link add kn-br0 type bridge
ip addr add "$HOSTIP/24" dev kn-br0
ip link set kn-br0 up
sysctl -qw net.ipv4.ip_forward=1 || true

read -r P_ETCD P_PEER P_API P_KCM P_SCHED < <(box_free_ports 5)
log "target=$target k8s=$(basename "$bin") work=$W apiserver=https://$HOSTIP:$P_API"

# ---- PKI (box/lib.sh, plus the bridge address in the SAN) -----------------------
box_pki "IP:$HOSTIP,IP:127.0.0.1"
for n in admin kcm sched; do box_kubeconfig "$bin/kubectl" "https://$HOSTIP:$P_API" "$n" "$n"; done
export KUBECONFIG=$W/admin.kubeconfig
K() { "$bin/kubectl" "$@"; }

# ---- control plane ---------------------------------------------------------------
"$bin/etcd" --name box --data-dir "$W/etcd" \
  --listen-client-urls "http://127.0.0.1:$P_ETCD" --advertise-client-urls "http://127.0.0.1:$P_ETCD" \
  --listen-peer-urls "http://127.0.0.1:$P_PEER" --initial-advertise-peer-urls "http://127.0.0.1:$P_PEER" \
  --initial-cluster "box=http://127.0.0.1:$P_PEER" --initial-cluster-state new > "$W/etcd.log" 2>&1 &
started etcd $!
wait_for "etcd healthy" 30 curl -fsS "http://127.0.0.1:$P_ETCD/health"
# --enable-aggregator-routing: the apiserver calls webhooks (and aggregated APIs) at an
# Endpoints address of their Service instead of its ClusterIP (there is no kube-proxy).
"$bin/kube-apiserver" --etcd-servers="http://127.0.0.1:$P_ETCD" \
  --bind-address="$HOSTIP" --secure-port="$P_API" --advertise-address="$HOSTIP" \
  --enable-aggregator-routing=true \
  --tls-cert-file="$P/apiserver.crt" --tls-private-key-file="$P/apiserver.key" --client-ca-file="$P/ca.crt" \
  --requestheader-client-ca-file="$P/front-proxy-ca.crt" --requestheader-allowed-names=front-proxy-client \
  --requestheader-username-headers=X-Remote-User --requestheader-group-headers=X-Remote-Group \
  --requestheader-extra-headers-prefix=X-Remote-Extra- \
  --proxy-client-cert-file="$P/front-proxy-client.crt" --proxy-client-key-file="$P/front-proxy-client.key" \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --service-account-key-file="$P/sa.pub" --service-account-signing-key-file="$P/sa.key" \
  --api-audiences=https://kubernetes.default.svc.cluster.local \
  --service-cluster-ip-range=10.96.0.0/12 --authorization-mode=Node,RBAC \
  --enable-admission-plugins=NodeRestriction --allow-privileged=true \
  --cert-dir="$W/apiserver-certs" > "$W/apiserver.log" 2>&1 &
started kube-apiserver $!
wait_for "kube-apiserver /readyz" 120 K get --raw /readyz
# No node lifecycle controller: the Node below has no kubelet to renew its Lease, and
# that controller would taint it and mark its pods NotReady after 40 s.
"$bin/kube-controller-manager" --kubeconfig="$W/kcm.kubeconfig" \
  --authentication-kubeconfig="$W/kcm.kubeconfig" --authorization-kubeconfig="$W/kcm.kubeconfig" \
  --bind-address=127.0.0.1 --secure-port="$P_KCM" --cert-dir="$W/kcm-certs" \
  --service-account-private-key-file="$P/sa.key" --root-ca-file="$P/ca.crt" \
  --cluster-signing-cert-file="$P/ca.crt" --cluster-signing-key-file="$P/ca.key" \
  --use-service-account-credentials=true \
  --controllers='*,bootstrapsigner,tokencleaner,-node-lifecycle-controller' \
  --service-cluster-ip-range=10.96.0.0/12 --leader-elect=false > "$W/controller-manager.log" 2>&1 &
started kube-controller-manager $!
"$bin/kube-scheduler" --kubeconfig="$W/sched.kubeconfig" \
  --authentication-kubeconfig="$W/sched.kubeconfig" --authorization-kubeconfig="$W/sched.kubeconfig" \
  --bind-address=127.0.0.1 --secure-port="$P_SCHED" --leader-elect=false > "$W/scheduler.log" 2>&1 &
started kube-scheduler $!
wait_for "kube-controller-manager /healthz" 60 curl -fsSk "https://127.0.0.1:$P_KCM/healthz"
wait_for "kube-scheduler /healthz" 60 curl -fsSk "https://127.0.0.1:$P_SCHED/healthz"

# The Node podlet.py runs pods for (no kubelet registers it).
K apply -f - >/dev/null <<'YAML'
apiVersion: v1
kind: Node
metadata: {name: box-node, labels: {kubernetes.io/hostname: box-node, kubernetes.io/os: linux, kubernetes.io/arch: amd64}}
YAML
K patch node box-node --subresource=status --type=merge -p \
  "{\"status\":{\"capacity\":{\"cpu\":\"16\",\"memory\":\"64Gi\",\"pods\":\"110\"},\"allocatable\":{\"cpu\":\"16\",\"memory\":\"64Gi\",\"pods\":\"110\"},\"addresses\":[{\"type\":\"InternalIP\",\"address\":\"$HOSTIP\"}],\"conditions\":[{\"type\":\"Ready\",\"status\":\"True\",\"reason\":\"KubeletReady\",\"message\":\"box: pods run by podlet.py\"}]}}" >/dev/null
# The TaintNodesByCondition admission plugin gave the new Node node.kubernetes.io/not-ready:
# NoSchedule; the node lifecycle controller (disabled above) would lift it once Ready.
K taint node box-node node.kubernetes.io/not-ready:NoSchedule- >/dev/null
log "Node box-node Ready (no kubelet; podlet.py runs the pods it has binaries for)"

# ---- podlet: runs the Knative pods from the binaries built here --------------------
img=gcr.io/knative-releases/knative.dev
extra=()
if [ "${RUN_REVISION_PODS:-0}" = 1 ]; then
  # Also run revision pods of demo.sh's image: queue-proxy (config-deployment's
  # queue-sidecar-image) from bin/queue, the user container from hello-app.py.
  extra=(--map "$img/serving/cmd/queue=$here/bin/queue"
         --map "registry.box.invalid/imagelingo/hello=$here/hello-app.py")
fi
python3 "$here/podlet.py" --kubectl "$bin/kubectl" --kubeconfig "$W/admin.kubeconfig" --workdir "$W" \
  --map "$img/serving/cmd/controller=$here/bin/controller" \
  --map "$img/serving/cmd/webhook=$here/bin/webhook" \
  --map "$img/serving/cmd/activator=$here/bin/activator" \
  --map "$img/serving/cmd/autoscaler=$here/bin/autoscaler" \
  --map "$img/net-istio/cmd/controller=$here/bin/kingress" \
  "${extra[@]}" > "$W/podlet.log" 2>&1 &
started podlet $!

# ---- Knative Serving's objects, as the release installs them ------------------------
python3 "$here/select_objects.py" "$tag" > "$W/knative-serving.yaml" 2>"$W/select.log"
log "$(tail -1 "$W/select.log" | sed 's/^# //')"
# One kubectl apply of the whole selection, in the release's order, as `kubectl apply -k`
# would send it. Objects that a not-yet-running webhook must admit fail the first time
# (as on a real cluster); they are applied again once the webhook is up.
K apply --server-side -f "$W/knative-serving.yaml" > "$W/apply-1.log" 2>&1 || \
  log "first apply: $(grep -c 'error\|Error' "$W/apply-1.log") errors (see apply-1.log)"
wait_for "webhook pod Ready" 180 bash -c "[ \"\$('$bin/kubectl' -n knative-serving get pod -l app=webhook -o jsonpath='{.items[0].status.conditions[?(@.type==\"Ready\")].status}')\" = True ]"
wait_for "webhook Endpoints populated" 60 bash -c "[ -n \"\$('$bin/kubectl' -n knative-serving get endpoints webhook -o jsonpath='{.subsets[0].addresses[0].ip}')\" ]"
# The webhook patches the caBundle into its configurations once its certificate exists.
wait_for "webhook configurations carry the webhook's CA" 120 bash -c "[ -n \"\$('$bin/kubectl' get validatingwebhookconfiguration validation.webhook.serving.knative.dev -o jsonpath='{.webhooks[0].clientConfig.caBundle}')\" ]"
for i in 1 2 3 4 5 6 7 8 9 10; do
  if K apply --server-side --force-conflicts -f "$W/knative-serving.yaml" > "$W/apply-2.log" 2>&1; then
    log "second apply: all $(grep -c . "$W/apply-2.log") objects applied"; break
  fi
  sleep 3
done
for d in controller activator autoscaler net-istio-controller; do
  wait_for "$d pod Ready" 180 bash -c "[ \"\$('$bin/kubectl' -n knative-serving get pod -l app=$d -o jsonpath='{.items[0].status.conditions[?(@.type==\"Ready\")].status}')\" = True ]"
done
K -n knative-serving get pods -o wide
log "Knative Serving up on $target; export KUBECONFIG=$W/admin.kubeconfig"
