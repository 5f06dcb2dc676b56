package main

// The gateways: a Host-header reverse proxy serving the KIngress rules as
// Envoy serves the VirtualServices that net-istio knative-v1.16.0 writes
// (pkg/reconciler/ingress/resources/virtual_service.go, "vs.go" below).
//
// What is reproduced, with the vs.go lines it comes from:
//   - a rule is served by the gateways of its visibility only: ExternalIP rules
//     by the external gateway, ClusterLocal rules by the local one
//     (makeVirtualServiceRoute matches gateways[visibility], vs.go:152-158);
//   - host match: prefix match on the authority (Host header, with or without
//     :port), with ".svc.<cluster domain>" trimmed from cluster-local hosts and
//     the hosts deduplicated by prefix (makeMatch vs.go:247-254, hostPrefix
//     vs.go:274-282, getDistinctHostPrefixes vs.go:213-234);
//   - path: prefix match when the path is non-empty (vs.go:255-261);
//   - headers: exact match on each header of the path (vs.go:263-270);
//   - splits: weighted choice between the backends by percent, the
//     destination being <serviceName>.<serviceNamespace>:<servicePort number>
//     (vs.go:161-183); Envoy gets a Service's endpoints from Istio (EDS), so the
//     proxy resolves the Service's port to its Endpoints itself: no kube-proxy
//     or DNS is needed;
//   - appended headers: set (replace) on the request, per split and per path
//     (Headers.Request.Set, vs.go:163-170 and :185-192); path-level ones are
//     applied after split-level ones;
//   - rewriteHost: the authority sent upstream (HTTPRewrite.Authority, vs.go:194-199);
//   - no retries (HTTPRetry{} overrides Istio's default of two, vs.go:202) and
//     no route timeout (none is set in the VirtualService).
//   - no match: 404; no ready endpoint: 503 "no healthy upstream" (Envoy's answers).
// Not reproduced: TLS, HTTP/2 (h2c) upstreams, the K-Network-Probe
// answers that net-istio's prober expects (the controller is in this process
// and needs no probe), the mesh VirtualService (no sidecars in the box).

import (
	"fmt"
	"math/rand"
	"net"
	"net/http"
	"net/http/httputil"
	"sort"
	"strconv"
	"strings"
	"sync"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/sets"
	corev1listers "k8s.io/client-go/listers/core/v1"
	"knative.dev/networking/pkg/apis/networking/v1alpha1"
	"knative.dev/pkg/network"
)

type route struct {
	visibility v1alpha1.IngressVisibility
	hosts      []string // distinct host prefixes
	path       v1alpha1.HTTPIngressPath
}

type programmed struct {
	generation int64
	routes     []route
}

type table struct {
	mu        sync.RWMutex
	ingresses map[string]programmed // namespace/name
	vs        *vsTable              // others' VirtualServices (virtualservice.go)
	istio     func() *istioConfig   // the gateways this process stands for (config-istio)
	svcs      corev1listers.ServiceLister
	eps       corev1listers.EndpointsLister
	logger    *zap.SugaredLogger
}

func newTable(svcs corev1listers.ServiceLister, eps corev1listers.EndpointsLister, istio func() *istioConfig, logger *zap.SugaredLogger) *table {
	return &table{ingresses: map[string]programmed{}, vs: &vsTable{all: map[string]*virtualService{}},
		istio: istio, svcs: svcs, eps: eps, logger: logger}
}

// gateways: the Istio Gateways a listener stands for, as "<namespace>/<name>"
// (the same split by visibility as the KIngress rules').
func (t *table) gateways(vis v1alpha1.IngressVisibility) []string {
	c := t.istio()
	gws := c.LocalGateways
	if vis == v1alpha1.IngressVisibilityExternalIP {
		gws = c.IngressGateways
	}
	names := make([]string, 0, len(gws))
	for _, g := range gws {
		names = append(names, g.Namespace+"/"+g.Name)
	}
	return names
}

// gatewayServed: the listener whose gateway Service is `host`, if this process
// stands for it.
func (t *table) gatewayServed(host string) (v1alpha1.IngressVisibility, bool) {
	c := t.istio()
	for vis, gws := range map[v1alpha1.IngressVisibility][]gateway{
		v1alpha1.IngressVisibilityExternalIP: c.IngressGateways, v1alpha1.IngressVisibilityClusterLocal: c.LocalGateways} {
		for _, g := range gws {
			if g.ServiceURL != "" && hostPrefix(g.ServiceURL) == hostPrefix(host) {
				return vis, true
			}
		}
	}
	return "", false
}

// hostPrefix: vs.go:274-282.
func hostPrefix(host string) string {
	suffix := ".svc." + network.GetClusterDomainName()
	return strings.TrimSuffix(host, suffix)
}

