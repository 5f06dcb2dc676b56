package main

// The VirtualServices other controllers write for these gateways, served as
// Envoy serves them. KServe writes one per InferenceService in Knative mode
// (kserve v0.15.2 pkg/controller/v1beta1/inferenceservice/reconcilers/ingress/
// ingress_reconciler.go createIngress, lines 476-725): the InferenceService's
// own hosts (<name>.<ns>.svc.cluster.local on the local gateway and the mesh,
// <name>.<ns>.<domain> on config's ingressGateway, Kubeflow's
// kubeflow/kubeflow-gateway), routed with the Host header set to the
// predictor's Knative host and sent to the local gateway (lines 385-396 and
// 567-583), where the Knative Route's KIngress takes over. Its
// ExternalName Service <name> -> knative-local-gateway (lines 312-383) is why
// <name>.<ns>.svc.cluster.local reaches this process at all.
//
// What is reproduced (Istio's VirtualService API, networking/v1beta1
// virtual_service.proto, as Envoy's routes carry it):
//   - a VirtualService is used for a request when its hosts hold the request's
//     host (the authority without :port; "*." wildcards by suffix) and its
//     gateways hold the gateway the request came in on; the gateways of this
//     process are config-istio's (the external listener stands for the
//     IngressGateways, the local one for the LocalGateways, as for KIngress);
//   - its http routes in order, the first with a match that holds: each
//     match's authority and uri StringMatch (exact, prefix, regex as a full
//     match, RE2 like Envoy's safe_regex) and its gateways, which replace the
//     VirtualService's for that match; no match list matches every request;
//   - the destinations chosen by weight; headers.request.set, where "Host"
//     sets the authority (Istio turns it into Envoy's host rewrite);
//     rewrite.authority and rewrite.uri (for a prefix match, the prefix).
//   - A destination that is the Service of a gateway this process stands for
//     (KServe's is knative-local-gateway.istio-system.svc.cluster.local) is
//     served here, as that gateway would (Envoy sends it through the Service
//     back to the gateway pods); any other through its Service's endpoints.
// Not reproduced: the mesh gateway (no sidecars in the box), uriRegexRewrite
// (KServe writes it only with ingress pathTemplate, which Kubeflow leaves
// unset), header/query/method matches, retries, timeouts, mirrors, TLS.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/tools/cache"
	"knative.dev/networking/pkg/apis/networking/v1alpha1"
	"knative.dev/pkg/injection"
)

// The version KServe 0.15 writes (istio.io/client-go networking/v1beta1).
var virtualServices = schema.GroupVersionResource{Group: "networking.istio.io", Version: "v1beta1", Resource: "virtualservices"}

// The Istio API's JSON, as far as the stand-in reads it.
type stringMatch struct {
	Exact  string `json:"exact"`
	Prefix string `json:"prefix"`
	Regex  string `json:"regex"`
}

type vsSpec struct {
	Hosts    []string `json:"hosts"`
	Gateways []string `json:"gateways"`
	HTTP     []struct {
		Match []struct {
			URI       *stringMatch `json:"uri"`
			Authority *stringMatch `json:"authority"`
			Gateways  []string     `json:"gateways"`
		} `json:"match"`
		Route []struct {
			Destination struct {
				Host string `json:"host"`
				Port struct {
					Number int `json:"number"`
				} `json:"port"`
			} `json:"destination"`
			Weight int `json:"weight"`
		} `json:"route"`
		Headers *struct {
			Request *struct {
				Set map[string]string `json:"set"`
			} `json:"request"`
		} `json:"headers"`
		Rewrite *struct {
			URI       string `json:"uri"`
			Authority string `json:"authority"`
		} `json:"rewrite"`
	} `json:"http"`
}

// matcher is a compiled StringMatch; a nil one matches anything.
type matcher struct {
	exact, prefix string
	regex         *regexp.Regexp
}

func compile(m *stringMatch) (*matcher, error) {
	if m == nil {
		return nil, nil
	}
	out := &matcher{exact: m.Exact, prefix: m.Prefix}
	if m.Regex != "" {
		re, err := regexp.Compile("^(?:" + m.Regex + ")$") // Envoy's safe_regex matches the whole value
		if err != nil {
			return nil, fmt.Errorf("regex %q: %w", m.Regex, err)
		}
		out.regex = re
	}
	return out, nil
}

func (m *matcher) holds(value string) bool {
	switch {
	case m == nil:
		return true
	case m.regex != nil:
		return m.regex.MatchString(value)
	case m.prefix != "":
		return strings.HasPrefix(value, m.prefix)
	default:
		return value == m.exact
	}
}

type vsMatch struct {
	uri, authority *matcher
	gateways       []string
}

type vsDestination struct {
	host   string
	port   int
	weight int
}

type vsRoute struct {
	matches          []vsMatch
	destinations     []vsDestination
	set              map[string]string
	rewriteURI       string
	rewriteAuthority string
}

type virtualService struct {
	key    string // namespace/name
	hosts  []string
	routes []vsRoute
}

// qualify names a gateway "<namespace>/<name>"; a bare name is in the
// VirtualService's namespace (virtual_service.proto, field gateways).
func qualify(gateways []string, ns string) []string {
	out := make([]string, 0, len(gateways))
	for _, g := range gateways {
		if g != "mesh" && !strings.Contains(g, "/") {
			g = ns + "/" + g
		}
		out = append(out, g)
	}
	return out
}

