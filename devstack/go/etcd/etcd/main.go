// Command etcd is etcd's own server entry point, built from the Go module
// proxy at the version pinned in go.mod. `go install go.etcd.io/etcd/...`
// refuses modules with replace directives, so this wrapper calls the same
// etcdmain.Main that etcd's main package calls.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
