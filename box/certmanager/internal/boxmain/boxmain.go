// Package boxmain holds what the box's three cert-manager mains share: the version they report
// and a leader-elected run. It is the box's, not upstream's: cert-manager's own mains (its
// cmd/{controller,cainjector,webhook} modules) are not served by the Go module proxy (box/README.md,
// the cert-manager row), so box/certmanager/cmd/* wire the library's packages as those mains do.
package boxmain

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	logf "github.com/cert-manager/cert-manager/pkg/logs"
	"github.com/cert-manager/cert-manager/pkg/util"
	"github.com/spf13/pflag"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	logsapi "k8s.io/component-base/logs/api/v1"
)

// Version reports the version the binary was built from: util.AppVersion (set with -ldflags -X by
// box/certmanager/build.sh, as upstream's make/00_mod.mk sets it) and the cert-manager module
// version recorded in the build info. `--version` prints it and exits; every start logs it.
func Version(component string) {
	mod := "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == "github.com/cert-manager/cert-manager" {
				mod = d.Version + " " + d.Sum
			}
		}
	}
	v := util.VersionInfo()
	line := fmt.Sprintf("cert-manager-%s version=%s (module github.com/cert-manager/cert-manager %s, %s %s)",
		component, v.GitVersion, mod, v.GoVersion, v.Platform)
	for _, a := range os.Args[1:] {
		if a == "--version" || a == "-version" {
			fmt.Println(line)
			os.Exit(0)
		}
	}
	fmt.Fprintln(os.Stderr, line)
}

// Main reports the version, then runs run and exits 1 with its error, as upstream's mains do.
func Main(component string, run func() error) {
	Version(component)
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "cert-manager-%s: %v\n", component, err)
		os.Exit(1)
	}
}

// Parse parses the command line (an unknown flag is an error) and applies the logging flags.
func Parse(fs *pflag.FlagSet, logging *logsapi.LoggingConfiguration) error {
	if err := fs.Parse(os.Args[1:]); err != nil {
		return err
	}
	logf.InitLogs()
	return logf.ValidateAndApply(logging)
}

// SignalContext is cancelled on SIGTERM or SIGINT, as upstream's internal/cmd/util does: the
// kubelet's SIGTERM at a Pod's deletion stops the controllers and releases the lease.
func SignalContext() context.Context {
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	go func() { <-ctx.Done(); cancel() }()
	return ctx
}

// Election is a Lease lock's settings (the release's Role in kube-system names each lease).
type Election struct {
	Namespace, Name                           string
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
	WatchDog                                  *leaderelection.HealthzAdaptor
}

// RunElected runs run(ctx) once this process holds the Lease, and returns when ctx ends or the
// lease is lost (an error then: the Pod restarts, as upstream exits).
func RunElected(ctx context.Context, cfg *rest.Config, e Election, run func(context.Context) error) error {
	client, err := kubernetes.NewForConfig(rest.AddUserAgent(cfg, "leader-election"))
	if err != nil {
		return err
	}
	host, _ := os.Hostname()
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: e.Namespace, Name: e.Name},
		Client:     client.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: host + "-external-cert-manager-" + e.Name},
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var runErr error
	done := make(chan struct{})
	leaderelection.RunOrDie(runCtx, leaderelection.LeaderElectionConfig{
		Lock: lock, LeaseDuration: e.LeaseDuration, RenewDeadline: e.RenewDeadline,
		RetryPeriod: e.RetryPeriod, WatchDog: e.WatchDog, ReleaseOnCancel: true, Name: e.Name,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(ctx context.Context) {
				runErr = run(ctx)
				close(done)
				cancel()
			},
			OnStoppedLeading: func() {},
		},
	})
	if ctx.Err() != nil { // SIGTERM: a clean stop
		return nil
	}
	select {
	case <-done:
		if runErr == nil {
			runErr = fmt.Errorf("%s stopped", e.Name)
		}
		return runErr
	default:
		return fmt.Errorf("leader election lost for lease %s/%s", e.Namespace, e.Name)
	}
}
