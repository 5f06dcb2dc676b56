// cert-manager v1.16.1's controller (quay.io/jetstack/cert-manager-controller), wired from the
// library's packages because upstream's main (its cmd/controller module, app/controller.go and
// app/options) is not served here (box/README.md). What this main does, as upstream's does:
//   - its configuration starts from the library's defaults (internal/apis/config/controller/
//     v1alpha1/defaults.go), then the flags the release's Deployment passes;
//   - the enabled controllers are "*" = DefaultEnabledControllers (defaults.go:126), each built
//     from pkg/controller's registry (register.go) on one ContextFactory (context.go:259), and the
//     informer factories start after every controller has registered its informers;
//   - it runs while it holds the Lease kube-system/cert-manager-controller (the release's Role
//     names it), with /livez on :9403 (pkg/healthz, the Deployment's livenessProbe) and metrics
//     on :9402 (pkg/metrics).
//
// Flags not listed below are refused, so a release that passes one we do not wire fails loudly.
package main

import (
	"context"
	"fmt"
	"net"
	"strings"

	"github.com/cert-manager/cert-manager/box-binaries/internal/boxmain"
	config "github.com/cert-manager/cert-manager/internal/apis/config/controller"
	configscheme "github.com/cert-manager/cert-manager/internal/apis/config/controller/scheme"
	defaults "github.com/cert-manager/cert-manager/internal/apis/config/controller/v1alpha1"
	"github.com/cert-manager/cert-manager/pkg/acme/accounts"
	configv1alpha1 "github.com/cert-manager/cert-manager/pkg/apis/config/controller/v1alpha1"
	controllerpkg "github.com/cert-manager/cert-manager/pkg/controller"
	"github.com/cert-manager/cert-manager/pkg/healthz"
	_ "github.com/cert-manager/cert-manager/pkg/issuer/acme"
	_ "github.com/cert-manager/cert-manager/pkg/issuer/ca"
	_ "github.com/cert-manager/cert-manager/pkg/issuer/selfsigned"
	_ "github.com/cert-manager/cert-manager/pkg/issuer/vault"
	_ "github.com/cert-manager/cert-manager/pkg/issuer/venafi"
	logf "github.com/cert-manager/cert-manager/pkg/logs"
	"github.com/cert-manager/cert-manager/pkg/metrics"
	"github.com/spf13/pflag"
	"golang.org/x/sync/errgroup"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/clock"
)

func main() { boxmain.Main("controller", run) }

func defaultConfig() (*config.ControllerConfiguration, error) {
	scheme, _, err := configscheme.NewSchemeAndCodecs()
	if err != nil {
		return nil, err
	}
	versioned := &configv1alpha1.ControllerConfiguration{}
	scheme.Default(versioned)
	cfg := &config.ControllerConfiguration{}
	return cfg, scheme.Convert(versioned, cfg, nil)
}

