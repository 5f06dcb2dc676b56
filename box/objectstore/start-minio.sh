#!/usr/bin/env bash
# Starts bin/minio as Kubeflow 1.10.2's Deployment kubeflow/minio starts
# gcr.io/ml-pipeline/minio:RELEASE.2019-08-14T20-37-41Z-license-compliance
# (rendered install v1.10.2/rendered/example.yaml.gz:178259-178325), on 127.0.0.1:9000:
#   args (example.yaml:178281-178283): server /data; the image's docker-entrypoint.sh prepends `minio`
#   env (:178284-178294) from Secret mlpipeline-minio-artifact (:174743-174747): MINIO_ACCESS_KEY=minio,
#   MINIO_SECRET_KEY=minio123; the image sets MINIO_UPDATE=off (minio Dockerfile.release at that tag).
# Added here: --address $MINIO_IP:9000 (the pod listens on :9000; MINIO_IP defaults to 127.0.0.1), and on MinIO builds that have a
# console (2021+) --console-address 127.0.0.1:9001, else it listens on a random port on all addresses.
# Usage: start-minio.sh [DATA_DIR]   (default run/minio; pid in DATA_DIR/minio.pid, log minio.log)
# MINIO_BIN=path runs another build of minio.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
minio=${MINIO_BIN:-$here/bin/minio}
data=$(mkdir -p "${1:-$here/run/minio}" && cd "${1:-$here/run/minio}" && pwd)
ip=${MINIO_IP:-127.0.0.1}
export MINIO_ACCESS_KEY=minio MINIO_SECRET_KEY=minio123 MINIO_UPDATE=off
extra=(); "$minio" server --help 2>&1 | grep -q -- --console-address && extra=(--console-address 127.0.0.1:9001)
t0=$(date +%s.%N)
nohup "$minio" server --address "$ip:9000" "${extra[@]}" "$data/data" > "$data/minio.log" 2>&1 &
echo $! > "$data/minio.pid"
for _ in $(seq 1 120); do
  curl -fs -o /dev/null http://$ip:9000/minio/health/ready && break
  sleep 0.25
done
curl -fs -o /dev/null http://$ip:9000/minio/health/ready || { tail -20 "$data"/*.log; echo "not ready after 30 s" >&2; exit 1; }
t1=$(date +%s.%N)
printf 'minio pid %s: ready after %.1f s, RSS %s\n' "$(cat "$data/minio.pid")" \
  "$(echo "$t1 - $t0" | bc)" "$(grep VmRSS "/proc/$(cat "$data/minio.pid")/status" | tr -s ' \t' ' ')"
