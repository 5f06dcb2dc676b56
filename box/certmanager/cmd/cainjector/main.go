// cert-manager v1.16.1's cainjector (quay.io/jetstack/cert-manager-cainjector), wired from the
// library because upstream's main (its cmd/cainjector module) is not served here (box/README.md).
// As upstream's: the configuration starts from the library's defaults (internal/apis/config/
// cainjector/v1alpha1/defaults.go: all four injectable kinds, the Certificate data source, leader
// election in kube-system), then the release Deployment's flags; one controller-runtime manager
// holds the Lease kube-system/cert-manager-cainjector-leader-election (the release's Role names
// it) and runs pkg/controller/cainjector's reconcilers (setup.go RegisterAllInjectors), with
// Secrets read uncached, as that file's comments require (setup.go: "works in conjunction with
// the DisableFor option in the manager client.Options"). Metrics on :9402.
package main

import (
	"github.com/cert-manager/cert-manager/box-binaries/internal/boxmain"
	config "github.com/cert-manager/cert-manager/internal/apis/config/cainjector"
	configscheme "github.com/cert-manager/cert-manager/internal/apis/config/cainjector/scheme"
	cmapi "github.com/cert-manager/cert-manager/pkg/api"
	configv1alpha1 "github.com/cert-manager/cert-manager/pkg/apis/config/cainjector/v1alpha1"
	"github.com/cert-manager/cert-manager/pkg/controller/cainjector"
	logf "github.com/cert-manager/cert-manager/pkg/logs"
	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"
	apiext "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/clientcmd"
	apireg "k8s.io/kube-aggregator/pkg/apis/apiregistration/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics/server"
)

func main() { boxmain.Main("cainjector", run) }

func run() error {
	scheme, _, err := configscheme.NewSchemeAndCodecs()
	if err != nil {
		return err
	}
	versioned := &configv1alpha1.CAInjectorConfiguration{}
	scheme.Default(versioned)
	cfg := &config.CAInjectorConfiguration{}
	if err := scheme.Convert(versioned, cfg, nil); err != nil {
		return err
	}
	fs := pflag.NewFlagSet("cert-manager-cainjector", pflag.ContinueOnError)
	fs.StringVar(&cfg.KubeConfig, "kubeconfig", cfg.KubeConfig, "kubeconfig (default: in-cluster)")
	fs.StringVar(&cfg.Namespace, "namespace", cfg.Namespace, "only inject into this namespace (default: all)")
	fs.BoolVar(&cfg.LeaderElectionConfig.Enabled, "leader-elect", cfg.LeaderElectionConfig.Enabled, "hold a Lease before running")
	fs.StringVar(&cfg.LeaderElectionConfig.Namespace, "leader-election-namespace", cfg.LeaderElectionConfig.Namespace, "the Lease's namespace")
	logf.AddFlagsNonDeprecated(&cfg.Logging, fs)
	if err := boxmain.Parse(fs, &cfg.Logging); err != nil {
		return err
	}
	ctx := boxmain.SignalContext()
	ctrl.SetLogger(logf.Log)
	rc, err := clientcmd.BuildConfigFromFlags("", cfg.KubeConfig)
	if err != nil {
		return err
	}
	objects := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, apiext.AddToScheme,
		apireg.AddToScheme, cmapi.AddToScheme} {
		if err := add(objects); err != nil {
			return err
		}
	}
	le := cfg.LeaderElectionConfig
	cacheOpts := cache.Options{ReaderFailOnMissingInformer: true}
	if cfg.Namespace != "" {
		cacheOpts.DefaultNamespaces = map[string]cache.Config{cfg.Namespace: {}}
	}
	mgr, err := ctrl.NewManager(rc, ctrl.Options{
		Scheme: objects, Cache: cacheOpts,
		Client:                        client.Options{Cache: &client.CacheOptions{DisableFor: []client.Object{&corev1.Secret{}}}},
		LeaderElection:                le.Enabled,
		LeaderElectionNamespace:       le.Namespace,
		LeaderElectionID:              "cert-manager-cainjector-leader-election",
		LeaderElectionReleaseOnCancel: true,
		LeaseDuration:                 &le.LeaseDuration,
		RenewDeadline:                 &le.RenewDeadline,
		RetryPeriod:                   &le.RetryPeriod,
		Metrics:                       server.Options{BindAddress: cfg.MetricsListenAddress},
	})
	if err != nil {
		return err
	}
	on := cfg.EnableInjectableConfig
	if err := cainjector.RegisterAllInjectors(ctx, mgr, cainjector.SetupOptions{
		Namespace:                    cfg.Namespace,
		EnableCertificatesDataSource: cfg.EnableDataSourceConfig.Certificates,
		// the keys are setup.go's unexported resourceName values (setup.go:67-88)
		EnabledReconcilersFor: map[string]bool{
			"mutatingwebhookconfiguration":   on.MutatingWebhookConfigurations,
			"validatingwebhookconfiguration": on.ValidatingWebhookConfigurations,
			"apiservice":                     on.APIServices,
			"customresourcedefinition":       on.CustomResourceDefinitions,
		},
	}); err != nil {
		return err
	}
	return mgr.Start(ctx)
}
