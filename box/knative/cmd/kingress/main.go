// Command kingress is the box's one allowed stand-in: it takes the place of
// Kubeflow's net-istio (controller + Envoy gateways) for Knative Serving's
// KIngress objects of class istio.ingress.networking.knative.dev.
//
//   - The controller part is built on the same generated KIngress reconciler
//     that net-istio uses (knative.dev/networking
//     pkg/client/injection/reconciler/networking/v1alpha1/ingress, at the
//     version knative.dev/serving v0.43.2 requires: v0.0.0-20241022012959-60e29ff520dc,
//     also the one net-istio knative-v1.16.0 requires, go.mod), so class
//     filtering, the finalizer, ObservedGeneration and the status update are
//     upstream code. Only ReconcileKind/FinalizeKind are ours; they follow
//     net-istio knative-v1.16.0 pkg/reconciler/ingress/ingress.go
//     (reconcileIngress, lines 100-277) with the Istio objects replaced by
//     this process's routing table.
//   - The data-plane part (proxy.go) is a Host-header reverse proxy that
//     serves each KIngress rule the way net-istio's VirtualService asks Envoy
//     to (pkg/reconciler/ingress/resources/virtual_service.go).
//   - The same gateways serve the VirtualServices others write for them
//     (virtualservice.go): KServe's, which carry an InferenceService's own
//     address and URL to its predictor's Route.
//
// Kubeflow 1.10.2/1.11.0 install net-istio 1.16.0 (rendered example.yaml:
// Deployment net-istio-controller, app.kubernetes.io/version 1.16.0) and leave
// config-network's data empty, so the ingress class is the default,
// istio.ingress.networking.knative.dev (knative.dev/networking
// pkg/config/config.go:64 and :312).
package main

import (
	"context"
	"flag"
	"log"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/cache"
	"knative.dev/networking/pkg/apis/networking/v1alpha1"
	ingressinformer "knative.dev/networking/pkg/client/injection/informers/networking/v1alpha1/ingress"
	ingressreconciler "knative.dev/networking/pkg/client/injection/reconciler/networking/v1alpha1/ingress"
	netconfig "knative.dev/networking/pkg/config"
	endpointsinformer "knative.dev/pkg/client/injection/kube/informers/core/v1/endpoints"
	serviceinformer "knative.dev/pkg/client/injection/kube/informers/core/v1/service"
	"knative.dev/pkg/configmap"
	"knative.dev/pkg/controller"
	"knative.dev/pkg/injection/sharedmain"
	"knative.dev/pkg/logging"
	pkgreconciler "knative.dev/pkg/reconciler"
	"knative.dev/pkg/signals"
	"knative.dev/pkg/system"

	"imagelingo.local/box/knative/boxversion"
)

var (
	externalAddr = flag.String("external-addr", ":8081",
		"listen address of the external gateway (stands for istio-ingressgateway.istio-system)")
	localAddr = flag.String("local-addr", ":8082",
		"listen address of the cluster-local gateway (stands for knative-local-gateway.istio-system)")
)

func main() {
	boxversion.HandleVersionFlag("kingress (net-istio stand-in)")
	ctx := signals.NewContext()
	// sharedmain parses the flags before it calls newController.
	sharedmain.MainWithContext(ctx, "net-istio-controller", newController)
}

// reconciler implements ingressreconciler.Interface and Finalizer, as
// net-istio's Reconciler does (ingress.go:78-83).
type reconciler struct {
	table *table
	istio atomic.Pointer[istioConfig]
}

