#!/usr/bin/env bash
# The box for one target, in one command: a node of the release's Kubernetes (control plane,
# the real kubelet on containerd, kube-proxy, CoreDNS: kubelet/up.sh), the images KServe's
# predictor Pods name (kserve/images.sh, imported into the node's containerd), the object store
# the release ships as its Deployment's Pod behind the release's own `minio-service`, and KServe's
# controller manager with its webhooks installed from the release into that cluster
# (kserve/start-kserve.sh with BOX_NODE). InferenceServices in Standard mode then run as Pods of
# the kubelet. Stop it all with box/down.sh.
#   box/up.sh kubeflow-1.11 [WORKDIR]   # Kubernetes v1.34.4, KServe v0.15.2, SeaweedFS
#   box/up.sh kubeflow-1.10 [WORKDIR]   # Kubernetes v1.32.13, KServe v0.15.0, MinIO
#   box/up.sh kserve-0.20 [WORKDIR]     # Kubernetes v1.34.4, KServe v0.20.0's own install, the
#                                       # Knative 1.21.1 it installs (knative/v1.21); KServe ships
#                                       # no object store: Kubeflow 1.11's SeaweedFS stands for the
#                                       # S3 store its users bring
# WORKDIR (default /tmp/box) gets env (source it: KUBECONFIG, K, TARGET, S3_ENDPOINT, ...), the
# node's work dir node/, the object store's data objectstore/ and times.log.
#
# The object store (objectstore/images.sh), KServe's manager (kserve/start-kserve.sh), Knative
# Serving's Deployments (knative/on-node.sh) and, for the Kubeflow targets, cert-manager's
# (certmanager/on-node.sh; it issues KServe's webhook certificate) run as the node's Pods, net-istio's controller
# replaced by the KIngress stand-in (box/README.md); images the Pods pull Always come from the
# box's registry (lib.sh box_registry_start).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
target=${1:?usage: box/up.sh kubeflow-1.11|kubeflow-1.10|kserve-0.20 [WORKDIR]}
W=${2:-/tmp/box}
# store_release: the Kubeflow release whose object store objects run (KServe alone ships none)
case $target in
kubeflow-1.11) kbin=v1.34.4 kv=v0.15.2 release=v1.11.0 store=seaweedfs ;;
kubeflow-1.10) kbin=v1.32.13 kv=v0.15.0 release=v1.10.2 store=minio ;;
kserve-0.20) kbin=v1.34.4 kv=v0.20.0 release="" store=seaweedfs store_release=v1.11.0 ;;
*) echo "unknown target $target (kubeflow-1.11, kubeflow-1.10, kserve-0.20)" >&2; exit 2 ;;
esac
store_release=${store_release:-$release}
[ ! -e "$W/times.log" ] || { echo "$W holds a box (or a failed start): box/down.sh $W first" >&2; exit 1; }
mkdir -p "$W"
py=${PYTHON:-$(dirname "$here")/.venv/bin/python}
K=$here/bin/$kbin/kubectl
T0=$(date +%s.%N)
log() { printf '[%6.1fs] %s\n' "$(echo "$(date +%s.%N) - $T0" | bc)" "$*" | tee -a "$W/times.log"; }
fail() { log "FAILED: $*"; exit 1; }
trap 'fail "line $LINENO: $BASH_COMMAND (box/down.sh $W stops what started)"' ERR

log "box $target: Kubernetes $kbin, KServe $kv, $store; work dir $W"
# The predictor's images (6-7 GB unpacked) stay in a containerd root outside the work dir, as on a
# node: made and imported once per KServe version (~5 min), then only the node starts. After a
# venv changes, delete $BOX_CONTAINERD_ROOT/.imported-kserve-<v> to make them again. One box at a
# time: the containerd root is locked by the node using it.
export BOX_CONTAINERD_ROOT=${BOX_CONTAINERD_ROOT:-/var/lib/box/containerd}
mkdir -p "$BOX_CONTAINERD_ROOT"
stamp=$BOX_CONTAINERD_ROOT/.imported-kserve-$kv images=""
if [ ! -f "$stamp" ]; then
  images=/var/cache/box/images/kserve-$kv
  "$here/kserve/images.sh" "$kv" "$images" | tee -a "$W/times.log"
  log "images made"
fi
# Knative's images: its binaries from knative/build.sh, a few MB each (knative/images.sh); for
# KServe's own install the Knative 1.21.1 it installs (knative/v1.21, box_knative_dir)
knimages="" kdir=$(box_knative_dir "$target")
krelease=$(box_knative_release "$kdir")
kstamp=$BOX_CONTAINERD_ROOT/.imported-$krelease
# any of them newer than the import (the stand-in may change alone)
if [ ! -f "$kstamp" ] || [ -n "$(find "$here/knative/bin" "$here/knative/$kdir/bin" -newer "$kstamp" -type f -perm -u+x)" ]; then
  knimages=/var/cache/box/images/$krelease
  "$here/knative/images.sh" "$knimages" "$kdir" > /dev/null
  log "Knative images made ($krelease)"
