//go:build tools

// Package tools pins crictl, the CRI command line the local stack uses to stop
// and remove its real node's pods (so their CNI networks are torn down) at
// env-down, and that developers use to look at the node's containers.
package tools

import (
	_ "sigs.k8s.io/cri-tools/cmd/crictl"
)
