#!/usr/bin/env bash
# Builds the local cluster's binaries from Go modules into $BIN_DIR:
#   control plane (this module): etcd, kube-apiserver, kube-controller-manager, kubectl
#   volcano/ (its own module):   vc-scheduler, vc-controller-manager
#   kwok (go install):           kwok, the simulated nodes and pods
# Idempotent: a stamp of each group's inputs (go.mod, go.sum, mains, Go version)
# skips a build when nothing changed; the Go build cache makes a rebuild cheap.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
k8s_version="v1.35.4"
kwok_module="sigs.k8s.io/kwok/cmd/kwok@v0.8.0"
bin_dir="${KUBE2REDIS_LOCALCLUSTER_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/kube2redis/localcluster/bin}"

if ! command -v go >/dev/null 2>&1; then
  echo "error: no Go toolchain on PATH; install Go >= 1.25, or point the tests at a cluster with KUBE2REDIS_TEST_KUBECONFIG, or run them where Docker is available" >&2
  exit 2
fi
mkdir -p "$bin_dir"

# up_to_date GROUP INPUT_HASH BINARY...: true if GROUP was built from these inputs.
up_to_date() {
  local group="$1" hash="$2"; shift 2
  [[ -f "$bin_dir/.stamp-$group" && "$(cat "$bin_dir/.stamp-$group")" == "$hash" ]] || return 1
  for b in "$@"; do [[ -x "$bin_dir/$b" ]] || return 1; done
}

inputs_of() {
  (go version; cat "$1/go.mod" "$1/go.sum"; find "$1/cmd" -name '*.go' -print0 | sort -z | xargs -0 cat) \
    | sha256sum | cut -d' ' -f1
}

# build_group GROUP MODULE_DIR LDFLAGS BINARY...
build_group() {
  local group="$1" dir="$2" ldflags="$3"; shift 3
  local hash; hash="$(inputs_of "$dir")"
  if up_to_date "$group" "$hash" "$@"; then
    echo "localcluster: $group binaries up to date in $bin_dir"
    return
  fi
  for c in "$@"; do
    local start; start=$(date +%s)
    echo "localcluster: building $c ..."
    (cd "$dir" && CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$bin_dir/$c" "./cmd/$c")
    echo "localcluster: built $c in $(( $(date +%s) - start ))s"
  done
  echo "$hash" > "$bin_dir/.stamp-$group"
}

minor="${k8s_version#v1.}"; minor="${minor%%.*}"
k8s_ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  k8s_ldflags+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  k8s_ldflags+=" -X $pkg.gitTreeState=clean"
done

build_group control-plane "$here" "$k8s_ldflags" etcd kube-apiserver kube-controller-manager kubectl
build_group volcano "$here/volcano" "-s -w" vc-scheduler vc-controller-manager

kwok_hash="$( (go version; echo "$kwok_module") | sha256sum | cut -d' ' -f1)"
if up_to_date kwok "$kwok_hash" kwok; then
  echo "localcluster: kwok up to date in $bin_dir"
else
  start=$(date +%s)
  echo "localcluster: building kwok ($kwok_module) ..."
  CGO_ENABLED=0 GOBIN="$bin_dir" go install -trimpath -ldflags "-s -w" "$kwok_module"
  echo "$kwok_hash" > "$bin_dir/.stamp-kwok"
  echo "localcluster: built kwok in $(( $(date +%s) - start ))s"
fi