func run() error {
	cfg, err := defaultConfig()
	if err != nil {
		return err
	}
	fs := pflag.NewFlagSet("cert-manager-controller", pflag.ContinueOnError)
	fs.StringVar(&cfg.KubeConfig, "kubeconfig", cfg.KubeConfig, "kubeconfig (default: in-cluster)")
	fs.StringVar(&cfg.ClusterResourceNamespace, "cluster-resource-namespace", cfg.ClusterResourceNamespace, "namespace for ClusterIssuers' Secrets")
	fs.BoolVar(&cfg.LeaderElectionConfig.Enabled, "leader-elect", cfg.LeaderElectionConfig.Enabled, "hold a Lease before running")
	fs.StringVar(&cfg.LeaderElectionConfig.Namespace, "leader-election-namespace", cfg.LeaderElectionConfig.Namespace, "the Lease's namespace")
	fs.StringVar(&cfg.ACMEHTTP01Config.SolverImage, "acme-http01-solver-image", cfg.ACMEHTTP01Config.SolverImage, "ACME HTTP-01 solver image")
	fs.IntVar(&cfg.MaxConcurrentChallenges, "max-concurrent-challenges", cfg.MaxConcurrentChallenges, "ACME challenges processed at once")
	fs.StringSliceVar(&cfg.Controllers, "controllers", cfg.Controllers, "controllers to run ('*' = the defaults, '-name' leaves one out)")
	logf.AddFlagsNonDeprecated(&cfg.Logging, fs)
	if err := boxmain.Parse(fs, &cfg.Logging); err != nil {
		return err
	}
	enabled, err := enabledControllers(cfg.Controllers)
	if err != nil {
		return err
	}
	ctx := logf.NewContext(boxmain.SignalContext(), logf.Log, "cert-manager")
	log := logf.FromContext(ctx)
	opts, err := contextOptions(cfg)
	if err != nil {
		return err
	}
	factory, err := controllerpkg.NewContextFactory(ctx, opts)
	if err != nil {
		return err
	}
	health := healthz.NewServer(cfg.LeaderElectionConfig.HealthzTimeout)
	// /livez and metrics serve for the process's life; a failure to serve is logged (a dead
	// /livez then fails the Deployment's liveness probe, which restarts the Pod)
	for addr, serve := range map[string]func(net.Listener) error{
		cfg.HealthzListenAddress: func(l net.Listener) error { return health.Start(ctx, l) },
		cfg.MetricsListenAddress: func(l net.Listener) error { return opts.Metrics.NewServer(l).Serve(l) },
	} {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return err
		}
		go func() {
			if err := serve(l); err != nil {
				log.Error(err, "server stopped", "address", addr)
			}
		}()
	}
	start := func(ctx context.Context) error {
		return runControllers(ctx, factory, enabled, cfg.NumberOfConcurrentWorkers)
	}
	if !cfg.LeaderElectionConfig.Enabled {
		return start(ctx)
	}
	rc, err := clientcmd.BuildConfigFromFlags(cfg.APIServerHost, cfg.KubeConfig)
	if err != nil {
		return err
	}
	le := cfg.LeaderElectionConfig
	log.Info("waiting for the lease", "lease", le.Namespace+"/cert-manager-controller", "controllers", enabled)
	return boxmain.RunElected(ctx, rc, boxmain.Election{
		Namespace: le.Namespace, Name: "cert-manager-controller", LeaseDuration: le.LeaseDuration,
		RenewDeadline: le.RenewDeadline, RetryPeriod: le.RetryPeriod, WatchDog: health.LeaderHealthzAdaptor,
	}, start)
}

// enabledControllers expands --controllers as upstream's options do: "*" is
// DefaultEnabledControllers, "-name" removes one, "name" adds one of AllControllers.
func enabledControllers(flags []string) ([]string, error) {
	known := map[string]bool{}
	for _, n := range defaults.AllControllers {
		known[n] = true
	}
	on := map[string]bool{}
	for _, f := range flags {
		switch name := strings.TrimPrefix(f, "-"); {
		case f == "*":
			for _, n := range defaults.DefaultEnabledControllers {
				on[n] = true
			}
		case !known[name]:
			return nil, fmt.Errorf("--controllers: unknown controller %q (known: %v)", name, defaults.AllControllers)
		default:
			on[name] = !strings.HasPrefix(f, "-")
		}
	}
	var out []string
	for _, n := range defaults.AllControllers { // upstream's order
		if on[n] {
			out = append(out, n)
		}
	}
	return out, nil
}