// distinctHostPrefixes: vs.go:213-234.
func distinctHostPrefixes(hosts []string) []string {
	all := sets.List(sets.New(hosts...))
	ns := []string{}
	for _, h := range all {
		h = hostPrefix(h)
		exists := false
		for _, e := range ns {
			if strings.HasPrefix(h, e) {
				exists = true
				break
			}
		}
		if !exists {
			ns = append(ns, h)
		}
	}
	return ns
}

func (t *table) set(ing *v1alpha1.Ingress) {
	p := programmed{generation: ing.Generation}
	// makeVirtualServiceSpec, vs.go:125-150: one route per rule path, in order.
	for _, rule := range ing.Spec.Rules {
		if rule.HTTP == nil {
			continue
		}
		vis := rule.Visibility
		if vis == "" { // getPublicIngressRules treats "" as ExternalIP (vs.go:306)
			vis = v1alpha1.IngressVisibilityExternalIP
		}
		for _, path := range rule.HTTP.Paths {
			p.routes = append(p.routes, route{visibility: vis, hosts: distinctHostPrefixes(rule.Hosts), path: path})
		}
	}
	t.mu.Lock()
	t.ingresses[ing.Namespace+"/"+ing.Name] = p
	t.mu.Unlock()
}

func (t *table) remove(ns, name string) {
	t.mu.Lock()
	delete(t.ingresses, ns+"/"+name)
	t.mu.Unlock()
}

// serves reports whether the gateways serve this generation of the ingress.
func (t *table) serves(ing *v1alpha1.Ingress) bool {
	t.mu.RLock()
	defer t.mu.RUnlock()
	p, ok := t.ingresses[ing.Namespace+"/"+ing.Name]
	return ok && p.generation == ing.Generation
}

func (t *table) match(vis v1alpha1.IngressVisibility, r *http.Request) (*v1alpha1.HTTPIngressPath, string) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	keys := make([]string, 0, len(t.ingresses))
	for k := range t.ingresses {
		keys = append(keys, k)
	}
	sort.Strings(keys) // a stable order; Knative never gives two ingresses one host
	for _, k := range keys {
		for i := range t.ingresses[k].routes {
			rt := &t.ingresses[k].routes[i]
			if rt.visibility != vis {
				continue
			}
			hostOK := false
			for _, h := range rt.hosts {
				if strings.HasPrefix(r.Host, h) { // Authority prefix match (vs.go:250-253)
					hostOK = true
					break
				}
			}
			if !hostOK {
				continue
			}
			if rt.path.Path != "" && !strings.HasPrefix(r.URL.RequestURI(), rt.path.Path) {
				continue
			}
			headersOK := true
			for hk, hv := range rt.path.Headers {
				if r.Header.Get(hk) != hv.Exact {
					headersOK = false
					break
				}
			}
			if headersOK {
				p := rt.path
				return &p, k
			}
		}
	}
	return nil, ""
}

// pickWeighted: a weighted choice (HTTPRouteDestination.Weight, vs.go:172-182);
// nil for none, the first where no weight is given (one destination may leave
// it out).
func pickWeighted[T any](items []T, weight func(*T) int) *T {
	if len(items) == 0 {
		return nil
	}
	total := 0
	for i := range items {
		total += weight(&items[i])
	}
	if total <= 0 {
		return &items[0]
	}
	n := rand.Intn(total)
	for i := range items {
		if n < weight(&items[i]) {
			return &items[i]
		}
		n -= weight(&items[i])
	}
	return &items[len(items)-1]
}

// endpoint resolves <svc>.<ns>:<port number> to a ready endpoint address, as
// Envoy's cluster outbound|<port>||<svc>.<ns>.svc.cluster.local would.
func (t *table) endpoint(b v1alpha1.IngressBackend) (string, error) {
	svc, err := t.svcs.Services(b.ServiceNamespace).Get(b.ServiceName)
	if err != nil {
		return "", err
	}
	port := b.ServicePort.IntValue()
	var sp *corev1.ServicePort
	for i := range svc.Spec.Ports {
		if int(svc.Spec.Ports[i].Port) == port || (b.ServicePort.StrVal != "" && svc.Spec.Ports[i].Name == b.ServicePort.StrVal) {
			sp = &svc.Spec.Ports[i]
			break
		}
	}
	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		return net.JoinHostPort(svc.Spec.ExternalName, strconv.Itoa(port)), nil
	}
	if sp == nil {
		return "", fmt.Errorf("service %s/%s has no port %s", b.ServiceNamespace, b.ServiceName, b.ServicePort.String())
	}
	ep, err := t.eps.Endpoints(b.ServiceNamespace).Get(b.ServiceName)
	if err != nil {
		return "", err
	}
	var addrs []string
	for _, ss := range ep.Subsets {
		for _, p := range ss.Ports {
			if p.Name != sp.Name && len(ss.Ports) > 1 {
				continue
			}
			for _, a := range ss.Addresses {
				addrs = append(addrs, net.JoinHostPort(a.IP, strconv.Itoa(int(p.Port))))
			}
		}
	}
	if len(addrs) == 0 {
		return "", fmt.Errorf("no ready endpoints for %s/%s", b.ServiceNamespace, b.ServiceName)
	}
	return addrs[rand.Intn(len(addrs))], nil
}

