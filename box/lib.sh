# What every start script of the box does the same way (sourced, not run): free ports, the PKI
# kubeadm would make (one CA, the API server's serving cert, client certs, the front-proxy CA
# that delegated authentication reads, the service-account key pair), kubeconfigs, and waiting.
# The caller sets W (its work dir) and defines log().

BOX_SERVER_EXT='basicConstraints=CA:FALSE
keyUsage=digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth'
BOX_CLIENT_EXT='basicConstraints=CA:FALSE
keyUsage=digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth'
BOX_API_SANS='IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local'

box_free_ports() { # count [bind address]: that many free TCP ports, on one line
  python3 - "$1" "${2:-127.0.0.1}" <<'PY'
import socket, sys
ss = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in ss: s.bind((sys.argv[2], 0))
print(*[s.getsockname()[1] for s in ss])
PY
}

ossl() { openssl "$@" 2>>"$W/openssl.log"; }

cert() { # name, subject, extensions: a key and a certificate signed by the box's CA, in $P
  ossl req -newkey rsa:2048 -nodes -keyout "$P/$1.key" -out "$P/$1.csr" -subj "$2"
  printf '%s\n' "$3" > "$P/$1.ext"
  ossl x509 -req -in "$P/$1.csr" -CA "$P/ca.crt" -CAkey "$P/ca.key" -CAcreateserial \
    -days 2 -extfile "$P/$1.ext" -out "$P/$1.crt"
}

box_pki() { # the API server's addresses ("IP:127.0.0.1,IP:..."): $P = $W/pki with the CA,
  # apiserver, admin (system:masters), kcm and sched client certs, the front proxy, sa.key/pub.
  # Without the front-proxy CA the controller-manager's and scheduler's delegated authentication
  # log 'missing content for CA bundle "client-ca::...::requestheader-client-ca-file"'.
  P=$W/pki; mkdir -p "$P"
  ossl req -x509 -newkey rsa:2048 -nodes -keyout "$P/ca.key" -out "$P/ca.crt" -days 2 -subj "/CN=box-ca"
  cert apiserver "/CN=kube-apiserver" "$BOX_SERVER_EXT
subjectAltName=$1,$BOX_API_SANS"
  cert admin "/O=system:masters/CN=kubernetes-admin" "$BOX_CLIENT_EXT"
  cert kcm "/CN=system:kube-controller-manager" "$BOX_CLIENT_EXT"
  cert sched "/CN=system:kube-scheduler" "$BOX_CLIENT_EXT"
  ossl req -x509 -newkey rsa:2048 -nodes -keyout "$P/front-proxy-ca.key" -out "$P/front-proxy-ca.crt" \
    -days 2 -subj "/CN=box-front-proxy-ca"
  ossl req -newkey rsa:2048 -nodes -keyout "$P/front-proxy-client.key" -out "$P/front-proxy-client.csr" \
    -subj "/CN=front-proxy-client"
  printf '%s\n' "$BOX_CLIENT_EXT" > "$P/front-proxy-client.ext"
  ossl x509 -req -in "$P/front-proxy-client.csr" -CA "$P/front-proxy-ca.crt" -CAkey "$P/front-proxy-ca.key" \
    -CAcreateserial -days 2 -extfile "$P/front-proxy-client.ext" -out "$P/front-proxy-client.crt"
  ossl genrsa -out "$P/sa.key" 2048
  ossl rsa -in "$P/sa.key" -pubout -out "$P/sa.pub"
}

box_kubeconfig() { # kubectl, API server URL, name, cert name: writes $W/<name>.kubeconfig
  local kubectl=$1 server=$2 f=$W/$3.kubeconfig
  "$kubectl" config set-cluster box --server="$server" \
    --certificate-authority="$P/ca.crt" --embed-certs=true --kubeconfig="$f" >/dev/null
  "$kubectl" config set-credentials "$3" --client-certificate="$P/$4.crt" \
    --client-key="$P/$4.key" --embed-certs=true --kubeconfig="$f" >/dev/null
  "$kubectl" config set-context box --cluster=box --user="$3" --kubeconfig="$f" >/dev/null
  "$kubectl" config use-context box --kubeconfig="$f" >/dev/null
}

wait_for() { # description, timeout seconds, command...: 1 when the command never succeeded
  local what=$1 to=$2; shift 2
  local end=$(( $(date +%s) + to ))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$end" ] || { log "TIMEOUT waiting for $what"; return 1; }
    sleep 0.5
  done
  log "$what"
}

