#!/usr/bin/env bash
# Runs against a box started by box/up.sh (Knative Serving's pods on the node's kubelet):
#  1. a Knative Service admitted by the real webhook (the defaults it wrote are shown);
#  2. what the controller makes of it: Configuration, Revision, PodAutoscaler (KPA),
#     Deployment, ServerlessService, Route, the revision's Pod (user container + queue-proxy),
#     and the KIngress, which the stand-in marks Ready; then requests through Istio's gateway
#     Services (their endpoint is the stand-in's proxy) with the Route's Host header; a second
#     revision, a 50/50 split and tag routes;
#  3. issue 26 defect 5: a Knative Service whose container has the securityContext of
#     KServe's kserve-torchserve ClusterServingRuntime, and the webhook's exact answer.
# The user container: hello-app.py from a ConfigMap, run by the box's Debian python image
# (box.local is a local name, in config-deployment's registries-skipping-tag-resolving as
# kind.local is upstream: select_objects.py --node).
# Usage: box/knative/demo.sh [WORKDIR of box/up.sh, default /tmp/box]
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
W=${1:-/tmp/box}
. "$W/env"   # KUBECONFIG K
K() { "$K" "$@"; }
T0=$(date +%s.%N)
log() { printf '[%6.1fs] %s\n' "$(echo "$(date +%s.%N) - $T0" | bc)" "$*"; }
. "$here/../lib.sh"   # wait_for
jp() { K -n demo get "$1" "$2" -o jsonpath="$3" 2>/dev/null; }
bin=$(dirname "$K")

K create namespace demo --dry-run=client -o yaml | K apply -f - >/dev/null
K -n demo create configmap hello-app --from-file=hello-app.py="$here/hello-app.py" \
  --dry-run=client -o yaml | K apply -f - >/dev/null
IMG=box.local/debian-python:bookworm
hello() { # revision name, greeting, extra lines under the Service's spec
  cat <<YAML
apiVersion: serving.knative.dev/v1
kind: Service
metadata: {name: hello, namespace: demo}
spec:
  template:
    metadata: {name: $1}
    spec:
      containers:
      - image: $IMG
        command: [python3, /app/hello-app.py]
        env: [{name: GREETING, value: "$2"}]
        volumeMounts: [{name: app, mountPath: /app, readOnly: true}]
      volumes: [{name: app, configMap: {name: hello-app}}]
${3:-}
YAML
}
log "== 1. Knative Service 'hello' through the webhook"
hello hello-00001 "hello from the box" | K apply -f -
echo "defaults the webhook wrote (spec.template.spec, status):"
K -n demo get ksvc hello -o jsonpath='{.spec.template.spec}{"\n"}'
K -n demo get ksvc hello -o jsonpath='{.metadata.annotations}{"\n"}'

