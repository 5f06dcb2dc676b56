#!/usr/bin/env bash
# Captures the predictor Pod the real KServe builds for our overlays (Standard mode: the
# Deployment KServe creates, its ReplicaSet's Pod through KServe's pod mutator webhook) and
# writes it to box/kserve/observed/<kserve-version>-<overlay>-pod.yaml, which the runtime
# rehearsal runs (serving/kfs-runtime/pod.py). Starts the box (start-kserve.sh TARGET),
# applies each overlay as check-kserve.sh does (KEEP_NS=1), waits for the Pod, strips status
# and what the API server sets per object (name, generateName, uid, resourceVersion, timestamps,
# managedFields, ownerReferences, generation, the ReplicaSet's pod-template-hash label), and
# stops the box. inferenceservice-config is as the release ships it unless AUTOMOUNT is set.
# A Knative-mode overlay (one not named *-standard) yields no Pod here (that needs Knative's
# controllers): its Knative Service is captured instead, to <kserve-version>-<overlay>-ksvc.yaml
# (the box then starts with KNATIVE_CRDS=1; Kubeflow targets only).
# Usage: box/kserve/capture-pods.sh kubeflow-1.11|kubeflow-1.10|kserve-0.20 [overlay...]
#        (default overlay: minio-standard)
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$(dirname "$here")")
py=${PYTHON:-$repo/.venv/bin/python}
target=${1:?usage: capture-pods.sh TARGET [overlay...]}; shift
overlays=("$@"); [ ${#overlays[@]} -gt 0 ] || overlays=(minio-standard)
for o in "${overlays[@]}"; do [ "${o%-standard}" = "$o" ] && export KNATIVE_CRDS=1; done
"$here/start-kserve.sh" "$target" || exit 1
W=$(cat "$here/.last-workdir")
trap '"$here/stop-kserve.sh" "$W"' EXIT
# shellcheck disable=SC1091
source "$W/env"
rc=0
for o in "${overlays[@]}"; do
  KEEP_NS=1 SETTLE_S=2 "$here/check-kserve.sh" "$W" "$o" > "$W/check-$o.log" 2>&1
  kind=pod; what=pods; select=(-l serving.kserve.io/inferenceservice=imagelingo)
  [ "${o%-standard}" = "$o" ] && kind=ksvc what=ksvc select=(--field-selector metadata.name=imagelingo-predictor)
  pod=""
  for _ in $(seq 120); do
    pod=$("$K" -n imagelingo get "$what" "${select[@]}" \
      -o jsonpath='{.items[0].metadata.name}' 2>/dev/null) && [ -n "$pod" ] && break
    sleep 1
  done
  if [ -z "$pod" ]; then
    echo "overlay $o: no $kind after 120 s"; tail -n 40 "$W/check-$o.log"
    "$K" -n imagelingo get events 2>&1 | tail -n 10; rc=1; continue
  fi
  out=$here/observed/$KSERVE-$o-$kind.yaml
  server=$("$K" version -o json | "$py" -c 'import json,sys; print(json.load(sys.stdin)["serverVersion"]["gitVersion"])')
  security=$("$K" -n "$NS" get cm inferenceservice-config -o jsonpath='{.data.security}' | tr -d ' \n')
  "$K" -n imagelingo get "$what" "$pod" -o json | "$py" -c '
import json, sys, yaml
pod = json.load(sys.stdin)
pod.pop("status", None)
meta = pod["metadata"]
meta.get("annotations", {}).pop("kubectl.kubernetes.io/last-applied-configuration", None)
server_set = ["generateName", "uid", "resourceVersion", "creationTimestamp", "managedFields",
              "ownerReferences", "generation"]
for key in server_set + (["name"] if pod["kind"] == "Pod" else []):  # a Knative Service keeps its name
    meta.pop(key, None)
meta.get("labels", {}).pop("pod-template-hash", None)
what = ("Pod of the Deployment" if pod["kind"] == "Pod" else "Knative Service")
header = (f"# {what} KServe {sys.argv[1]} ({sys.argv[2]}) creates for "
          f"manifests/overlays/{sys.argv[3]}, after its webhooks; Kubernetes "
          f"{sys.argv[4]}; inferenceservice-config security: {sys.argv[5]}. Written by "
          "box/kserve/capture-pods.sh (status and per-object server metadata stripped).\n")
sys.stdout.write(header + yaml.safe_dump(pod, sort_keys=True))
' "$KSERVE" "$target" "$o" "$server" "$security" > "$out.tmp" && mv "$out.tmp" "$out" && echo "written $out"
  "$K" delete namespace imagelingo --wait=true --timeout=60s > /dev/null 2>&1
done
exit $rc
