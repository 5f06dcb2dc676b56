#!/usr/bin/env bash
# Against a box started by start-kserve.sh: for each overlay of manifests/ (default:
# minio-standard minio aws), render it with the box's kubectl (`kubectl kustomize`), apply it
# (admission through KServe's real webhooks), print what the defaulting webhook changed in the
# InferenceService (rendered vs stored), wait for the controller's reconcile and list what it
# made (Deployment, Service, HPA, Pods as the pod mutator built them, Knative Service) and
# the InferenceService's conditions; then delete the namespace for the next overlay.
# AUTOMOUNT=false first sets inferenceservice-config security.autoMountServiceAccountToken
# to false (issue 26 defect 2). Output: W/check/<overlay>/*.
# Usage: box/kserve/check-kserve.sh [W] [overlay...]
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$(dirname "$here")")
py=${PYTHON:-$repo/.venv/bin/python}
W=${1:-$(cat "$here/.last-workdir")}; shift || true
# shellcheck disable=SC1091
source "$W/env"
overlays=("$@"); [ ${#overlays[@]} -gt 0 ] || overlays=(minio-standard minio aws)

if [ -n "${AUTOMOUNT:-}" ]; then
  "$K" -n "$NS" get configmap inferenceservice-config -o json | "$py" -c '
import json, sys
cm = json.load(sys.stdin); sec = json.loads(cm["data"].get("security", "{}"))
sec["autoMountServiceAccountToken"] = sys.argv[1] == "true"
cm["data"]["security"] = json.dumps(sec, indent=2); print(json.dumps(cm))' "$AUTOMOUNT" |
    "$K" replace -f - >/dev/null
  echo "inferenceservice-config security: $("$K" -n "$NS" get cm inferenceservice-config -o jsonpath='{.data.security}' | tr -d ' \n')"
fi

for o in "${overlays[@]}"; do
  out=$W/check/$o; mkdir -p "$out"
  echo "================ overlay $o (KServe $KSERVE, $("$K" version -o json | "$py" -c 'import json,sys; print(json.load(sys.stdin)["serverVersion"]["gitVersion"])'))"
  "$K" kustomize "$repo/manifests/overlays/$o" > "$out/rendered.yaml"
  # As the README: the overlay without the InferenceService, then the S3 Secret (a copy of
  # manifests/secrets/<store> with made-up keys in s3.env), then the InferenceService that
  # `imagelingo deploy` creates (base/inferenceservice.yaml is generated from deploy.py).
  store=minio; [ "$o" = aws ] && store=aws
  mkdir -p "$out/secrets"; cp "$repo/manifests/secrets/$store/kustomization.yaml" "$out/secrets/"
  printf 'AWS_ACCESS_KEY_ID=box-access-key\nAWS_SECRET_ACCESS_KEY=box-secret-key\n' > "$out/secrets/s3.env"
  {
    echo "\$ kubectl apply -k manifests/overlays/$o -l 'app.kubernetes.io/managed-by!=imagelingo-deploy'"
    "$K" apply -k "$repo/manifests/overlays/$o" -l 'app.kubernetes.io/managed-by!=imagelingo-deploy' 2>&1; echo "rc=$?"
    echo "\$ kubectl apply -k manifests/secrets/$store   # s3.env with made-up keys"
    "$K" apply -k "$out/secrets" 2>&1; echo "rc=$?"
    echo "\$ kubectl apply -f - (the overlay's InferenceService)"
    "$py" -c '
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d["kind"] == "InferenceService"]
yaml.safe_dump_all(docs, sys.stdout, sort_keys=False)' "$out/rendered.yaml" | "$K" apply -f - 2>&1; echo "rc=$?"
  } > "$out/apply.log"
  sed 's/^/  /' "$out/apply.log"
  "$K" -n imagelingo get inferenceservice imagelingo -o yaml > "$out/isvc-stored.yaml" 2>/dev/null || continue
  echo "-- what admission changed in the InferenceService (rendered -> stored; status and server metadata left out):"
  "$py" - "$out/rendered.yaml" "$out/isvc-stored.yaml" <<'PY'
import sys, yaml
rendered = next(d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d["kind"] == "InferenceService")
stored = yaml.safe_load(open(sys.argv[2]))
SERVER = {"creationTimestamp", "generation", "managedFields", "resourceVersion", "uid", "finalizers"}
def walk(a, b, path):
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if path == ".metadata" and k in SERVER: continue
            walk(a.get(k, "<absent>"), b.get(k, "<absent>"), f"{path}.{k}")
    elif a != b:
        print(f"  {path}: {a!r} -> {b!r}")
stored["metadata"].get("annotations", {}).pop("kubectl.kubernetes.io/last-applied-configuration", None)
walk({k: rendered.get(k) for k in ("metadata", "spec")}, {k: stored.get(k) for k in ("metadata", "spec")}, "")
print("  finalizers:", stored["metadata"].get("finalizers"))
PY
  g1=$("$K" -n imagelingo get inferenceservice imagelingo -o jsonpath='{.metadata.generation}')
  "$py" -c '
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d["kind"] == "InferenceService"]
yaml.safe_dump_all(docs, sys.stdout, sort_keys=False)' "$out/rendered.yaml" | "$K" replace -f - >/dev/null 2>&1
  g2=$("$K" -n imagelingo get inferenceservice imagelingo -o jsonpath='{.metadata.generation}')
  echo "-- no-op replace of the same rendered InferenceService: metadata.generation $g1 -> $g2"
  sleep "${SETTLE_S:-8}"
  "$K" -n imagelingo get inferenceservice imagelingo -o yaml > "$out/isvc-after.yaml"
  echo "-- InferenceService status after ${SETTLE_S:-8}s:"
  "$py" - "$out/isvc-after.yaml" <<'PY'
import sys, yaml
s = yaml.safe_load(open(sys.argv[1])).get("status") or {}
for c in s.get("conditions", []):
    print(f"  {c['type']}={c['status']} reason={c.get('reason', '')} {c.get('message', '')[:300]}")
for k in ("url", "address", "components", "modelStatus", "deploymentMode"):
    if k in s: print(f"  status.{k}: {s[k]}")
PY
  echo "-- objects in namespace imagelingo:"
  "$K" -n imagelingo get deploy,rs,svc,hpa,pods,networkpolicy,servingruntime -o name 2>&1 | sed 's/^/  /'
  "$K" -n imagelingo get ksvc -o name 2>&1 | sed 's/^/  /'
  "$K" -n imagelingo get events --sort-by=.lastTimestamp -o custom-columns=REASON:.reason,OBJ:.involvedObject.name,MSG:.message 2>&1 | tail -n 15 | sed 's/^/  event /'
  for kind in deploy svc hpa pods; do "$K" -n imagelingo get "$kind" -o yaml > "$out/$kind.yaml" 2>/dev/null; done
  echo "-- manager log lines for imagelingo (last 8):"
  grep -i "imagelingo" "$W/manager.log" | grep -iE "error|fail|reconcil|creat" | tail -n 8 | cut -c1-400 | sed 's/^/  /'
  if [ "${KEEP_NS:-0}" != 1 ]; then
    "$K" delete namespace imagelingo --wait=true --timeout=60s >/dev/null 2>&1 || echo "  (namespace delete did not finish in 60 s)"
  fi
done