box_endpointslice() { # kubectl, namespace, service, manager, IP, "name:port" ...: an EndpointSlice
  # of that Service holding one ready address, written by hand (managed-by <manager>.box.local):
  # what the EndpointSlice controller writes for a Pod the kubelet does not run here.
  local kubectl=$1 ns=$2 svc=$3 manager=$4 ip=$5 ports="" p; shift 5
  for p in "$@"; do ports+="{name: \"${p%%:*}\", port: ${p##*:}, protocol: TCP}, "; done
  "$kubectl" apply -f - > /dev/null <<YAML
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: $svc-box
  namespace: $ns
  labels:
    kubernetes.io/service-name: $svc
    endpointslice.kubernetes.io/managed-by: $manager.box.local
addressType: IPv4
ports: [${ports%, }]
endpoints:
- addresses: ["$ip"]
  conditions: {ready: true}
YAML
}

# kube-rbac-proxy, the KServe manager Deployment's sidecar in both Kubeflow releases: the version
# its consumer module requires (build.sh builds it into bin/kube-rbac-proxy-<v>/), v0.18.0
BOX_RBAC_PROXY=$(sed -n 's|^require github.com/brancz/kube-rbac-proxy ||p' \
  "$(dirname "${BASH_SOURCE[0]}")/kube-rbac-proxy/go.mod")

box_knative_release() { # [DIR]: the Knative release the binaries in box/knative/[DIR/]bin were built as
  "$(dirname "${BASH_SOURCE[0]}")/knative/${1:-.}/bin/controller" --version | grep -o 'knative-v[0-9.]*' | head -1
}
box_knative_dir() { # TARGET: the box/knative folder whose build the target's node runs
  case $1 in kserve-0.20) echo v1.21 ;; *) echo . ;; esac   # KServe 0.20 installs Knative 1.21.1
}

# The box's image registry: Debian's docker-registry (distribution 2.8) on 127.0.0.1:5000, its
# storage kept in /var/lib/box/registry like the node's containerd root. The node's containerd
# pulls docker.io and quay.io images from it (kubelet/real-kubelet.sh, BOX_REGISTRY): what a
# Pod that pulls Always (the KServe manager's) needs, with no way out to the real registries.
BOX_REGISTRY=127.0.0.1:5000
box_cert_manager_version() { # the cert-manager version box/certmanager/go.mod builds
  sed -n 's|^require github.com/cert-manager/cert-manager \(v[^ ]*\)$|\1|p' \
    "$(dirname "${BASH_SOURCE[0]}")/certmanager/go.mod"
}
box_registry_start() { # pid file: starts the registry unless it answers already
  curl -fsS "http://$BOX_REGISTRY/v2/" >/dev/null 2>&1 && return 0
  local data=${BOX_REGISTRY_ROOT:-/var/lib/box/registry}
  mkdir -p "$data"
  cat > "$data.yml" <<YML
version: 0.1
log: {level: warn}
storage: {filesystem: {rootdirectory: $data}, delete: {enabled: true}}
http: {addr: $BOX_REGISTRY}
YML
  docker-registry serve "$data.yml" > "$(dirname "$1")/registry.log" 2>&1 &
  echo $! > "$1"
  wait_for "registry on $BOX_REGISTRY ($(docker-registry --version | cut -d' ' -f2-))" 20 \
    curl -fsS "http://$BOX_REGISTRY/v2/"
}
box_registry_push() { # containerd socket, image name...: pushes each imported image to it
  local sock=$1 name ref; shift
  for name in "$@"; do
    ref=$BOX_REGISTRY/${name#*/}   # docker.io/kserve/x:v -> 127.0.0.1:5000/kserve/x:v
    ctr -a "$sock" -n k8s.io images tag --force "$name" "$ref" >/dev/null
    ctr -a "$sock" -n k8s.io images push --plain-http "$ref" >/dev/null
    ctr -a "$sock" -n k8s.io images rm "$ref" >/dev/null
    echo "pushed $name"
  done
}
box_static_image() { # "extra dirs", binary, its path, image name, archive, [mkimage args...]:
  # a static binary on a base like distroless/static:nonroot and ko's chainguard/static (the CA
  # bundle, passwd/group with nonroot 65532, /tmp), as ENTRYPOINT, user 65532; no registry
  local dirs=$1 binary=$2 path=$3 name=$4 archive=$5 r d; shift 5
  r=$(mktemp -d /tmp/box-rootfs.XXXXXX)
  mkdir -p "$r/$(dirname "$path")" "$r/etc/ssl/certs" "$r/tmp"
  for d in $dirs; do mkdir -p "$r/$d"; done
  cp "$binary" "$r/$path"
  cp /etc/ssl/certs/ca-certificates.crt "$r/etc/ssl/certs/"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' > "$r/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' > "$r/etc/group"
  chmod 1777 "$r/tmp"
  python3 "$(dirname "${BASH_SOURCE[0]}")/kubelet/mkimage.py" "$r" "$name" "$archive" \
    --entrypoint "$path" --env PATH=/usr/local/bin:/usr/bin:/bin \
    --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt --user 65532:65532 --workdir / "$@"
  rm -rf "$r"
  echo "$name"
}
