#!/usr/bin/env bash
# Starts a control plane (etcd, kube-apiserver, kube-controller-manager from box/bin/<k8s>)
# and the KServe controller manager built from source (box/bin/kserve-<v>/manager), installed
# from the objects the release installs (box/manifests.py), and leaves them running.
#   box/kserve/start-kserve.sh kubeflow-1.11   # KServe v0.15.2 on Kubernetes v1.34.4
#   box/kserve/start-kserve.sh kubeflow-1.10   # KServe v0.15.0 on Kubernetes v1.32.13
#   box/kserve/start-kserve.sh kserve-0.20     # KServe v0.20.0 standalone on Kubernetes v1.34.4
# KNATIVE_CRDS=1 also applies Knative Serving's CRDs and config-* ConfigMaps from the same
# install (KServe 0.20: its Knative 1.21.1's), before the manager starts (it looks for them only
# at start).
# Prints the work dir W; `source W/env` gives KUBECONFIG and K (kubectl);
# box/kserve/stop-kserve.sh [W] stops everything and removes the pod IP.
#
# BOX_NODE=<work dir of box/kubelet/up.sh> installs KServe into that running node's cluster
# instead (box/up.sh): no control plane of its own; the manager is the release's Deployment, its
# Pod (manager + kube-rbac-proxy, images from manager-images.sh pulled from the box's registry)
# run by the node's kubelet, the webhook Service's endpoints its Pod's; KServe's predictor pods
# run by the same kubelet.
#
# What stands in for what (without BOX_NODE there is
# no kubelet at all, and POD_IP is added to lo):
# - the manager runs as a host process with its Deployment's env and args, in-cluster config
#   as the kserve-controller-manager ServiceAccount (a token from the TokenRequest API
#   mounted where the kubelet mounts it, in a mount namespace), its webhook server on POD_IP:9443 (POD_IP, default 10.244.0.2, is
#   added to lo: Endpoints may not hold 127.0.0.0/8);
# - the Endpoints and EndpointSlice of kserve-webhook-server-service are written by hand
#   (kube-controller-manager runs without its `endpoint` controller, which would empty them:
#   there is no Pod); kube-apiserver runs with --enable-aggregator-routing=true, so webhooks
#   are called on those endpoints (v1.34 reads EndpointSlices, v1.32 Endpoints);
# - unless cert-manager runs in the node's cluster (box/certmanager/on-node.sh: up.sh's Kubeflow
#   targets; it then issues the release's Certificate and injects the CA itself),
#   the serving certificate is made as cert-manager v1.16.1 makes it for the release's
#   `serving-cert` Certificate with its selfSigned Issuer (a self-signed cert whose ca.crt is
#   the cert itself: pkg/controller/certificaterequests/selfsigned/selfsigned.go:207-211;
#   RSA 2048, 90 days: pkg/apis/certmanager/v1/const.go:26), stored in the Certificate's
#   secretName, and caBundle is injected as cainjector does (ca.crt of that Secret,
#   pkg/controller/cainjector/sources.go:134) by box/manifests.py --inject-ca.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
box=$(dirname "$here")
. "$box/lib.sh"
py=${PYTHON:-$(dirname "$box")/.venv/bin/python}
target=${1:?usage: start-kserve.sh kubeflow-1.11|kubeflow-1.10|kserve-0.20}
gomod=$(go env GOMODCACHE)
case $target in
kubeflow-1.11) kv=v0.15.2 kbin=v1.34.4 ns=kubeflow src=(v1.11.0) sel=(--preset kserve) ;;
kubeflow-1.10) kv=v0.15.0 kbin=v1.32.13 ns=kubeflow src=(v1.10.2) sel=(--preset kserve) ;;
kserve-0.20)
  kv=v0.20.0 kbin=v1.34.4 ns=kserve sel=(--skip-kind LLMInferenceServiceConfig)
  d=$gomod/github.com/kserve/kserve@v0.20.0/install/v0.20.0
  [ -f "$d/kserve.yaml" ] || go mod download github.com/kserve/kserve@v0.20.0
  src=("$d/kserve.yaml" "$d/kserve-cluster-resources.yaml") ;;
