package main

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"
	corev1listers "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"knative.dev/networking/pkg/apis/networking/v1alpha1"
	"sigs.k8s.io/yaml"
)

// The VirtualService KServe v0.15.2 writes for InferenceService imagelingo/imagelingo in
// Knative mode under Kubeflow's inferenceservice-config (ingressGateway kubeflow/kubeflow-gateway,
// localGateway knative-serving/knative-local-gateway, config-domain example.com):
// createIngress, ingress_reconciler.go:476-725, with HostRegExp (constants.go:689-700; its
// ".svc.cluster.local" branch never applies, so both regexes are exact).
const kserveVirtualService = `
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: imagelingo, namespace: imagelingo}
spec:
  hosts: [imagelingo.imagelingo.svc.cluster.local, imagelingo.imagelingo.example.com]
  gateways: [knative-serving/knative-local-gateway, mesh, kubeflow/kubeflow-gateway]
  http:
  - match:
    - authority: {regex: '^imagelingo\.imagelingo\.svc\.cluster\.local(?::\d{1,5})?$'}
      gateways: [knative-serving/knative-local-gateway, mesh]
    - authority: {regex: '^imagelingo\.imagelingo\.example\.com(?::\d{1,5})?$'}
      gateways: [kubeflow/kubeflow-gateway]
    route:
    - destination: {host: knative-local-gateway.istio-system.svc.cluster.local, port: {number: 80}}
      weight: 100
    headers:
      request:
        set: {Host: imagelingo-predictor.imagelingo.svc.cluster.local, KServe-Isvc-Name: imagelingo, KServe-Isvc-Namespace: imagelingo}
`

// Kubeflow's config-istio: one old-format external gateway, the default local one.
func kubeflowGateways() *istioConfig {
	return &istioConfig{
		IngressGateways: []gateway{{Namespace: "kubeflow", Name: "kubeflow-gateway", ServiceURL: "istio-ingressgateway.istio-system.svc.cluster.local"}},
		LocalGateways:   []gateway{{Namespace: "knative-serving", Name: "knative-local-gateway", ServiceURL: "knative-local-gateway.istio-system.svc.cluster.local"}},
	}
}

// A table whose one KIngress (the predictor's Route, cluster-local) goes to `upstream`, and
// KServe's VirtualService.
func kserveTable(t *testing.T, upstream *httptest.Server) *table {
	host, portText, _ := net.SplitHostPort(upstream.Listener.Addr().String())
	port, _ := strconv.Atoi(portText)
	svcs := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	eps := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	meta := metav1.ObjectMeta{Name: "imagelingo-predictor-00001", Namespace: "imagelingo"}
	_ = svcs.Add(&corev1.Service{ObjectMeta: meta, Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80}}}})
	_ = eps.Add(&corev1.Endpoints{ObjectMeta: meta, Subsets: []corev1.EndpointSubset{{
		Addresses: []corev1.EndpointAddress{{IP: host}}, Ports: []corev1.EndpointPort{{Name: "http", Port: int32(port)}}}}})
	tbl := newTable(corev1listers.NewServiceLister(svcs), corev1listers.NewEndpointsLister(eps), kubeflowGateways, zap.NewNop().Sugar())
	tbl.set(&v1alpha1.Ingress{
		ObjectMeta: metav1.ObjectMeta{Name: "imagelingo-predictor", Namespace: "imagelingo", Generation: 1},
		Spec: v1alpha1.IngressSpec{Rules: []v1alpha1.IngressRule{{
			Hosts:      []string{"imagelingo-predictor.imagelingo.svc.cluster.local"},
			Visibility: v1alpha1.IngressVisibilityClusterLocal,
			HTTP: &v1alpha1.HTTPIngressRuleValue{Paths: []v1alpha1.HTTPIngressPath{{
				Splits: []v1alpha1.IngressBackendSplit{{Percent: 100, IngressBackend: v1alpha1.IngressBackend{
					ServiceName: meta.Name, ServiceNamespace: meta.Namespace, ServicePort: intstr.FromInt(80)}}}}}},
		}}},
	})
	u := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(kserveVirtualService), &u.Object); err != nil {
		t.Fatal(err)
	}
	vs, err := parseVirtualService(u)
	if err != nil {
		t.Fatal(err)
	}
	tbl.vs.set(vs)
	return tbl
}

func TestKServeVirtualServiceHosts(t *testing.T) {
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, r.Host+" "+r.Header.Get("KServe-Isvc-Name")+" "+r.URL.Path)
	}))
	defer upstream.Close()
	tbl := kserveTable(t, upstream)
	cases := []struct {
		name string
		vis  v1alpha1.IngressVisibility
		host string
		code int
		body string
	}{
		// the InferenceService's address (its ExternalName Service -> the local gateway)
		{"isvc address, local gateway", v1alpha1.IngressVisibilityClusterLocal, "imagelingo.imagelingo.svc.cluster.local",
			200, "imagelingo-predictor.imagelingo.svc.cluster.local imagelingo /v1/models/imagelingo:predict"},
		{"isvc address with port", v1alpha1.IngressVisibilityClusterLocal, "imagelingo.imagelingo.svc.cluster.local:80", 200, ""},
		// the InferenceService's URL through the ingress gateway (README "Calling the endpoint")
		{"isvc url, ingress gateway", v1alpha1.IngressVisibilityExternalIP, "imagelingo.imagelingo.example.com",
			200, "imagelingo-predictor.imagelingo.svc.cluster.local imagelingo /v1/models/imagelingo:predict"},
		// each host only on its own gateways (the match's gateways)
		{"external host on the local gateway", v1alpha1.IngressVisibilityClusterLocal, "imagelingo.imagelingo.example.com", 404, ""},
		{"internal host on the ingress gateway", v1alpha1.IngressVisibilityExternalIP, "imagelingo.imagelingo.svc.cluster.local", 404, ""},
		// the regex is exact: a short name is not the host KServe routes
		{"short name", v1alpha1.IngressVisibilityClusterLocal, "imagelingo.imagelingo", 404, ""},
		// the predictor's own host: the KIngress rule, as before
		{"predictor route", v1alpha1.IngressVisibilityClusterLocal, "imagelingo-predictor.imagelingo.svc.cluster.local",
			200, "imagelingo-predictor.imagelingo.svc.cluster.local  /v1/models/imagelingo:predict"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := httptest.NewRequest("POST", "http://x/v1/models/imagelingo:predict", nil)
			r.Host = c.host
			w := httptest.NewRecorder()
			tbl.handler(c.vis).ServeHTTP(w, r)
			if w.Code != c.code || (c.body != "" && w.Body.String() != c.body) {
				t.Fatalf("%s on %s: %d %q, want %d %q", c.host, c.vis, w.Code, w.Body.String(), c.code, c.body)
			}
		})
	}
}

func TestVirtualServiceRemoved(t *testing.T) {
	upstream := httptest.NewServer(http.NotFoundHandler())
	defer upstream.Close()
	tbl := kserveTable(t, upstream)
	tbl.vs.remove("imagelingo/imagelingo")
	r := httptest.NewRequest("GET", "http://x/", nil)
	r.Host = "imagelingo.imagelingo.example.com"
	w := httptest.NewRecorder()
	tbl.handler(v1alpha1.IngressVisibilityExternalIP).ServeHTTP(w, r)
	if w.Code != http.StatusNotFound {
		t.Fatalf("after removal: %d, want 404", w.Code)
	}
}
