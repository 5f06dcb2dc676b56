#!/usr/bin/env bash
# Issue 26 defect 3 on a box node with the enforcer (box/kubelet/up.sh, box/netpol/enforcer.sh):
# namespace `imagelingo` and the NetworkPolicy as `kubectl kustomize manifests/overlays/
# minio-standard` renders them; a predictor pod labelled as KServe v0.15.2 labels it in Standard
# mode (box/kserve/observed/v0.15.2-minio-standard-pod.yaml: busybox httpd on 8080 stands in for
# TorchServe) behind a Service (80 -> 8080); callers in a Kubeflow profile namespace (labels of
# kubeflow/manifests v1.11.0 applications/profiles/pss/namespace-labels.yaml), in istio-system and
# in `imagelingo` itself. Prints one line per caller: ALLOWED or BLOCKED (TCP connect + HTTP GET
# through the Service's DNS name, 4 s timeout).
# Usage: box/netpol/demo.sh [WORKDIR] [OVERLAY_DIR]   (default /tmp/box-node, manifests/overlays/minio-standard)
set -euo pipefail
W=${1:-/tmp/box-node}
repo=$(cd "$(dirname "$0")/../.." && pwd)
overlay=${2:-$repo/manifests/overlays/minio-standard}
. "$W/env"
k() { "$BIN/kubectl" "$@"; }
# The overlay's Namespace and NetworkPolicy objects only.
k kustomize "$overlay" | python3 -c '
import sys, yaml
docs = [d for d in yaml.safe_load_all(sys.stdin) if d and d["kind"] in ("Namespace", "NetworkPolicy")]
print(yaml.safe_dump_all(docs))' > "$W/netpol-overlay.yaml"
k apply -f "$W/netpol-overlay.yaml"
k create namespace team-a --dry-run=client -o yaml | k apply -f -
k label --overwrite namespace team-a katib.kubeflow.org/metrics-collector-injection=enabled \
  serving.kubeflow.org/inferenceservice=enabled pipelines.kubeflow.org/enabled=true \
  app.kubernetes.io/part-of=kubeflow-profile pod-security.kubernetes.io/enforce=baseline
k create namespace istio-system --dry-run=client -o yaml | k apply -f -
k apply -f - <<'YAML'
apiVersion: v1
kind: Pod
metadata:
  name: predictor
  namespace: imagelingo
  labels:
    app: isvc.imagelingo-predictor
    app.kubernetes.io/managed-by: imagelingo-deploy
    app.kubernetes.io/part-of: imagelingo
    component: predictor
    serving.kserve.io/inferenceservice: imagelingo
spec:
  containers:
  - name: kserve-container
    image: box.local/busybox:1.35
    imagePullPolicy: Never
    command: [httpd, -f, -p, "8080", -h, /www]
    ports: [{containerPort: 8080, protocol: TCP}]
    readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 2}
---
apiVersion: v1
kind: Service
metadata: {name: imagelingo-predictor, namespace: imagelingo}
spec:
  selector: {app: isvc.imagelingo-predictor}
  ports: [{name: http, port: 80, targetPort: 8080, protocol: TCP}]
YAML
for ns in team-a istio-system imagelingo; do
  k apply -f - <<YAML
apiVersion: v1
kind: Pod
metadata: {name: caller, namespace: $ns, labels: {app: caller}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {name: c, image: box.local/busybox:1.35, imagePullPolicy: Never, command: [sleep, "3600"]}
YAML
done
k -n imagelingo wait --for=condition=Ready pod/predictor --timeout=90s >/dev/null
for ns in team-a istio-system imagelingo; do k -n "$ns" wait --for=condition=Ready pod/caller --timeout=90s >/dev/null; done
k get pods -A -o wide | grep -E 'caller|predictor'
svc=imagelingo-predictor.imagelingo.svc.cluster.local
for ns in team-a istio-system imagelingo; do
  out=$(k -n "$ns" exec caller -- sh -c "printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 4 $svc 80 2>&1 | head -1" 2>&1 || true)
  case $out in *"200 OK"*) v=ALLOWED ;; *) v=BLOCKED ;; esac
  echo "caller in $ns ($(k get ns "$ns" -o jsonpath='{.metadata.labels.app\.kubernetes\.io/part-of}')) -> $svc:80: $v  [$out]"
done