*) echo "unknown target $target" >&2; exit 2 ;;
esac
bin=$box/bin/$kbin
mgr=$box/bin/kserve-$kv/manager
if [ -n "${BOX_NODE:-}" ]; then
  . "$BOX_NODE/env"   # KUBECONFIG NODE_IP BIN of the node
  [ "$BIN" = "$box/bin/$kbin" ] || { echo "$BOX_NODE runs $BIN, $target needs $kbin" >&2; exit 1; }
  POD_IP=$NODE_IP
fi
POD_IP=${POD_IP:-10.244.0.2}
[ -x "$mgr" ] || { echo "no $mgr: run box/kserve/build.sh $kv" >&2; exit 1; }
W=$(mktemp -d /tmp/box-kserve.XXXXXX)
echo "$W" > "$here/.last-workdir"
K=$bin/kubectl
log() { printf '[%6.1fs] %s\n' "$(echo "$(date +%s.%N) - $T0" | bc)" "$*"; }
T0=$(date +%s.%N)
started() { echo "$1 $2" >> "$W/pids"; }  # name pid
fail() { log "FAILED: $*"; for f in "$W"/*.log; do echo "== $f"; tail -15 "$f"; done
         trap - ERR; KEEP=1 "$here/stop-kserve.sh" "$W"; exit 1; }
trap 'fail "line $LINENO: $BASH_COMMAND"' ERR

# webhook server (all addresses), metrics (127.0.0.1, the Deployment's arg); a pod has these
# ports to itself, here they are the host's (SeaweedFS's volume server listens on NODE_IP:8080)
listening() { ss -Hltn | awk '{print $4}' | grep -qE "$1"; }
if [ -z "${BOX_NODE:-}" ]; then
! listening ':9443$' || fail "port 9443 is in use on this host (the webhook server binds all addresses)"
! listening '^(127\.0\.0\.1|0\.0\.0\.0|\*|\[::\]):8080$' || fail "127.0.0.1:8080 (metrics) is in use"
! listening "^(${POD_IP//./\\.}|0\\.0\\.0\\.0|\\*|\\[::\\]):8081\$" || fail "$POD_IP:8081 (probes) is in use"
fi
if [ -n "${BOX_NODE:-}" ]; then
  P=$BOX_NODE/pki
  P_API=$("$K" config view --minify -o jsonpath='{.clusters[0].cluster.server}' | sed 's/.*://')
  API_HOST=$NODE_IP
  log "target=$target kserve=$kv kubernetes=$kbin work=$W node=$BOX_NODE apiserver=$NODE_IP:$P_API pod-ip=$POD_IP"
  cat > "$W/env" <<EOF
export KUBECONFIG=$KUBECONFIG K=$K W=$W NS=$ns POD_IP=$POD_IP KSERVE=$kv TARGET=$target
EOF
else
API_HOST=127.0.0.1
read -r P_ETCD P_PEER P_API P_KCM < <(box_free_ports 4)
log "target=$target kserve=$kv kubernetes=$kbin work=$W apiserver=127.0.0.1:$P_API pod-ip=$POD_IP"

# ---- PKI (box/lib.sh) -------------------------------------------------------
box_pki "IP:127.0.0.1"
for n in admin kcm; do box_kubeconfig "$K" "https://127.0.0.1:$P_API" "$n" "$n"; done
export KUBECONFIG=$W/admin.kubeconfig
cat > "$W/env" <<EOF
export KUBECONFIG=$W/admin.kubeconfig K=$K W=$W NS=$ns POD_IP=$POD_IP KSERVE=$kv TARGET=$target
EOF

# ---- etcd, kube-apiserver, kube-controller-manager --------------------------
"$bin/etcd" --name box --data-dir "$W/etcd" \
  --listen-client-urls "http://127.0.0.1:$P_ETCD" --advertise-client-urls "http://127.0.0.1:$P_ETCD" \
  --listen-peer-urls "http://127.0.0.1:$P_PEER" --initial-advertise-peer-urls "http://127.0.0.1:$P_PEER" \
  --initial-cluster "box=http://127.0.0.1:$P_PEER" --initial-cluster-state new \
  > "$W/etcd.log" 2>&1 &
started etcd $!
wait_for "etcd healthy" 30 curl -fsS "http://127.0.0.1:$P_ETCD/health"
"$bin/kube-apiserver" \
  --etcd-servers="http://127.0.0.1:$P_ETCD" \
  --bind-address=127.0.0.1 --secure-port="$P_API" --advertise-address=127.0.0.1 \
  --endpoint-reconciler-type=none \
  --enable-aggregator-routing=true \
  --tls-cert-file="$P/apiserver.crt" --tls-private-key-file="$P/apiserver.key" \
  --client-ca-file="$P/ca.crt" \
  --requestheader-client-ca-file="$P/front-proxy-ca.crt" --requestheader-allowed-names=front-proxy-client \
  --requestheader-username-headers=X-Remote-User --requestheader-group-headers=X-Remote-Group \
  --requestheader-extra-headers-prefix=X-Remote-Extra- \
  --proxy-client-cert-file="$P/front-proxy-client.crt" --proxy-client-key-file="$P/front-proxy-client.key" \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --service-account-key-file="$P/sa.pub" --service-account-signing-key-file="$P/sa.key" \
  --api-audiences=https://kubernetes.default.svc.cluster.local \
  --service-cluster-ip-range=10.96.0.0/12 \
  --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
  --allow-privileged=true --cert-dir="$W/apiserver-certs" \
  > "$W/apiserver.log" 2>&1 &
started kube-apiserver $!
wait_for "kube-apiserver /readyz ($("$K" version --client 2>/dev/null | head -1))" 120 "$K" get --raw /readyz
"$bin/kube-controller-manager" \
  --kubeconfig="$W/kcm.kubeconfig" \
  --authentication-kubeconfig="$W/kcm.kubeconfig" --authorization-kubeconfig="$W/kcm.kubeconfig" \
  --bind-address=127.0.0.1 --secure-port="$P_KCM" --cert-dir="$W/kcm-certs" \
  --service-account-private-key-file="$P/sa.key" --root-ca-file="$P/ca.crt" \
  --cluster-signing-cert-file="$P/ca.crt" --cluster-signing-key-file="$P/ca.key" \
  --use-service-account-credentials=true --controllers='*,-endpoint,bootstrapsigner,tokencleaner' \
  --service-cluster-ip-range=10.96.0.0/12 --leader-elect=false \
  > "$W/controller-manager.log" 2>&1 &
started kube-controller-manager $!
wait_for "kube-controller-manager /healthz" 60 curl -fsSk "https://127.0.0.1:$P_KCM/healthz"
fi

# ---- the serving certificate -------------------------------------------------
# On a node where box/certmanager/on-node.sh installed cert-manager (up.sh, Kubeflow targets),
# the release's Certificate and its Issuer are applied (after phase 1) and cert-manager's own
# controllers issue the Secret and its cainjector sets caBundle. Else it is made as cert-manager
# v1.16.1's selfSigned issuer makes it, and --inject-ca does cainjector's part.
man() { "$py" "$box/manifests.py" "${src[@]}" "$@" 2>/dev/null; }
man --kind Certificate --name serving-cert --namespace "$ns" > "$W/certificate.yaml"
read -r secret cn dns issuer < <("$py" - "$W/certificate.yaml" <<'PY'
import sys, yaml
c = next(d for d in yaml.safe_load_all(open(sys.argv[1])) if d)["spec"]
print(c["secretName"], c.get("commonName", ""), ",".join("DNS:" + n for n in c["dnsNames"]),
      c["issuerRef"]["name"])
PY
)
certmanager=0 inject=()
if [ -n "${BOX_NODE:-}" ] && "$K" get crd certificates.cert-manager.io > /dev/null 2>&1; then
  certmanager=1
  { echo ---; man --kind Issuer --name "$issuer" --namespace "$ns"; } >> "$W/certificate.yaml"
else
  C=$W/webhook-certs; mkdir -p "$C"
  ossl req -x509 -newkey rsa:2048 -nodes -days 90 -keyout "$C/tls.key" -out "$C/tls.crt" \
    -subj "/CN=$cn" -addext "subjectAltName=$dns" \
    -addext "keyUsage=critical,digitalSignature,keyEncipherment" -addext "basicConstraints=critical,CA:FALSE"
  cp "$C/tls.crt" "$C/ca.crt"     # selfSigned: ca.crt is the certificate itself
  inject=(--inject-ca "$ns/serving-cert=$C/ca.crt")
fi

# ---- the release's KServe objects, split into three phases --------------------
# 1: Namespace + CRDs; 2: the rest (RBAC, Services, ConfigMap, webhook configurations with
# caBundle, ...) but Deployments/DaemonSets (no kubelet yet) and cert-manager's kinds;
# 3: ClusterServingRuntimes and ClusterStorageContainer, which KServe's webhook admits.
man "${sel[@]}" --skip-kind Certificate --skip-kind Issuer --skip-kind LLMInferenceServiceConfig \
  "${inject[@]}" > "$W/kserve.yaml"
"$py" - "$W" <<'PY'
import sys, yaml
w = sys.argv[1]
docs = [d for d in yaml.load_all(open(f"{w}/kserve.yaml"), Loader=yaml.CSafeLoader) if d]
phase = lambda d: (1 if d["kind"] in ("Namespace", "CustomResourceDefinition") else
                   3 if d["kind"] in ("ClusterServingRuntime", "ClusterStorageContainer") else
                   0 if d["kind"] in ("Deployment", "DaemonSet") else 2)
for n in (0, 1, 2, 3):
    yaml.dump_all([d for d in docs if phase(d) == n], open(f"{w}/phase{n}.yaml", "w"),
                  Dumper=yaml.CSafeDumper, sort_keys=False)
# the manager's Deployment alone: applied as is with BOX_NODE, its args for the host process else
manager = next(d for d in docs if d["kind"] == "Deployment"
               and d["metadata"]["name"] == "kserve-controller-manager")
yaml.dump(manager, open(f"{w}/manager-deployment.yaml", "w"), Dumper=yaml.CSafeDumper,
          sort_keys=False)
PY
"$K" create namespace "$ns" --dry-run=client -o yaml | "$K" apply -f - >/dev/null  # 0.20: none in kserve.yaml
"$K" apply --server-side -f "$W/phase1.yaml" > "$W/apply-phase1.log" 2>&1 || fail "apply phase 1"
"$K" wait --for=condition=Established crd --all --timeout=60s >/dev/null
log "phase 1: $(wc -l < "$W/apply-phase1.log") Namespace/CRD objects applied, CRDs Established"
if [ "${KNATIVE_CRDS:-0}" = 1 ]; then
  # Only Knative Serving's CRDs, namespace and config-* ConfigMaps from the same install (no
  # Knative controller or webhook): enough for KServe to see Knative and build its Service.
  # KServe 0.20: those of the Knative 1.21.1 it installs (box/knative/select_objects.py).
  if [ "$target" = kserve-0.20 ]; then
    "$py" "$box/knative/select_objects.py" knative-v1.21.1 --config-only > "$W/knative.yaml" 2>/dev/null
  else
    man --kind CustomResourceDefinition --name '*.knative.dev' > "$W/knative.yaml"
    { echo "---"; man --kind Namespace --name knative-serving; echo "---"
      man --kind ConfigMap --namespace knative-serving --name 'config-*'; } >> "$W/knative.yaml"
  fi
  "$K" apply --server-side -f "$W/knative.yaml" > "$W/apply-knative.log" 2>&1 || fail "apply Knative CRDs"
  "$K" wait --for=condition=Established crd --all --timeout=60s >/dev/null
  log "KNATIVE_CRDS=1: $(wc -l < "$W/apply-knative.log") Knative CRDs/Namespace/ConfigMaps applied (no Knative controllers)"
fi
if [ $certmanager = 1 ]; then
  "$K" apply --server-side -f "$W/certificate.yaml" > /dev/null || fail "apply the Certificate and Issuer"
  "$K" -n "$ns" wait --for=condition=Ready certificate/serving-cert --timeout=120s > /dev/null \
    || { "$K" -n "$ns" describe certificate serving-cert | tail -15; fail "cert-manager did not issue $ns/serving-cert"; }
  log "Certificate $ns/serving-cert Ready: Secret $secret issued by cert-manager (Issuer $issuer)"
else
  "$K" -n "$ns" create secret tls "$secret" --cert="$C/tls.crt" --key="$C/tls.key" \
    --dry-run=client -o json | "$py" -c '
import json, sys
s = json.load(sys.stdin); s["data"]["ca.crt"] = s["data"]["tls.crt"]
s["metadata"]["annotations"] = {"cert-manager.io/certificate-name": "serving-cert",
  "cert-manager.io/issuer-name": "selfsigned-issuer", "cert-manager.io/issuer-kind": "Issuer",
  "cert-manager.io/issuer-group": "cert-manager.io"}
print(json.dumps(s))' | "$K" apply -f - >/dev/null
  log "Secret $ns/$secret: self-signed $cn ($dns), as cert-manager would issue Certificate $ns/serving-cert"
fi
"$K" apply --server-side -f "$W/phase2.yaml" > "$W/apply-phase2.log" 2>&1 || fail "apply phase 2"
log "phase 2: $(wc -l < "$W/apply-phase2.log") objects applied"
if [ $certmanager = 1 ]; then   # cainjector copies the Secret's ca.crt into each configuration
  injected() { "$K" get validatingwebhookconfigurations,mutatingwebhookconfigurations -o json | "$py" -c '
import json, sys
want = sys.argv[1]
items = [o for o in json.load(sys.stdin)["items"]
         if o["metadata"].get("annotations", {}).get("cert-manager.io/inject-ca-from") == want]
sys.exit(not items or any(not w["clientConfig"].get("caBundle") for o in items for w in o["webhooks"]))' "$ns/serving-cert"; }
  wait_for "cainjector set caBundle on KServe's webhook configurations" 120 injected
fi

if [ -n "${BOX_NODE:-}" ]; then
# ---- the manager as the release's Deployment, its Pod run by the node's kubelet ---------------
# Its images (kserve/kserve-controller, quay.io/brancz/kube-rbac-proxy) are built here
# (manager-images.sh) and served by the box's registry (the manager pulls Always); its
# webhook Service's endpoints come from its Pod, as on a cluster.
"$K" apply --server-side -f "$W/manager-deployment.yaml" > /dev/null || fail "apply the manager's Deployment"
log "Deployment $ns/kserve-controller-manager applied ($(grep -o 'image: .*' "$W/manager-deployment.yaml" | cut -d' ' -f2 | tr '\n' ' ')); the other $(( $(grep -c '^kind:' "$W/phase0.yaml") - 1 )) Deployments/DaemonSets of the install are not"
"$K" -n "$ns" rollout status deployment/kserve-controller-manager --timeout=240s > "$W/rollout.log" 2>&1 \
  || { "$K" -n "$ns" describe pods -l control-plane=kserve-controller-manager | tail -25; fail "the manager's Pod did not become Ready"; }
pod=$("$K" -n "$ns" get pods -l control-plane=kserve-controller-manager -o jsonpath='{.items[0].metadata.name}')
# The API server calls the webhooks through the Service's ClusterIP: a Ready Pod is not yet an
# endpoint kube-proxy has programmed (until then: "connection refused", seen on the second run)
cip=$("$K" -n "$ns" get service kserve-webhook-server-service -o jsonpath='{.spec.clusterIP}')
wait_for "the webhook through its Service ($cip:443)" 60 curl -sk -o /dev/null "https://$cip:443/"
log "manager Pod $pod Ready on the node ($("$K" -n "$ns" logs "$pod" -c manager 2>/dev/null | head -1 | cut -c1-160))"
else
# ---- standalone (no kubelet): the pod IP and the webhook Service's endpoints by hand ---------
if ! ip -br addr show dev lo | grep -qw "$POD_IP/32"; then
  ip addr add "$POD_IP/32" dev lo
  echo "$POD_IP" > "$W/added-ip"
fi
"$K" apply -f - > /dev/null <<EOF
apiVersion: v1
kind: Endpoints
metadata:
  name: kserve-webhook-server-service
  namespace: $ns
  labels: {box.local/written-by: start-kserve.sh}
subsets:
- addresses: [{ip: "$POD_IP"}]
  ports: [{port: 9443, protocol: TCP}]
EOF
box_endpointslice "$K" "$ns" kserve-webhook-server-service start-kserve "$POD_IP" ":9443"
log "Endpoints + EndpointSlice kserve-webhook-server-service -> $POD_IP:9443 (by hand)"

# ---- the KServe controller manager -----------------------------------------
# Its ServiceAccount volume as the kubelet projects it (token from the TokenRequest API,
# ca.crt, namespace), mounted at /var/run/secrets/kubernetes.io/serviceaccount in a mount
# namespace of its own (a tmpfs over /run, nothing changes on the host), and the
# KUBERNETES_SERVICE_* env: so it runs with in-cluster config, as in its pod (controller-
# runtime's leader election reads its namespace from that file).
mkdir -p "$W/sa"
"$K" -n "$ns" create token kserve-controller-manager --duration=24h > "$W/sa/token"
cp "$P/ca.crt" "$W/sa/ca.crt"; printf '%s' "$ns" > "$W/sa/namespace"
mapfile -t margs < <("$py" - "$W/manager-deployment.yaml" <<'PY'
import sys, yaml
d = yaml.safe_load(open(sys.argv[1]))
c = next(c for c in d["spec"]["template"]["spec"]["containers"] if c["name"] == "manager")
print("\n".join(c.get("args", [])))
PY
)
mkdir -p "$W/manager-tmp/k8s-webhook-server/serving-certs"
cp "$C/tls.crt" "$C/tls.key" "$C/ca.crt" "$W/manager-tmp/k8s-webhook-server/serving-certs/"
# The Deployment's env (POD_NAMESPACE from the fieldRef, SECRET_NAME) and args; TMPDIR moves
# controller-runtime's default cert dir ($TMPDIR/k8s-webhook-server/serving-certs, where the
# Deployment mounts the Secret) into W; the health probe binds the pod IP (in a pod: :8081).
env -u KUBECONFIG POD_NAMESPACE="$ns" SECRET_NAME="$secret" TMPDIR="$W/manager-tmp" \
  KUBERNETES_SERVICE_HOST="$API_HOST" KUBERNETES_SERVICE_PORT="$P_API" \
  unshare --mount --propagation private bash -c '
    sa=/var/run/secrets/kubernetes.io/serviceaccount
    mount -t tmpfs -o size=1m,mode=755 tmpfs /run && mkdir -p $sa && cp "$0"/* $sa/ && exec "$@"' \
  "$W/sa" "$mgr" "${margs[@]}" --health-probe-addr="$POD_IP:8081" > "$W/manager.log" 2>&1 &
started kserve-manager $!
log "manager started: $mgr ${margs[*]} --health-probe-addr=$POD_IP:8081"
wait_for "manager /readyz on $POD_IP:8081" 120 curl -fsS "http://$POD_IP:8081/readyz"
log "$(head -1 "$W/manager.log")"
fi

# ---- phase 3: the objects that go through KServe's webhooks -------------------
"$K" apply --server-side -f "$W/phase3.yaml" > "$W/apply-phase3.log" 2>&1 || fail "apply phase 3"
log "phase 3: $(wc -l < "$W/apply-phase3.log") ClusterServingRuntimes/ClusterStorageContainer applied through the webhooks"
[ ! -f "$W/pids" ] || log "RSS MiB: $(while read -r n p; do printf '%s=%d ' "$n" $(( $(ps -o rss= -p "$p") / 1024 )); done < "$W/pids")"
log "READY: source $W/env"