fi
# The KServe manager's Pod: its image and kube-rbac-proxy's, pushed to the registry below
mstamp=$BOX_CONTAINERD_ROOT/.imported-kserve-manager-$kv mimages=""
if [ ! -f "$mstamp" ] || [ "$here/bin/kserve-$kv/manager" -nt "$mstamp" ]; then
  mimages=/var/cache/box/images/kserve-manager-$kv
  "$here/kserve/manager-images.sh" "$kv" "$mimages" > /dev/null
  log "KServe manager images made ($kv, kube-rbac-proxy $BOX_RBAC_PROXY)"
fi
# cert-manager's images (Kubeflow targets: the release installs it), its three binaries built from
# the library (certmanager/build.sh, images.sh)
cstamp="" cimages=""
if [ -n "$release" ]; then
  cmv=$(box_cert_manager_version)
  cstamp=$BOX_CONTAINERD_ROOT/.imported-cert-manager-$cmv
  if [ ! -f "$cstamp" ] || [ -n "$(find "$here/bin/cert-manager-$cmv" -newer "$cstamp" -type f -perm -u+x)" ]; then
    cimages=/var/cache/box/images/cert-manager-$cmv
    "$here/certmanager/images.sh" "$cmv" "$cimages" > /dev/null
    log "cert-manager images made ($cmv)"
  fi
fi
# The object store's image: its binary built from source on busybox (objectstore/images.sh)
ostamp=$BOX_CONTAINERD_ROOT/.imported-$store osimages=""
if [ ! -f "$ostamp" ] || [ -n "$(find "$here/objectstore/bin" -newer "$ostamp" -type f -perm -u+x)" ]; then
  osimages=/var/cache/box/images/$store
  "$here/objectstore/images.sh" "$store" "$osimages" > /dev/null
  log "object store image made ($store)"
fi
box_registry_start "$W/registry.pid"
export BOX_REGISTRY
BOX_IMAGE_DIRS="$images $knimages $mimages $cimages $osimages" "$here/kubelet/up.sh" "$here/bin/$kbin" "$W/node" > "$W/node.log" 2>&1 \
  || { tail -20 "$W/node.log"; fail "kubelet/up.sh"; }
grep -E "UP|images imported" "$W/node.log" | tee -a "$W/times.log"
if [ -n "$images" ]; then   # imported: the archives are not needed again
  touch "$stamp"; rm -f "$images"/*.oci.tar
fi
[ -z "$knimages" ] || { touch "$kstamp"; rm -rf "$knimages"; }
[ -z "$mimages" ] || { touch "$mstamp"; rm -rf "$mimages"; }
[ -z "$osimages" ] || { touch "$ostamp"; rm -rf "$osimages"; }
[ -z "$cimages" ] || { touch "$cstamp"; rm -rf "$cimages"; }
. "$W/node/env"   # KUBECONFIG NODE_IP NODE_NAME BIN
log "node up"
for image in docker.io/kserve/kserve-controller:$kv "quay.io/brancz/kube-rbac-proxy:$BOX_RBAC_PROXY"; do
  ref=${image#*/}
  curl -fsS -o /dev/null -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
    "http://$BOX_REGISTRY/v2/${ref%:*}/manifests/${ref##*:}" \
    || box_registry_push "$W/node/containerd/containerd.sock" "$image" | tee -a "$W/times.log"
done

# ---- the object store: the release's Deployment, its Pod on the node ------------------------
# Its PersistentVolumeClaim asks for 20Gi with no storage class and the box has no provisioner, so
# the data is an admin's static PersistentVolume: hostPath, bound to that claim, owned by the
# Deployment's user 1000 (fsGroup does not apply to hostPath; MinIO's subPath `minio` is made too).
data=$W/objectstore/data
mkdir -p "$data"
if [ $store = seaweedfs ]; then
  deployment=seaweedfs pvc=seaweedfs-pvc objects="ServiceAccount seaweedfs"
  chown 1000:1000 "$data"
else
  deployment=minio pvc=minio-pvc objects=""
  mkdir -p "$data/minio" && chown 1000:0 "$data/minio"
fi
"$py" "$here/manifests.py" "$store_release" --kind Namespace --name kubeflow > "$W/objectstore.yaml"
for object in "Service minio-service" "Secret mlpipeline-minio-artifact" \
    "PersistentVolumeClaim $pvc" ${objects:+"$objects"} "Deployment $deployment"; do
  set -- $object
  echo "---" >> "$W/objectstore.yaml"
  "$py" "$here/manifests.py" "$store_release" --kind "$1" --namespace kubeflow --name "$2" >> "$W/objectstore.yaml"
