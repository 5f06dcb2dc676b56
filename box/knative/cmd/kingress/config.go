package main

// config-istio, parsed as net-istio knative-v1.16.0
// pkg/reconciler/ingress/config/istio.go does (cited per function). Kubeflow
// 1.10.2/1.11.0 ship it with the old format and one key:
//   gateway.kubeflow.kubeflow-gateway: istio-ingressgateway.istio-system.svc.cluster.local
// and no local gateway, so the local one is the default
// knative-serving/knative-local-gateway, knative-local-gateway.istio-system.svc.cluster.local.

import (
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
	"knative.dev/networking/pkg/apis/networking/v1alpha1"
	"knative.dev/pkg/network"
	"sigs.k8s.io/yaml"
)

const (
	istioConfigName       = "config-istio"      // istio.go:35
	gatewayKeyPrefix      = "gateway."          // istio.go:38
	localGatewayKeyPrefix = "local-gateway."    // istio.go:41
	externalGatewaysKey   = "external-gateways" // istio.go:44
	localGatewaysKey      = "local-gateways"    // istio.go:47
)

// gateway: istio.go:78-84.
type gateway struct {
	Namespace     string
	Name          string
	ServiceURL    string                `json:"service"`
	LabelSelector *metav1.LabelSelector `json:"labelSelector,omitempty"`
}

type istioConfig struct {
	IngressGateways []gateway
	LocalGateways   []gateway
}

// defaultIstioConfig: istio.go:62-76 (defaultIngressGateways, defaultLocalGateways).
func defaultIstioConfig(systemNS string) *istioConfig {
	c := &istioConfig{}
	defaultValues(c, systemNS)
	return c
}

func defaultValues(c *istioConfig, systemNS string) { // istio.go:308-316
	if len(c.IngressGateways) == 0 {
		c.IngressGateways = []gateway{{Namespace: systemNS, Name: "knative-ingress-gateway",
			ServiceURL: network.GetServiceHostname("istio-ingressgateway", "istio-system")}}
	}
	if len(c.LocalGateways) == 0 {
		c.LocalGateways = []gateway{{Namespace: systemNS, Name: "knative-local-gateway",
			ServiceURL: network.GetServiceHostname("knative-local-gateway", "istio-system")}}
	}
}

// parseIstioConfig: NewIstioFromConfigMap, istio.go:166-196.
func parseIstioConfig(cm *corev1.ConfigMap, systemNS string) (*istioConfig, error) {
	_, hasExt := cm.Data[externalGatewaysKey]
	_, hasLocal := cm.Data[localGatewaysKey]
	newFormat := hasExt || hasLocal
	oldFormat := false
	for k := range cm.Data {
		if strings.HasPrefix(k, gatewayKeyPrefix) || strings.HasPrefix(k, localGatewayKeyPrefix) {
			oldFormat = true
		}
	}
	ret := &istioConfig{}
	switch {
	case newFormat && oldFormat:
		return nil, fmt.Errorf("invalid configmap: %q or %q can not be defined simultaneously with %q or %q",
			localGatewaysKey, externalGatewaysKey, gatewayKeyPrefix, localGatewayKeyPrefix)
	case newFormat: // parseNewFormat, istio.go:215-251
		for key, dst := range map[string]*[]gateway{externalGatewaysKey: &ret.IngressGateways, localGatewaysKey: &ret.LocalGateways} {
			if s, ok := cm.Data[key]; ok {
				if err := yaml.Unmarshal([]byte(s), dst); err != nil {
					return nil, fmt.Errorf("failed to parse configmap: failed to parse %q gateways: failed to unmarshal: %w", key, err)
				}
			}
		}
		defaultValues(ret, systemNS)
		if n := len(defaultGateways(ret.IngressGateways)); n != 1 {
			return nil, fmt.Errorf("exactly one external gateway with no selector can be defined, here: %d", n)
		}
		if n := len(defaultGateways(ret.LocalGateways)); n != 1 {
			return nil, fmt.Errorf("exactly one local gateway with no selector can be defined, here: %d", n)
		}
	case oldFormat: // parseOldFormat, istio.go:264-306
		ret.IngressGateways = parseOldFormatGateways(cm, gatewayKeyPrefix, systemNS)
		ret.LocalGateways = parseOldFormatGateways(cm, localGatewayKeyPrefix, systemNS)
		defaultValues(ret, systemNS)
	default:
		defaultValues(ret, systemNS)
	}
	for _, g := range append(append([]gateway{}, ret.IngressGateways...), ret.LocalGateways...) { // Validate, istio.go:91-139
		if g.Namespace == "" || g.Name == "" || g.ServiceURL == "" {
			return nil, fmt.Errorf("invalid configuration: invalid gateway %s/%s: missing namespace, name or service", g.Namespace, g.Name)
		}
		if errs := validation.IsDNS1123Subdomain(strings.TrimSuffix(g.ServiceURL, ".")); len(errs) > 0 {
			return nil, fmt.Errorf("invalid configuration: invalid gateway service format: %v", errs)
		}
		if _, err := metav1.LabelSelectorAsSelector(g.LabelSelector); err != nil {
			return nil, fmt.Errorf("invalid configuration: failed to create selector from label selector: %w", err)
		}
	}
	return ret, nil
}

// parseOldFormatGateways: istio.go:275-306.
func parseOldFormatGateways(cm *corev1.ConfigMap, prefix, systemNS string) []gateway {
	urls := map[string]string{}
	names := []string{}
	for k, v := range cm.Data {
		if !strings.HasPrefix(k, prefix) || k == prefix {
			continue
		}
		names = append(names, k[len(prefix):])
		urls[k[len(prefix):]] = v
	}
	sort.Strings(names)
	gws := make([]gateway, len(names))
	for i, n := range names {
		ns, name := systemNS, n
		if parts := strings.SplitN(n, ".", 2); len(parts) == 2 {
			ns, name = parts[0], parts[1]
		}
		gws[i] = gateway{Namespace: ns, Name: name, ServiceURL: urls[n]}
	}
	return gws
}

// defaultGateways: istio.go:151-163.
func defaultGateways(gws []gateway) []gateway {
	ret := []gateway{}
	for _, g := range gws {
		if g.LabelSelector == nil {
			ret = append(ret, g)
		}
	}
	return ret
}

// gatewaysFor: GatewaysFromContext and filterGateway, net-istio
// pkg/reconciler/ingress/resources/gateway.go:492-545.
func (c *istioConfig) gatewaysFor(ingLabels map[string]string) (map[v1alpha1.IngressVisibility][]gateway, error) {
	ret := map[v1alpha1.IngressVisibility][]gateway{}
	for vis, gws := range map[v1alpha1.IngressVisibility][]gateway{
		v1alpha1.IngressVisibilityExternalIP: c.IngressGateways, v1alpha1.IngressVisibilityClusterLocal: c.LocalGateways} {
		sel := []gateway{}
		for _, g := range gws {
			if g.LabelSelector == nil {
				continue
			}
			s, err := metav1.LabelSelectorAsSelector(g.LabelSelector)
			if err != nil {
				return nil, fmt.Errorf("failed to filter gateways: %w", err)
			}
			if s.Matches(labels.Set(ingLabels)) {
				sel = append(sel, g)
			}
		}
		if len(sel) == 0 {
			sel = defaultGateways(gws)
		}
		ret[vis] = sel
	}
	return ret, nil
}
