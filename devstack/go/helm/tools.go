//go:build tools

// Package tools pins Helm, which renders, lints, installs and tests the Clarion
// chart against the local control plane.
package tools

import _ "helm.sh/helm/v3/cmd/helm"
