//go:build tools

// Package tools pins Centrifugo v6, the Go peer the benchmarks compare Clarion with.
// The bench setup builds github.com/centrifugal/centrifugo/v6 from this module.
package tools

import _ "github.com/centrifugal/centrifugo/v6"