func (t *table) handler(vis v1alpha1.IngressVisibility) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { t.serve(vis, w, r, 0) })
}

// serve: a VirtualService that claims the request's host on this gateway
// first, then the KIngress rules. `hops` counts in-process passes from one
// gateway to another (a VirtualService routing to a gateway Service).
func (t *table) serve(vis v1alpha1.IngressVisibility, w http.ResponseWriter, r *http.Request, hops int) {
	if rt, m, key := t.vs.route(t.gateways(vis), r); rt != nil {
		t.serveVirtualService(rt, m, key, w, r, hops)
		return
	}
	path, ingKey := t.match(vis, r)
	if path == nil {
		w.WriteHeader(http.StatusNotFound) // Envoy: no route matched
		return
	}
	split := pickWeighted(path.Splits, func(s *v1alpha1.IngressBackendSplit) int { return s.Percent })
	if split == nil {
		w.WriteHeader(http.StatusNotFound)
		return
	}
	addr, err := t.endpoint(split.IngressBackend)
	if err != nil {
		t.logger.Infow("no upstream", "ingress", ingKey, "host", r.Host, "error", err)
		http.Error(w, "no healthy upstream", http.StatusServiceUnavailable)
		return
	}
	t.forward(w, r, addr, ingKey, func(out *http.Request) {
		for k, v := range split.AppendHeaders {
			out.Header.Set(k, v)
		}
		for k, v := range path.AppendHeaders {
			out.Header.Set(k, v)
		}
		if path.RewriteHost != "" {
			out.Host = path.RewriteHost
		}
	})
}

func (t *table) serveVirtualService(rt *vsRoute, m *vsMatch, key string, w http.ResponseWriter, r *http.Request, hops int) {
	if len(rt.destinations) == 0 {
		w.WriteHeader(http.StatusNotFound)
		return
	}
	d := pickWeighted(rt.destinations, func(d *vsDestination) int { return d.weight })
	out := r.Clone(r.Context())
	for k, v := range rt.set {
		if strings.EqualFold(k, "host") { // Istio: setting Host rewrites the authority
			out.Host = v
		} else {
			out.Header.Set(k, v)
		}
	}
	if rt.rewriteAuthority != "" {
		out.Host = rt.rewriteAuthority
	}
	if rt.rewriteURI != "" {
		if m.uri != nil && m.uri.prefix != "" {
			out.URL.Path = rt.rewriteURI + strings.TrimPrefix(out.URL.Path, m.uri.prefix)
		} else {
			out.URL.Path = rt.rewriteURI
		}
		out.URL.RawPath = ""
	}
	if vis, ok := t.gatewayServed(d.host); ok {
		if hops >= 2 {
			t.logger.Infow("VirtualService loop", "virtualservice", key, "host", r.Host)
			http.Error(w, "route loop between gateways", http.StatusLoopDetected)
			return
		}
		t.serve(vis, w, out, hops+1)
		return
	}
	b, err := backend(d)
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	addr, err := t.endpoint(b)
	if err != nil {
		t.logger.Infow("no upstream", "virtualservice", key, "host", r.Host, "error", err)
		http.Error(w, "no healthy upstream", http.StatusServiceUnavailable)
		return
	}
	t.forward(w, out, addr, key, func(*http.Request) {})
}

// forward proxies the request to addr; `edit` changes what goes upstream.
func (t *table) forward(w http.ResponseWriter, r *http.Request, addr, key string, edit func(*http.Request)) {
	proxy := &httputil.ReverseProxy{
		FlushInterval: -1,
		Director: func(out *http.Request) {
			out.URL.Scheme = "http"
			out.URL.Host = addr
			edit(out)
			if out.Header.Get("X-Forwarded-Proto") == "" {
				out.Header.Set("X-Forwarded-Proto", "http")
			}
		},
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, err error) {
			t.logger.Infow("upstream error", "route", key, "upstream", addr, "error", err)
			http.Error(w, "upstream connect error or disconnect/reset before headers", http.StatusServiceUnavailable)
		},
	}
	proxy.ServeHTTP(w, r)
}
