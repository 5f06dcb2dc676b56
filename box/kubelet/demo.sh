#!/usr/bin/env bash
# On a node started by up.sh: a Deployment of `python3 -m http.server` (box.local/debian-python,
# runAsUser 65534, readiness httpGet + liveness tcpSocket probes) behind a ClusterIP Service; from
# another pod, the Service answers by ClusterIP, by its DNS name and by its short name; deleting
# the pod stops its process within terminationGracePeriodSeconds. Prints timings and RSS.
# Usage: box/kubelet/demo.sh [WORKDIR]    (default /tmp/box-node)
set -euo pipefail
W=${1:-/tmp/box-node}
. "$W/env"
K() { "$BIN/kubectl" "$@"; }
T0=$(date +%s.%N)
log() { printf '[%6.1fs] %s\n' "$(echo "$(date +%s.%N) - $T0" | bc)" "$*"; }
GRACE=8
K create namespace demo >/dev/null
K apply -f - >/dev/null <<EOF
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: demo}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: $GRACE
      securityContext: {runAsUser: 65534, runAsGroup: 65534}
      containers:
      - name: web
        image: box.local/debian-python:bookworm
        imagePullPolicy: Never
        command: [python3, -m, http.server, "8080", --directory, /etc]
        ports: [{containerPort: 8080, name: http}]
        readinessProbe: {httpGet: {path: /hostname, port: http}, periodSeconds: 2}
        livenessProbe: {tcpSocket: {port: 8080}, periodSeconds: 5}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: demo}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: http}]
EOF
log "Deployment demo/web + Service applied"
K -n demo rollout status deployment/web --timeout=120s >/dev/null
pod=$(K -n demo get pod -l app=web -o jsonpath='{.items[0].metadata.name}')
log "pod $pod Ready: $(K -n demo get pod "$pod" -o jsonpath='podIP={.status.podIP} hostIP={.status.hostIP} phase={.status.phase}')"
K -n demo get pod "$pod" -o jsonpath='{range .status.conditions[*]}{.type}={.status} {end}'; echo
cip=$(K -n demo get svc web -o jsonpath='{.spec.clusterIP}')
# kube-proxy programs the new endpoint a moment after the pod turns Ready (until then its rules
# REJECT the ClusterIP: "Couldn't connect to server"): retry for up to 10 s.
for i in $(seq 100); do answer=$(curl -fsS -m 2 "http://$cip/hostname" 2>/dev/null) && break; sleep 0.1; done
log "from the host: http://$cip/hostname -> ${answer:?no answer in 10 s} (after $((i - 1)) retries)"
# From another pod: ClusterIP, FQDN and short name (resolv.conf search path), as the kubelet writes it.
K -n demo run client --image=box.local/debian-python:bookworm --image-pull-policy=Never \
  --restart=Never --command -- python3 -c "
import socket, urllib.request
print(open('/etc/resolv.conf').read().strip().replace(chr(10), ' | '))
for url in ('http://$cip/hostname', 'http://web.demo.svc.cluster.local/hostname', 'http://web/hostname'):
    host = url.split('/')[2]
    print(url, '->', socket.gethostbyname(host), urllib.request.urlopen(url, timeout=5).read().decode().strip())
" >/dev/null
K -n demo wait --for=jsonpath='{.status.phase}'=Succeeded pod/client --timeout=120s >/dev/null \
  || { K -n demo logs client; exit 1; }
K -n demo logs client | sed 's/^/    client: /'
log "client pod Succeeded"
# Delete: the kubelet sends SIGTERM, then SIGKILL after the grace period (python3 is PID 1 of the
# container and sets no SIGTERM handler, so the kernel drops SIGTERM: expect ~GRACE s).
hostpid=$(pgrep -f -u 65534 "python3 -m http.server 8080" | head -1)
log "deleting $pod (container process pid $hostpid on the host, grace $GRACE s)"
t=$(date +%s.%N)
K -n demo delete pod "$pod" --wait=false >/dev/null
while kill -0 "$hostpid" 2>/dev/null; do sleep 0.1; done
log "container process gone after $(echo "$(date +%s.%N) - $t" | bc | cut -c1-5) s"
K -n demo wait --for=delete "pod/$pod" --timeout=60s >/dev/null
K -n demo wait --for=condition=Ready pod -l app=web --timeout=120s >/dev/null
log "replacement pod Ready: $(K -n demo get pod -l app=web -o jsonpath='{.items[0].metadata.name}')"
# A container that handles SIGTERM exits at once on delete.
K -n demo run term --image=box.local/debian-python:bookworm --image-pull-policy=Never \
  --restart=Never --command -- python3 -c "
import signal, sys, time
signal.signal(signal.SIGTERM, lambda *_: (print('SIGTERM', flush=True), sys.exit(0)))
print('waiting', flush=True); time.sleep(3600)" >/dev/null
K -n demo wait --for=condition=Ready pod/term --timeout=60s >/dev/null
tpid=$(pgrep -f "print..waiting" | head -1)
t=$(date +%s.%N); K -n demo delete pod term --grace-period=30 --wait=false >/dev/null
while kill -0 "$tpid" 2>/dev/null; do sleep 0.05; done
log "pod term (SIGTERM handler, grace 30 s): process gone after $(echo "$(date +%s.%N) - $t" | bc | cut -c1-5) s"
echo "RSS (MiB):"
while read -r name pid; do
  printf '  %-24s %5d\n' "$name" $(( $(ps -o rss= -p "$pid" 2>/dev/null || echo 0) / 1024 ))
done < "$W/pids"
for p in $(pgrep -f 'containerd-shim-runc-v2' || true); do printf '  %-24s %5d\n' "shim $p" $(( $(ps -o rss= -p "$p") / 1024 )); done
for p in $(pgrep -x coredns || true); do printf '  %-24s %5d\n' "coredns (pod) $p" $(( $(ps -o rss= -p "$p") / 1024 )); done
K delete namespace demo --wait=false >/dev/null
log "DEMO OK ($("$BIN/kubectl" version -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["serverVersion"]["gitVersion"])'))"