done
cat >> "$W/objectstore.yaml" <<EOF
---
apiVersion: v1
kind: PersistentVolume
metadata:
  name: box-$pvc
spec:
  capacity:
    storage: 20Gi
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  hostPath:
    path: $data
    type: Directory
  claimRef:
    namespace: kubeflow
    name: $pvc
EOF
"$K" apply -f "$W/objectstore.yaml" > /dev/null
"$K" -n kubeflow rollout status "deployment/$deployment" --timeout=300s > /dev/null \
  || { "$K" -n kubeflow describe pods -l "app=$deployment" | tail -30; fail "the object store's Pod"; }
log "object store: Deployment kubeflow/$deployment rolled out ($("$K" -n kubeflow get pods -l "app=$deployment" -o jsonpath='{.items[0].metadata.name} on {.items[0].status.podIP}'))"
S3_IP=$("$K" -n kubeflow get service minio-service -o jsonpath='{.spec.clusterIP}')
wait_for "object store through the Service minio-service ($S3_IP:9000)" 30 \
  curl -s -o /dev/null "http://$S3_IP:9000/"
if [ $store = minio ]; then
  # On 1.10 the bucket is made by KFP's API server at its start, if absent (kubeflow/pipelines
  # backend/src/apiserver/client_manager/client_manager.go, createMinioBucket: BucketExists, then
  # MakeBucket), with the release's bucket name and keys; the box has no KFP backend (issue 27).
  "$py" - "http://$S3_IP:9000" <<'PY' | tee -a "$W/times.log"
import sys, boto3
s3 = boto3.client("s3", endpoint_url=sys.argv[1], aws_access_key_id="minio",
                  aws_secret_access_key="minio123", region_name="us-east-1")
if "mlpipeline" not in [b["Name"] for b in s3.list_buckets()["Buckets"]]:
    s3.create_bucket(Bucket="mlpipeline")
print("bucket mlpipeline ready, as KFP's API server makes it")
PY
fi

# ---- Knative Serving, then KServe, installed from the release into this cluster -------------
# (in this order: KServe's manager looks for Knative's Service CRD once, at its start)
"$here/knative/on-node.sh" "$W/node" "$store_release" "$kdir" > "$W/knative.log" 2>&1 \
  || { tail -20 "$W/knative.log"; fail "knative/on-node.sh"; }
grep -E "objects|Ready|gateways|up on" "$W/knative.log" | tee -a "$W/times.log"
# cert-manager from the release (its controllers issue KServe's webhook certificate); KServe's own
# install (kserve-0.20) names cert-manager as a prerequisite it does not ship: there the
# certificate is made as its selfSigned issuer would (kserve/start-kserve.sh)
if [ -n "$release" ]; then
  "$here/certmanager/on-node.sh" "$W/node" "$release" > "$W/cert-manager.log" 2>&1 \
    || { tail -20 "$W/cert-manager.log"; fail "certmanager/on-node.sh"; }
  grep -E "objects|rolled out|version=|up on" "$W/cert-manager.log" | cut -c1-200 | tee -a "$W/times.log"
fi
kserve_ok=1
BOX_NODE=$W/node "$here/kserve/start-kserve.sh" "$target" > "$W/kserve.log" 2>&1 \
  || kserve_ok=0
kw=$(sed -n 's/.* work=\([^ ]*\) .*/\1/p' "$W/kserve.log" | head -1)
[ -z "$kw" ] || echo "$kw" > "$W/kserve-workdir"   # down.sh stops what it started, even on failure
[ $kserve_ok = 1 ] || { tail -30 "$W/kserve.log"; fail "kserve/start-kserve.sh"; }
grep -E "phase|Certificate|cainjector|manager started|READY" "$W/kserve.log" | cut -c1-200 | tee -a "$W/times.log"
log "KServe $kv up"

cat > "$W/env" <<EOF
export KUBECONFIG=$KUBECONFIG K=$K BIN=$BIN NODE_IP=$NODE_IP TARGET=$target KSERVE=$kv
export S3_ENDPOINT=http://$S3_IP:9000 S3_SERVICE=minio-service.kubeflow:9000 BOX=$W
EOF
log "RSS MiB: $(for f in "$W/node/pids" "$kw/pids"; do [ -f "$f" ] || continue; while read -r n p; do printf '%s=%d ' "$n" $(( $(ps -o rss= -p "$p" 2>/dev/null || echo 0) / 1024 )); done < "$f"; done)"
log "UP: source $W/env"
