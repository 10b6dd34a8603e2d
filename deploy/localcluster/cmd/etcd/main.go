// Command etcd is the etcd server, built from go.etcd.io/etcd/server/v3.
//
// etcd's own go.mod carries replace directives, so `go install` of it is
// refused; this wrapper main is the supported way to build it as a dependency.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
