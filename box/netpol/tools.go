//go:build tools

// Package netpol pins the enforcer's main package in this module (built with
// `go build sigs.k8s.io/kube-network-policies/cmd`).
package netpol

import _ "sigs.k8s.io/kube-network-policies/cmd"
