// cert-manager v1.16.1's webhook (quay.io/jetstack/cert-manager-webhook), wired from the library
// because upstream's main (its cmd/webhook module) is not served here (box/README.md). As
// upstream's: the configuration starts from the library's defaults (pkg/webhook/options
// NewWebhookConfiguration), takes its flags from that package's AddConfigFlags (every flag the
// release's Deployment passes: --secure-port, --dynamic-serving-*), and runs the server
// internal/webhook builds (NewCertManagerWebhookServer: validation, defaulting and conversion of
// cert-manager's kinds, serving certificates from its dynamic CA in the
// cert-manager-webhook-ca Secret, /healthz and /livez on :6080 for the Deployment's probes).
package main

import (
	"fmt"

	"github.com/cert-manager/cert-manager/box-binaries/internal/boxmain"
	cmwebhook "github.com/cert-manager/cert-manager/internal/webhook"
	logf "github.com/cert-manager/cert-manager/pkg/logs"
	utilfeature "github.com/cert-manager/cert-manager/pkg/util/feature"
	"github.com/cert-manager/cert-manager/pkg/webhook/options"
	"github.com/spf13/pflag"
)

func main() { boxmain.Main("webhook", run) }

func run() error {
	cfg, err := options.NewWebhookConfiguration()
	if err != nil {
		return err
	}
	fs := pflag.NewFlagSet("cert-manager-webhook", pflag.ContinueOnError)
	options.AddConfigFlags(fs, cfg) // the logging flags (--v) too
	if err := boxmain.Parse(fs, &cfg.Logging); err != nil {
		return err
	}
	if err := utilfeature.DefaultMutableFeatureGate.SetFromMap(cfg.FeatureGates); err != nil {
		return fmt.Errorf("--feature-gates: %w", err)
	}
	ctx := boxmain.SignalContext()
	srv, err := cmwebhook.NewCertManagerWebhookServer(logf.Log.WithName("webhook"), *cfg)
	if err != nil {
		return err
	}
	return srv.Run(ctx)
}