// contextOptions maps the configuration onto pkg/controller's ContextOptions (context.go:122).
func contextOptions(cfg *config.ControllerConfiguration) (controllerpkg.ContextOptions, error) {
	h := cfg.ACMEHTTP01Config
	q := map[string]resource.Quantity{}
	for name, s := range map[string]string{"request-cpu": h.SolverResourceRequestCPU, "request-memory": h.SolverResourceRequestMemory,
		"limits-cpu": h.SolverResourceLimitsCPU, "limits-memory": h.SolverResourceLimitsMemory} {
		v, err := resource.ParseQuantity(s)
		if err != nil {
			return controllerpkg.ContextOptions{}, fmt.Errorf("ACME HTTP-01 solver %s %q: %w", name, s, err)
		}
		q[name] = v
	}
	return controllerpkg.ContextOptions{
		Kubeconfig: cfg.KubeConfig, APIServerHost: cfg.APIServerHost, Namespace: cfg.Namespace,
		KubernetesAPIQPS: cfg.KubernetesAPIQPS, KubernetesAPIBurst: cfg.KubernetesAPIBurst,
		Clock: clock.RealClock{}, Metrics: metrics.New(logf.Log, clock.RealClock{}),
		IssuerOptions: controllerpkg.IssuerOptions{
			ClusterResourceNamespace:        cfg.ClusterResourceNamespace,
			ClusterIssuerAmbientCredentials: cfg.ClusterIssuerAmbientCredentials,
			IssuerAmbientCredentials:        cfg.IssuerAmbientCredentials,
		},
		ACMEOptions: controllerpkg.ACMEOptions{
			HTTP01SolverImage:              h.SolverImage,
			HTTP01SolverResourceRequestCPU: q["request-cpu"], HTTP01SolverResourceRequestMemory: q["request-memory"],
			HTTP01SolverResourceLimitsCPU: q["limits-cpu"], HTTP01SolverResourceLimitsMemory: q["limits-memory"],
			ACMEHTTP01SolverRunAsNonRoot: h.SolverRunAsNonRoot, HTTP01SolverNameservers: h.SolverNameservers,
			DNS01CheckAuthoritative: !cfg.ACMEDNS01Config.RecursiveNameserversOnly,
			DNS01Nameservers:        cfg.ACMEDNS01Config.RecursiveNameservers,
			DNS01CheckRetryPeriod:   cfg.ACMEDNS01Config.CheckRetryPeriod,
			AccountRegistry:         accounts.NewDefaultRegistry(),
		},
		IngressShimOptions: controllerpkg.IngressShimOptions{
			DefaultIssuerName: cfg.IngressShimConfig.DefaultIssuerName, DefaultIssuerKind: cfg.IngressShimConfig.DefaultIssuerKind,
			DefaultIssuerGroup:                cfg.IngressShimConfig.DefaultIssuerGroup,
			DefaultAutoCertificateAnnotations: cfg.IngressShimConfig.DefaultAutoCertificateAnnotations,
		},
		CertificateOptions: controllerpkg.CertificateOptions{
			EnableOwnerRef: cfg.EnableCertificateOwnerRef, CopiedAnnotationPrefixes: cfg.CopiedAnnotationPrefixes,
		},
		SchedulerOptions: controllerpkg.SchedulerOptions{MaxConcurrentChallenges: cfg.MaxConcurrentChallenges},
		ConfigOptions:    controllerpkg.ConfigOptions{EnableGatewayAPI: cfg.EnableGatewayAPI},
	}, nil
}

// runControllers builds every enabled controller, then starts the shared informer factories
// (a factory starts only the informers registered with it so far), then runs them all.
func runControllers(ctx context.Context, factory *controllerpkg.ContextFactory, enabled []string, workers int) error {
	log := logf.FromContext(ctx)
	g, ctx := errgroup.WithContext(ctx)
	for _, name := range enabled {
		construct := controllerpkg.Known()[name]
		if construct == nil {
			return fmt.Errorf("controller %s is not registered", name)
		}
		c, err := construct(factory)
		if err != nil {
			return fmt.Errorf("controller %s: %w", name, err)
		}
		log.V(logf.InfoLevel).Info("starting controller", "controller", name)
		g.Go(func() error { return c.Run(workers, ctx) })
	}
	shared, err := factory.Build()
	if err != nil {
		return err
	}
	shared.KubeSharedInformerFactory.Start(ctx.Done())
	shared.SharedInformerFactory.Start(ctx.Done())
	shared.HTTP01ResourceMetadataInformersFactory.Start(ctx.Done())
	if shared.GatewaySolverEnabled {
		shared.GWShared.Start(ctx.Done())
	}
	return g.Wait()
}
