// Command etcd is upstream's etcd server binary (go.etcd.io/etcd/server/v3
// main.go, which only calls etcdmain.Main), built from the module version
// pinned in go.mod: etcd v3.6.5, the version k8s.io/kubernetes@v1.34.4 pairs with
// (build/dependencies.yaml "etcd", cmd/kubeadm/app/constants DefaultEtcdVersion).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
