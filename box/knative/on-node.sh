#!/usr/bin/env bash
# Knative Serving knative-v1.16.2 on the box's node (box/up.sh): the objects Kubeflow installs for
# it (select_objects.py --node: the release's, with the images knative/images.sh made in place of
# its digests), their Deployments run by the node's kubelet as Pods, then Istio's two gateway
# Services from the release, whose endpoints are the KIngress stand-in's pod (the one stand-in:
# box/README.md): knative-local-gateway:80 -> its cluster-local port 8082, istio-ingressgateway:80
# -> its external port 8081; Istio's networking CRDs from the release (below). The images must be
# in the node's containerd (images.sh + up.sh).
# Usage: box/knative/on-node.sh NODE_WORKDIR v1.11.0|v1.10.2 [DIR]
# DIR v1.21 (box_knative_dir kserve-0.20): Knative 1.21.1 as KServe 0.20 installs it, its objects
# from the Knative Operator's copy of the release (select_objects.py knative-v1.21.1), its images
# from knative/v1.21/bin; Istio's CRDs and gateway Services then come from RELEASE_TAG (v1.11.0):
# KServe's quick install puts Istio 1.27.1 in with Helm charts that are not here.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib.sh"
node=${1:?usage: on-node.sh NODE_WORKDIR RELEASE_TAG [DIR]} tag=${2:?release tag} dir=${3:-.}
. "$node/env"   # KUBECONFIG BIN
py=${PYTHON:-$(dirname "$(dirname "$here")")/.venv/bin/python}
W=$node/knative; mkdir -p "$W"
T0=$(date +%s.%N)
log() { printf '[%6.1fs] %s\n' "$(echo "$(date +%s.%N) - $T0" | bc)" "$*"; }
K() { "$BIN/kubectl" "$@"; }
ready() { # namespace, label selector: the first matching pod is Ready
  [ "$(K -n "$1" get pod -l "$2" -o jsonpath='{.items[0].status.conditions[?(@.type=="Ready")].status}')" = True ]
}
release=$(box_knative_release "$dir")
source=$tag
[ "$dir" = . ] || source=$release
"$py" "$here/select_objects.py" "$source" --node "$release" > "$W/knative-serving.yaml" 2> "$W/select.log"
log "$(tail -1 "$W/select.log" | sed 's/^# //'), images of $release"
# One apply of the whole selection in the release's order, as `kubectl apply -k` sends it; what
# the not-yet-running webhook must admit fails the first time (as on a cluster) and is applied
# again once the webhook serves.
K apply --server-side -f "$W/knative-serving.yaml" > "$W/apply-1.log" 2>&1 ||
  log "first apply: $(grep -ci 'error' "$W/apply-1.log") errors before the webhook serves (apply-1.log)"
wait_for "webhook pod Ready" 180 ready knative-serving app=webhook
wait_for "webhook configurations carry the webhook's CA" 120 bash -c \
  "[ -n \"\$('$BIN/kubectl' get validatingwebhookconfiguration validation.webhook.serving.knative.dev -o jsonpath='{.webhooks[0].clientConfig.caBundle}')\" ]"
applied=0
for _ in $(seq 10); do
  if K apply --server-side --force-conflicts -f "$W/knative-serving.yaml" > "$W/apply-2.log" 2>&1; then
    applied=1; log "second apply: $(grep -c . "$W/apply-2.log") objects"; break
  fi
  sleep 3
done
[ $applied = 1 ] || { tail -5 "$W/apply-2.log"; log "second apply failed"; exit 1; }
for d in controller activator autoscaler net-istio-controller; do
  wait_for "$d pod Ready" 180 ready knative-serving app=$d
done

# Istio's gateway Services, as the release defines them; their endpoint is the stand-in's pod.
# And Istio's networking CRDs, as the release installs them (no Istio controller reads the objects):
# KServe's manager registers VirtualService in its scheme only when the CRD exists at its start,
# and KServe v0.15.0 then fails every Knative-mode reconcile ("fails to reconcile ingress: fails
# to create or update ingress: no kind is registered for the type v1beta1.VirtualService in
# scheme", ingress_reconciler.go:127; seen on the box, kubeflow-1.10): its InferenceService never
# leaves RevisionMissing although the Knative Service is Ready.
gw=$(K -n knative-serving get pod -l app=net-istio-controller -o jsonpath='{.items[0].status.podIP}')
{ "$py" "$here/../manifests.py" "$tag" --kind CustomResourceDefinition --name '*.networking.istio.io'
  echo ---
  "$py" "$here/../manifests.py" "$tag" --kind Namespace --name istio-system; echo ---
  "$py" "$here/../manifests.py" "$tag" --kind Service --namespace istio-system --name knative-local-gateway
  echo ---
  "$py" "$here/../manifests.py" "$tag" --kind Service --namespace istio-system --name istio-ingressgateway
} 2>/dev/null > "$W/gateways.yaml"
K apply -f "$W/gateways.yaml" > /dev/null
box_endpointslice "$BIN/kubectl" istio-system knative-local-gateway knative-on-node "$gw" http2:8082
box_endpointslice "$BIN/kubectl" istio-system istio-ingressgateway knative-on-node "$gw" http2:8081
log "gateways knative-local-gateway, istio-ingressgateway -> the KIngress stand-in's pod $gw"
K -n knative-serving get pods -o wide
log "Knative Serving $release up on the node"
