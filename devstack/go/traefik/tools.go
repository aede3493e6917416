//go:build tools

// Package tools pins Traefik, the maintained ingress controller (Kubernetes Ingress and
// Gateway API providers) the local stack runs in front of the real node's worker pods.
package tools

import _ "github.com/traefik/traefik/v3/cmd/traefik"
