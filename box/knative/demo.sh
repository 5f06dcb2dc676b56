#!/usr/bin/env bash
# Runs against a box started by start.sh:
#  1. a Knative Service admitted by the real webhook (the defaults it wrote are shown);
#  2. what the controller makes of it: Configuration, Revision, PodAutoscaler (KPA),
#     Deployment, ServerlessService, Route, and (once the revision is Ready) the
#     KIngress, which the stand-in marks Ready; then a request through the stand-in's
#     gateway with the Route's Host header;
#  3. issue 26 defect 5: a Knative Service whose container has the securityContext of
#     KServe's kserve-torchserve ClusterServingRuntime, and the webhook's exact answer.
# With RUN_REVISION_PODS=1 given to start.sh (it maps the queue-proxy image and the demo's
# user image to binaries) the revision pod runs, else it stays Pending (no kubelet).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
W=$(cat /tmp/kn-box.current)
case $(cat "$W/target") in kubeflow-1.11) bin=$here/../bin/v1.34.4 ;; *) bin=$here/../bin/v1.32.13 ;; esac
export KUBECONFIG=$W/admin.kubeconfig
K() { "$bin/kubectl" "$@"; }
T0=$(date +%s.%N)
log() { printf '[%6.1fs] %s\n' "$(echo "$(date +%s.%N) - $T0" | bc)" "$*"; }
. "$here/../lib.sh"   # wait_for
jp() { K -n demo get "$1" "$2" -o jsonpath="$3" 2>/dev/null; }

K create namespace demo --dry-run=client -o yaml | K apply -f - >/dev/null
# The image is given by digest: the revision reconciler then does not resolve a tag
# against a registry (there is none here).
IMG=registry.box.invalid/imagelingo/hello@sha256:0000000000000000000000000000000000000000000000000000000000000001
log "== 1. Knative Service 'hello' through the webhook"
K apply -f - <<YAML
apiVersion: serving.knative.dev/v1
kind: Service
metadata: {name: hello, namespace: demo}
spec:
  template:
    spec:
      containers:
      - image: $IMG
        env: [{name: GREETING, value: "hello from the box"}]
YAML
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
  gw=$(K -n knative-serving get pod -l app=net-istio-controller -o jsonpath='{.items[0].status.podIP}')
  log "curl through the stand-in's external gateway $gw:8081, Host: $host"
  curl -sS -m 20 -D - -H "Host: $host" "http://$gw:8081/" ; echo
  log "curl through the cluster-local gateway $gw:8082, Host: hello.demo.svc.cluster.local"
  curl -sS -m 20 -H "Host: hello.demo.svc.cluster.local" "http://$gw:8082/" ; echo
  log "a host no KIngress has: $(curl -s -o /dev/null -w '%{http_code}' -H 'Host: nope.demo.example.com' "http://$gw:8081/")"
  log "== 2b. a second revision, traffic 50/50 with tags v1/v2"
  K apply -f - <<YAML
apiVersion: serving.knative.dev/v1
kind: Service
metadata: {name: hello, namespace: demo}
spec:
  template:
    metadata: {name: hello-00002}
    spec:
      containers:
      - image: $IMG
        env: [{name: GREETING, value: "hello v2"}]
  traffic:
  - {revisionName: hello-00001, percent: 50, tag: v1}
  - {revisionName: hello-00002, percent: 50, tag: v2}
YAML
  wait_for "Route carries the 50/50 split" 120 bash -c "[ \"\$('$bin/kubectl' -n demo get route hello -o jsonpath='{.status.traffic[*].percent}')\" = '50 50' ] && [ \"\$('$bin/kubectl' -n demo get route hello -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}')\" = True ]"
  K -n demo get ingresses.networking.internal.knative.dev hello -o jsonpath='{range .spec.rules[*]}{.visibility} {.hosts}: {range .http.paths[*].splits[*]}{.serviceName}={.percent}% {end}{"\n"}{end}'
  echo "40 requests to hello.demo.example.com, answered by revision:"
  for i in $(seq 1 40); do curl -s -m 10 -H "Host: $host" "http://$gw:8081/" | python3 -c 'import json,sys; print(json.load(sys.stdin)["k_revision"])'; done | sort | uniq -c
  for t in v1 v2; do echo "tag $t: $(curl -s -m 10 -H "Host: $t-$host" "http://$gw:8081/")"; done
else
  echo "-- how far it got (no pod runs without a kubelet):"
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
