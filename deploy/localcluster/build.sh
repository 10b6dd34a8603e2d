#!/usr/bin/env bash
# Builds the local control plane's binaries from Go modules into $BIN_DIR.
# Idempotent: a stamp of the inputs (go.mod, go.sum, mains, Go version) skips
# the build when nothing changed; the Go build cache makes a rebuild cheap.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
k8s_version="v1.35.4"
bin_dir="${KUBE2REDIS_LOCALCLUSTER_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/kube2redis/localcluster/bin}"
components=(etcd kube-apiserver kube-controller-manager kubectl)

if ! command -v go >/dev/null 2>&1; then
  echo "error: no Go toolchain on PATH; install Go >= 1.25, or point the tests at a cluster with KUBE2REDIS_TEST_KUBECONFIG, or run them where Docker is available" >&2
  exit 2
fi

stamp_input="$( (go version; cat "$here/go.mod" "$here/go.sum"; find "$here/cmd" -name '*.go' -print0 | sort -z | xargs -0 cat) | sha256sum | cut -d' ' -f1)"
stamp_file="$bin_dir/.stamp"
if [[ -f "$stamp_file" && "$(cat "$stamp_file")" == "$stamp_input" ]]; then
  all_present=1
  for c in "${components[@]}"; do [[ -x "$bin_dir/$c" ]] || all_present=0; done
  if [[ $all_present == 1 ]]; then
    echo "localcluster: binaries up to date in $bin_dir"
    exit 0
  fi
fi

mkdir -p "$bin_dir"
minor="${k8s_version#v1.}"; minor="${minor%%.*}"
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean"
done

cd "$here"
for c in "${components[@]}"; do
  start=$(date +%s)
  echo "localcluster: building $c ($k8s_version modules) ..."
  CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$bin_dir/$c" "./cmd/$c"
  echo "localcluster: built $c in $(( $(date +%s) - start ))s"
done
echo "$stamp_input" > "$stamp_file"
