#!/usr/bin/env bash
# Starts bin/weed as Kubeflow 1.11.0's Deployment kubeflow/seaweedfs starts chrislusf/seaweedfs:4.00
# (rendered install v1.11.0/rendered/example.yaml.gz:169433-169527), on 127.0.0.1:
#   image ENTRYPOINT /entrypoint.sh, case 'server' (seaweedfs 4.00 docker/entrypoint.sh) runs
#     weed -logtostderr=true server -dir=/data -volume.max=0 -master.volumePreallocate
#          -master.volumeSizeLimitMB=1024 <args>
#   args (example.yaml:169456-169462): server -dir=/data -s3 -iam -filer -master.volumePreallocate=false
#   envFrom Secret mlpipeline-minio-artifact (:169463-169465; data :164688-164689): accesskey, secretkey
#   /etc/seaweedfs/filer.toml of the image (docker/filer.toml: leveldb2 in /data/filerldb2); WORKDIR /data
#   postStart (:169467-169484): wait for :8333/status, `weed shell` creates bucket mlpipeline and the
#   Admin identity kubeflow-admin with the Secret's keys.
# Added here, and only this: -ip=$WEED_IP -ip.bind=$WEED_IP (the pod binds its own IP; default
# 127.0.0.1, box/up.sh gives the node's IP so that pods reach it through the release's Service).
# Ports: the Deployment's (S3 8333, IAM 8111, master 9333/19333, filer 8888/18888, volume 8080/18080).
# Usage: start-seaweedfs.sh [DATA_DIR]   (default run/seaweedfs; pid in DATA_DIR/weed.pid, log weed.log)
# WEED_BIN=path runs another build of weed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
weed=${WEED_BIN:-$here/bin/weed}
data=$(mkdir -p "${1:-$here/run/seaweedfs}" && cd "${1:-$here/run/seaweedfs}" && pwd)
ip=${WEED_IP:-127.0.0.1}
export accesskey=minio secretkey=minio123
printf '[leveldb2]\nenabled = true\ndir = "%s/filerldb2"\n' "$data" > "$data/filer.toml"
t0=$(date +%s.%N)
(cd "$data" && exec nohup "$weed" -logtostderr=true server -dir="$data" -volume.max=0 \
   -master.volumePreallocate -master.volumeSizeLimitMB=1024 \
   -dir="$data" -s3 -iam -filer -master.volumePreallocate=false \
   -ip="$ip" -ip.bind="$ip" > "$data/weed.log" 2>&1) &
echo $! > "$data/weed.pid"
for _ in $(seq 1 120); do   # the postStart hook, verbatim but curl for busybox wget
  curl -fs -o /dev/null "http://$ip:8333/status" && break
  sleep 0.5
done
curl -fs -o /dev/null "http://$ip:8333/status" || { tail -20 "$data"/*.log; echo "not ready after 30 s" >&2; exit 1; }
t1=$(date +%s.%N)
echo "s3.bucket.create --name mlpipeline" | "$weed" shell -master="$ip:9333" || true
echo "s3.configure -user kubeflow-admin -access_key $accesskey -secret_key $secretkey -actions Admin -apply" | "$weed" shell -master="$ip:9333"
t2=$(date +%s.%N)
printf 'seaweedfs pid %s: /status after %.1f s, postStart done after %.1f s, RSS %s\n' \
  "$(cat "$data/weed.pid")" "$(echo "$t1 - $t0" | bc)" "$(echo "$t2 - $t0" | bc)" \
  "$(grep VmRSS "/proc/$(cat "$data/weed.pid")/status" | tr -s ' \t' ' ')"
