#!/usr/bin/env bash
# cert-manager on the box's node (box/up.sh), installed from what the Kubeflow release installs:
# its objects labelled app.kubernetes.io/instance=cert-manager (CRDs, RBAC, the leader-election
# Roles in kube-system, Services, webhook configurations, the three Deployments) and the
# cert-manager Namespace, from the release's rendered example; the Deployments' images are the
# ones images.sh made from the binaries built here (build.sh). Then KServe's Certificate is
# issued by these controllers (kserve/start-kserve.sh sees the CRD and leaves the work to them).
# Usage: box/certmanager/on-node.sh NODE_WORKDIR v1.11.0|v1.10.2
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib.sh"   # wait_for
node=${1:?usage: on-node.sh NODE_WORKDIR RELEASE_TAG} tag=${2:?release tag}
. "$node/env"   # KUBECONFIG BIN
py=${PYTHON:-$(dirname "$(dirname "$here")")/.venv/bin/python}
W=$node/cert-manager; mkdir -p "$W"
T0=$(date +%s.%N)
log() { printf '[%6.1fs] %s\n' "$(echo "$(date +%s.%N) - $T0" | bc)" "$*"; }
K() { "$BIN/kubectl" "$@"; }
{ "$py" "$here/../manifests.py" "$tag" --kind Namespace --name cert-manager; echo ---
  "$py" "$here/../manifests.py" "$tag" --label app.kubernetes.io/instance=cert-manager; } \
  > "$W/cert-manager.yaml"
log "$(grep -c '^kind:' "$W/cert-manager.yaml") objects of $tag's cert-manager: $(grep -o 'image: .*' "$W/cert-manager.yaml" | cut -d' ' -f2 | sort -u | tr '\n' ' ')"
K apply --server-side -f "$W/cert-manager.yaml" > "$W/apply.log"
K wait --for=condition=Established crd -l app.kubernetes.io/instance=cert-manager --timeout=60s > /dev/null
for d in cert-manager cert-manager-cainjector cert-manager-webhook; do
  K -n cert-manager rollout status "deployment/$d" --timeout=180s > /dev/null \
    || { K -n cert-manager describe pods | tail -30; K -n cert-manager logs "deployment/$d" --tail=20; exit 1; }
done
log "Deployments rolled out: $(K -n cert-manager get pods -o jsonpath='{range .items[*]}{.metadata.name} {end}')"
# The webhook serves with a certificate from its own CA (Secret cert-manager-webhook-ca), which
# cainjector copies into the webhook configurations: until then the API server cannot call it.
wait_for "cainjector injected the webhook's CA" 120 bash -c \
  "[ -n \"\$('$BIN/kubectl' get validatingwebhookconfiguration cert-manager-webhook -o jsonpath='{.webhooks[0].clientConfig.caBundle}')\" ]"
# A dry-run Issuer goes through the webhook (its failurePolicy is Fail): it serves
wait_for "the webhook admits an Issuer" 60 bash -c "'$BIN/kubectl' -n cert-manager create -f - --dry-run=server -o name <<'Y' > /dev/null
apiVersion: cert-manager.io/v1
kind: Issuer
metadata: {name: box-probe}
spec: {selfSigned: {}}
Y"
for d in cert-manager cert-manager-cainjector cert-manager-webhook; do
  log "$d: $(K -n cert-manager logs "deployment/$d" 2>/dev/null | grep -m1 -o 'cert-manager-[a-z]* version=[^ ]*')"
done
log "cert-manager up on the node"
