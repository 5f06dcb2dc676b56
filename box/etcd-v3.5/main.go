// Command etcd is upstream's etcd server binary (go.etcd.io/etcd/server/v3
// main.go, which only calls etcdmain.Main), built from the module version
// pinned in go.mod: etcd v3.5.24, the version k8s.io/kubernetes@v1.32.13 pairs with
// (build/dependencies.yaml "etcd", cmd/kubeadm/app/constants DefaultEtcdVersion).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
