// Command kube is a multi-call binary for the Kubernetes control plane
// (kube-apiserver, kube-controller-manager, kube-scheduler, kubectl) and the
// node components (kubelet, kube-proxy), built
// from k8s.io/kubernetes at the version pinned in go.mod. It dispatches on the
// base name of argv[0] (symlinks kube-apiserver -> kube, ...) or, when called
// as "kube", on its first argument: `kube kube-apiserver --version`.
//
// The component entry points are copies of upstream's cmd/<component>/*.go
// main functions (package main cannot be imported), including their blank
// imports (JSON logging, client-go metrics, tzdata for CronJob time zones).
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	_ "time/tzdata" // for timeZone support in CronJob (apiserver, controller-manager)

	_ "k8s.io/client-go/plugin/pkg/client/auth" // kubectl: client auth plugins
	"k8s.io/component-base/cli"
	"k8s.io/component-base/logs"
	_ "k8s.io/component-base/logs/json/register"          // JSON log format registration
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // prometheus client-go plugins
	_ "k8s.io/component-base/metrics/prometheus/version"  // version metric registration
	kubectlcmd "k8s.io/kubectl/pkg/cmd"
	kubectlutil "k8s.io/kubectl/pkg/cmd/util"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	proxy "k8s.io/kubernetes/cmd/kube-proxy/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
	kubelet "k8s.io/kubernetes/cmd/kubelet/app"
)

var commands = map[string]func(){
	"kube-apiserver":          func() { os.Exit(cli.Run(apiserver.NewAPIServerCommand())) },
	"kube-controller-manager": func() { os.Exit(cli.Run(controllermanager.NewControllerManagerCommand())) },
	"kube-scheduler":          func() { os.Exit(cli.Run(scheduler.NewSchedulerCommand())) },
	"kubectl":                 runKubectl,
	// upstream cmd/kubelet/kubelet.go and cmd/kube-proxy/proxy.go main()
	"kubelet":    func() { os.Exit(cli.Run(kubelet.NewKubeletCommand(context.Background()))) },
	"kube-proxy": func() { os.Exit(cli.Run(proxy.NewProxyCommand())) },
}

// runKubectl is upstream v1.34 cmd/kubectl/kubectl.go main().
func runKubectl() {
	logs.GlogSetter(kubectlcmd.GetLogVerbosity(os.Args)) // nolint:errcheck
	command := kubectlcmd.NewDefaultKubectlCommand()
	if err := cli.RunNoErrOutput(command); err != nil {
		kubectlutil.CheckErr(err)
	}
}

func main() {
	name := strings.TrimSuffix(filepath.Base(os.Args[0]), ".exe")
	if _, ok := commands[name]; !ok && len(os.Args) > 1 {
		// "kube kube-apiserver --flags": drop argv[0] so that cobra and
		// kubectl's plugin handling see the component as argv[0].
		name = os.Args[1]
		os.Args = os.Args[1:]
	}
	run, ok := commands[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "usage: %s {kube-apiserver|kube-controller-manager|kube-scheduler|kubectl|kubelet|kube-proxy} [flags]\n"+
			"  (or call it through a symlink with one of those names)\n", filepath.Base(os.Args[0]))
		os.Exit(2)
	}
	run()
}