log "== 2. what the controller makes of it"
wait_for "Configuration demo/hello" 60 K -n demo get configuration hello
wait_for "Revision demo/hello-00001" 60 K -n demo get revision hello-00001
wait_for "PodAutoscaler demo/hello-00001 (class $(jp podautoscaler hello-00001 '{.metadata.annotations.autoscaling\.knative\.dev/class}'))" 60 K -n demo get podautoscaler hello-00001
wait_for "Deployment demo/hello-00001-deployment" 60 K -n demo get deployment hello-00001-deployment
wait_for "ServerlessService demo/hello-00001" 60 K -n demo get serverlessservice hello-00001
wait_for "Route demo/hello" 60 K -n demo get route hello
wait_for "revision pod created by the Deployment" 60 bash -c "[ -n \"\$('$bin/kubectl' -n demo get pod -l serving.knative.dev/revision=hello-00001 -o name)\" ]"
K -n demo get pod -l serving.knative.dev/revision=hello-00001 -o wide
K -n demo get podautoscaler hello-00001 -o jsonpath='{.metadata.annotations.autoscaling\.knative\.dev/class}{"\n"}'
if wait_for "Revision Ready" "${REVISION_WAIT_S:-150}" bash -c "[ \"\$('$bin/kubectl' -n demo get revision hello-00001 -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}')\" = True ]"; then
  wait_for "KIngress demo/hello created by the route reconciler" 60 K -n demo get ingresses.networking.internal.knative.dev hello
  wait_for "KIngress Ready (stand-in)" 60 bash -c "[ \"\$('$bin/kubectl' -n demo get ingresses.networking.internal.knative.dev hello -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}')\" = True ]"
  K -n demo get ingresses.networking.internal.knative.dev hello -o jsonpath='{.metadata.annotations}{"\n"}{.status}{"\n"}'
  wait_for "Route Ready" 60 bash -c "[ \"\$('$bin/kubectl' -n demo get route hello -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}')\" = True ]"
  wait_for "Service Ready" 60 bash -c "[ \"\$('$bin/kubectl' -n demo get ksvc hello -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}')\" = True ]"
  url=$(jp ksvc hello '{.status.url}'); host=${url#http://}
  gw=$(K -n istio-system get service istio-ingressgateway -o jsonpath='{.spec.clusterIP}')
  local_gw=$(K -n istio-system get service knative-local-gateway -o jsonpath='{.spec.clusterIP}')
  log "curl through istio-ingressgateway $gw:80 (the stand-in's external port), Host: $host"
  curl -sS -m 20 -D - -H "Host: $host" "http://$gw/" ; echo
  log "curl through knative-local-gateway $local_gw:80, Host: hello.demo.svc.cluster.local"
  curl -sS -m 20 -H "Host: hello.demo.svc.cluster.local" "http://$local_gw/" ; echo
  log "a host no KIngress has: $(curl -s -o /dev/null -w '%{http_code}' -H 'Host: nope.demo.example.com' "http://$gw/")"
  log "== 2b. a second revision, traffic 50/50 with tags v1/v2"
  hello hello-00002 "hello v2" "  traffic:
  - {revisionName: hello-00001, percent: 50, tag: v1}
  - {revisionName: hello-00002, percent: 50, tag: v2}" | K apply -f -
  wait_for "Route carries the 50/50 split" 120 bash -c "[ \"\$('$bin/kubectl' -n demo get route hello -o jsonpath='{.status.traffic[*].percent}')\" = '50 50' ] && [ \"\$('$bin/kubectl' -n demo get route hello -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}')\" = True ]"
  K -n demo get ingresses.networking.internal.knative.dev hello -o jsonpath='{range .spec.rules[*]}{.visibility} {.hosts}: {range .http.paths[*].splits[*]}{.serviceName}={.percent}% {end}{"\n"}{end}'
  echo "40 requests to hello.demo.example.com, answered by revision:"
  for i in $(seq 1 40); do curl -s -m 10 -H "Host: $host" "http://$gw/" | python3 -c 'import json,sys; print(json.load(sys.stdin)["k_revision"])'; done | sort | uniq -c
  for t in v1 v2; do echo "tag $t: $(curl -s -m 10 -H "Host: $t-$host" "http://$gw/")"; done
else
  echo "-- how far it got:"
  K -n demo get pod -l serving.knative.dev/revision=hello-00001 -o jsonpath='{range .items[*]}{.metadata.name} phase={.status.phase} node={.spec.nodeName}{"\n"}{end}'
  K -n demo get deployment hello-00001-deployment -o jsonpath='{.status}{"\n"}'
  K -n demo get kpa hello-00001 -o jsonpath='{.status}{"\n"}'
  K -n demo get sks hello-00001 -o jsonpath='{.status}{"\n"}'
  K -n demo get revision hello-00001 -o jsonpath='{.status}{"\n"}'
  K -n demo get route hello -o jsonpath='{.status}{"\n"}'
  K -n demo get ingresses.networking.internal.knative.dev 2>&1
fi
K -n demo get ksvc,configuration,revision,route,podautoscaler,sks,ingresses.networking.internal.knative.dev,deployment 2>&1

log "== 3. defect 5: KServe's kserve-torchserve securityContext in a Knative Service"
cat > "$W/torchserve-ksvc.yaml" <<YAML
apiVersion: serving.knative.dev/v1
kind: Service
metadata: {name: torchserve-sc, namespace: demo}
spec:
  template:
    spec:
      containers:
      - name: kserve-container
        image: $IMG
        # securityContext of kserve/kserve v0.20.0 config/runtimes/kserve-torchserve.yaml
        # (the same in the kserve-torchserve that Kubeflow 1.10.2 / 1.11.0 install)
        securityContext:
          runAsUser: 1000
          allowPrivilegeEscalation: false
          privileged: false
          runAsNonRoot: true
          capabilities:
            drop:
            - ALL
YAML
echo "-- a) kubectl apply (kubectl sends fieldValidation=Strict):"
K apply -f "$W/torchserve-ksvc.yaml" 2>&1 | tee "$W/defect5.txt"; echo "kubectl rc=${PIPESTATUS[0]}"
echo "-- b) the same object POSTed with no fieldValidation (the API server's default, Warn; what a"
echo "      Go client such as KServe's controller sends), then what was stored:"
K create --raw /apis/serving.knative.dev/v1/namespaces/demo/services \
  -f <(python3 -c "import yaml,json,sys; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))" "$W/torchserve-ksvc.yaml") >/dev/null
echo "kubectl rc=$?"
K -n demo get ksvc torchserve-sc -o jsonpath='stored securityContext: {.spec.template.spec.containers[0].securityContext}{"\n"}'
K -n demo delete ksvc torchserve-sc >/dev/null
echo "-- c) the webhook's own answer when the field reaches it (AdmissionReview sent to the pod):"
python3 "$here/webhook_review.py" "$(K -n knative-serving get pod -l app=webhook -o jsonpath='{.items[0].status.podIP}')" "$W/torchserve-ksvc.yaml"
sed '/privileged: false/d' "$W/torchserve-ksvc.yaml" > "$W/torchserve-ksvc-noprivileged.yaml"
echo "-- d) the same securityContext without 'privileged: false', kubectl apply:"
K apply -f "$W/torchserve-ksvc-noprivileged.yaml" 2>&1; K -n demo delete ksvc torchserve-sc --wait=false >/dev/null 2>&1
log "demo done"
