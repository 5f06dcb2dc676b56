// Command coredns is upstream CoreDNS v1.11.3 (coredns.go: coremain.Run), the version Kubernetes
// 1.32 pairs with (cmd/kubeadm/app/constants/constants.go CoreDNSVersion, build/dependencies.yaml
// "coredns-kube-up"), built with the plugins the Corefile of kubeadm uses
// (cmd/kubeadm/app/phases/addons/dns/manifests.go) plus log and hosts, instead of all of
// core/plugin/zplugin.go: the cloud back-ends (route53, azure, clouddns), dnstap, geoip and
// trace pull in large SDKs the box never uses. The directive order is upstream's
// (core/dnsserver/zdirectives.go is compiled in whole); a directive whose plugin is not
// imported here fails the Corefile with "Unknown directive".
package main

import (
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/hosts"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/metrics"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
)

func main() {
	coremain.Run()
}