func newController(ctx context.Context, cmw configmap.Watcher) *controller.Impl {
	logger := logging.FromContext(ctx)
	r := &reconciler{}
	r.istio.Store(defaultIstioConfig(system.Namespace()))
	tbl := newTable(serviceinformer.Get(ctx).Lister(), endpointsinformer.Get(ctx).Lister(), r.istio.Load, logger)
	r.table = tbl
	// KServe's VirtualServices (one per InferenceService in Knative mode) on the same gateways
	if err := watchVirtualServices(ctx, tbl.vs, logger); err != nil {
		log.Fatalf("VirtualServices: %v", err)
	}
	// The gateways listen before any KIngress can be marked ready (net-istio only
	// marks ready after its prober saw the gateway pods serve the config).
	for _, l := range []struct {
		addr string
		vis  v1alpha1.IngressVisibility
	}{{*externalAddr, v1alpha1.IngressVisibilityExternalIP}, {*localAddr, v1alpha1.IngressVisibilityClusterLocal}} {
		ln, err := net.Listen("tcp", l.addr)
		if err != nil {
			log.Fatalf("gateway listen %s: %v", l.addr, err)
		}
		logger.Infof("gateway for %s KIngress rules listening on %s", l.vis, ln.Addr())
		srv := &http.Server{Handler: tbl.handler(l.vis), ReadHeaderTimeout: time.Minute}
		go func() { _ = srv.Serve(ln) }()
		go func() { <-ctx.Done(); _ = srv.Close() }()
	}

	// Same class value and filter as net-istio controller.go:98-100.
	myFilterFunc := pkgreconciler.AnnotationFilterFunc(ingressreconciler.ClassAnnotationKey, netconfig.IstioIngressClassName, true)
	ingressInf := ingressinformer.Get(ctx)
	impl := ingressreconciler.NewImpl(ctx, r, netconfig.IstioIngressClassName, func(impl *controller.Impl) controller.Options {
		return controller.Options{PromoteFilterFunc: myFilterFunc}
	})
	// controller.go:116-119
	ingressInf.Informer().AddEventHandler(cache.FilteringResourceEventHandler{
		FilterFunc: myFilterFunc,
		Handler:    controller.HandleAll(impl.Enqueue),
	})

	// config-istio decides the load balancer addresses written into the status
	// (net-istio watches it through its config store and resyncs all ingresses
	// on a change: controller.go:101-109).
	cmw.Watch(istioConfigName, func(cm *corev1.ConfigMap) {
		cfg, err := parseIstioConfig(cm, system.Namespace())
		if err != nil {
			logger.Errorw("invalid config-istio, keeping the previous one", "error", err)
			return
		}
		r.istio.Store(cfg)
		impl.FilteredGlobalResync(myFilterFunc, ingressInf.Informer())
	})
	// Backends resolve through Services and Endpoints (Envoy gets them by EDS);
	// no resync is needed: the proxy reads the listers per request.
	return impl
}

// ReconcileKind mirrors net-istio reconcileIngress (ingress.go:100-277).
func (r *reconciler) ReconcileKind(ctx context.Context, ing *v1alpha1.Ingress) pkgreconciler.Event {
	logger := logging.FromContext(ctx)
	// ingress.go:107-109
	ing.SetDefaults(ctx)
	ing.Status.InitializeConditions()

	// ingress.go:112 GatewaysFromContext (resources/gateway.go:492-522).
	gws, err := r.istio.Load().gatewaysFor(ing.GetLabels())
	if err != nil {
		// ingress.go:91-95
		ing.Status.MarkIngressNotReady("ReconcileIngressFailed", "Ingress reconciliation failed")
		return err
	}

	// ingress.go:227-236 builds and reconciles the VirtualServices; here the
	// rules go into the gateways' routing table instead. TLS (external-domain-tls,
	// cluster-local-domain-tls, ingress.go:127-192) is not carried: Kubeflow
	// enables neither.
	if len(ing.Spec.TLS) > 0 {
		logger.Warnf("KIngress %s/%s has spec.tls; the stand-in serves plain HTTP only", ing.Namespace, ing.Name)
	}
	r.table.set(ing)

	// ingress.go:239
	ing.Status.MarkNetworkConfigured()

	// ingress.go:241-260: net-istio marks the load balancer ready once its
	// status prober saw every gateway pod serve this generation. The table is
	// in this process and was just updated, and the listeners are up, so it is
	// ready now.
	ready := r.table.serves(ing)
	if ready {
		// ingress.go:262-269 with getLBStatus (ingress.go:490-502): the first
		// default gateway's service URL of each visibility.
		ing.Status.MarkLoadBalancerReady(
			getLBStatus(gatewayServiceURL(gws[v1alpha1.IngressVisibilityExternalIP])),
			getLBStatus(gatewayServiceURL(gws[v1alpha1.IngressVisibilityClusterLocal])))
	} else {
		ing.Status.MarkLoadBalancerNotReady()
	}
	logger.Infof("Ingress %s/%s (generation %d) programmed; ready=%v", ing.Namespace, ing.Name, ing.Generation, ready)
	return nil
}

// FinalizeKind: net-istio removes its Gateway servers and secrets
// (ingress.go:392-405); the VirtualServices go by owner reference. Here the
// rules leave the routing table.
func (r *reconciler) FinalizeKind(ctx context.Context, ing *v1alpha1.Ingress) pkgreconciler.Event {
	r.table.remove(ing.Namespace, ing.Name)
	logging.FromContext(ctx).Infof("Ingress %s/%s removed from the gateways", ing.Namespace, ing.Name)
	return nil
}

// gatewayServiceURL: net-istio ingress.go:482-488.
func gatewayServiceURL(gateways []gateway) string {
	if len(gateways) == 0 {
		return ""
	}
	return gateways[0].ServiceURL
}

// getLBStatus: net-istio ingress.go:490-502.
func getLBStatus(gatewayServiceURL string) []v1alpha1.LoadBalancerIngressStatus {
	// The Ingress isn't load-balanced by any particular
	// Service, but through a Service mesh.
	if gatewayServiceURL == "" {
		return []v1alpha1.LoadBalancerIngressStatus{{MeshOnly: true}}
	}
	return []v1alpha1.LoadBalancerIngressStatus{{DomainInternal: gatewayServiceURL}}
}