func parseVirtualService(u *unstructured.Unstructured) (*virtualService, error) {
	raw, err := json.Marshal(u.Object["spec"])
	if err != nil {
		return nil, err
	}
	var spec vsSpec
	if err := json.Unmarshal(raw, &spec); err != nil {
		return nil, err
	}
	ns := u.GetNamespace()
	vs := &virtualService{key: ns + "/" + u.GetName(), hosts: spec.Hosts}
	gateways := qualify(spec.Gateways, ns)
	if len(gateways) == 0 {
		gateways = []string{"mesh"} // the API's default
	}
	for _, h := range spec.HTTP {
		r := vsRoute{}
		for _, m := range h.Match {
			uri, err := compile(m.URI)
			if err != nil {
				return nil, err
			}
			authority, err := compile(m.Authority)
			if err != nil {
				return nil, err
			}
			gws := gateways
			if len(m.Gateways) > 0 {
				gws = qualify(m.Gateways, ns)
			}
			r.matches = append(r.matches, vsMatch{uri: uri, authority: authority, gateways: gws})
		}
		if len(r.matches) == 0 {
			r.matches = []vsMatch{{gateways: gateways}}
		}
		for _, d := range h.Route {
			r.destinations = append(r.destinations, vsDestination{d.Destination.Host, d.Destination.Port.Number, d.Weight})
		}
		if h.Headers != nil && h.Headers.Request != nil {
			r.set = h.Headers.Request.Set
		}
		if h.Rewrite != nil {
			r.rewriteURI, r.rewriteAuthority = h.Rewrite.URI, h.Rewrite.Authority
		}
		vs.routes = append(vs.routes, r)
	}
	return vs, nil
}

func hostHolds(hosts []string, host string) bool {
	for _, h := range hosts {
		if strings.EqualFold(h, host) || (strings.HasPrefix(h, "*.") && strings.HasSuffix(strings.ToLower(host), strings.ToLower(h[1:]))) {
			return true
		}
	}
	return false
}

// overlaps: whether the two lists share a name.
func overlaps(a, b []string) bool {
	return slices.ContainsFunc(a, func(x string) bool { return slices.Contains(b, x) })
}

// vsTable holds the VirtualServices by namespace/name.
type vsTable struct {
	mu  sync.RWMutex
	all map[string]*virtualService
}

func (v *vsTable) set(vs *virtualService) {
	v.mu.Lock()
	v.all[vs.key] = vs
	v.mu.Unlock()
}

func (v *vsTable) remove(key string) {
	v.mu.Lock()
	delete(v.all, key)
	v.mu.Unlock()
}

// route finds the route for a request that came in on one of `gateways`:
// the first VirtualService (by namespace/name) whose hosts hold the request's
// host, then its first route with a match that holds.
func (v *vsTable) route(gateways []string, r *http.Request) (*vsRoute, *vsMatch, string) {
	host := r.Host
	if i := strings.LastIndex(host, ":"); i >= 0 && !strings.Contains(host[i:], "]") {
		host = host[:i]
	}
	v.mu.RLock()
	defer v.mu.RUnlock()
	keys := make([]string, 0, len(v.all))
	for k := range v.all {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		vs := v.all[k]
		if !hostHolds(vs.hosts, host) {
			continue
		}
		for i := range vs.routes {
			for j := range vs.routes[i].matches {
				m := &vs.routes[i].matches[j]
				if overlaps(m.gateways, gateways) && m.authority.holds(r.Host) && m.uri.holds(r.URL.Path) {
					return &vs.routes[i], m, k
				}
			}
		}
	}
	return nil, nil, ""
}

// backend names a destination's Service: <svc>.<ns>[.svc[.<cluster domain>]].
func backend(d *vsDestination) (v1alpha1.IngressBackend, error) {
	parts := strings.Split(d.host, ".")
	if len(parts) < 2 {
		return v1alpha1.IngressBackend{}, fmt.Errorf("destination %q: not <service>.<namespace>[.svc...]", d.host)
	}
	return v1alpha1.IngressBackend{ServiceName: parts[0], ServiceNamespace: parts[1], ServicePort: intstr.FromInt(d.port)}, nil
}

// watchVirtualServices keeps the table in step with the API server's
// VirtualServices, in every namespace.
func watchVirtualServices(ctx context.Context, v *vsTable, logger *zap.SugaredLogger) error {
	client, err := dynamic.NewForConfig(injection.GetConfig(ctx))
	if err != nil {
		return err
	}
	factory := dynamicinformer.NewDynamicSharedInformerFactory(client, 10*time.Hour)
	informer := factory.ForResource(virtualServices).Informer()
	upsert := func(obj interface{}) {
		u, ok := obj.(*unstructured.Unstructured)
		if !ok {
			return
		}
		vs, err := parseVirtualService(u)
		if err != nil {
			logger.Errorw("VirtualService not served", "name", u.GetNamespace()+"/"+u.GetName(), "error", err)
			v.remove(u.GetNamespace() + "/" + u.GetName())
			return
		}
		v.set(vs)
		logger.Infof("VirtualService %s served: hosts %v", vs.key, vs.hosts)
	}
	_, err = informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    upsert,
		UpdateFunc: func(_, obj interface{}) { upsert(obj) },
		DeleteFunc: func(obj interface{}) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			if u, ok := obj.(*unstructured.Unstructured); ok {
				v.remove(u.GetNamespace() + "/" + u.GetName())
			}
		},
	})
	if err != nil {
		return err
	}
	factory.Start(ctx.Done())
	return nil
}
