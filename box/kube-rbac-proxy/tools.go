//go:build tools

// Package tools pins the module of kube-rbac-proxy v0.18.0, the sidecar the KServe manager's
// Deployment names in Kubeflow 1.10.2 and 1.11.0 (quay.io/brancz/kube-rbac-proxy:v0.18.0);
// build.sh builds its main package, cmd/kube-rbac-proxy, from that version.
package tools

import _ "github.com/brancz/kube-rbac-proxy/cmd/kube-rbac-proxy"
