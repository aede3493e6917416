//go:build tools

// Package tools pins KWOK, which fakes a node and drives Pod status so that
// Deployments become Ready on a control plane without a container runtime.
package tools

import _ "sigs.k8s.io/kwok/cmd/kwok"
