#!/usr/bin/env bash
# Install (or --uninstall) a pinned Volcano release into the current cluster.
#
#   manifests/volcano/install.sh [--uninstall] [INSTALLER.yaml]
#
# VOLCANO_VERSION (default v1.15.1) picks the release; INSTALLER.yaml, if given,
# is applied instead of the published installer (for offline clusters).
# VOLCANO_TIMEOUT (seconds, default 300) bounds every wait. Idempotent.
set -euo pipefail

version="${VOLCANO_VERSION:-v1.15.1}"
timeout="${VOLCANO_TIMEOUT:-300}"
url="https://raw.githubusercontent.com/volcano-sh/volcano/${version}/installer/volcano-development.yaml"
uninstall=false
source_file=""
for arg in "$@"; do
  case "$arg" in
    --uninstall) uninstall=true ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) source_file="$arg" ;;
  esac
done

die() { echo "volcano: error: $*" >&2; exit 1; }

command -v kubectl >/dev/null 2>&1 || die "kubectl not found on PATH"
context="$(kubectl config current-context 2>/dev/null)" || die "no current kubectl context (is KUBECONFIG set?)"
echo "volcano: using context '$context'"
kubectl version --request-timeout=10s >/dev/null 2>&1 || die "cannot reach the cluster of context '$context'"

manifest="$source_file"
if [[ -z "$manifest" ]]; then
  manifest="$(mktemp)"
  trap 'rm -f "$manifest"' EXIT
  echo "volcano: fetching $url"
  curl -fsSL --max-time 60 "$url" -o "$manifest" || die "could not download $url (offline? pass the installer file as an argument)"
fi
[[ -f "$manifest" ]] || die "no such file: $manifest"

if $uninstall; then
  echo "volcano: uninstalling $version"
  kubectl delete -f "$manifest" --ignore-not-found --wait=true --timeout="${timeout}s"
  exit 0
fi

echo "volcano: applying $version (server-side)"
# Server-side apply: the Job CRD is too large for the last-applied annotation.
kubectl apply --server-side --force-conflicts -f "$manifest" >/dev/null
echo "volcano: waiting up to ${timeout}s for volcano-system to be Running and Ready"
deadline=$(( $(date +%s) + timeout ))
until kubectl get deployments -n volcano-system -o name 2>/dev/null | grep -q .; do
  (( $(date +%s) < deadline )) || die "no deployments in volcano-system after ${timeout}s"
  sleep 2
done
# rollout status rather than `kubectl wait --for=condition=Ready pods`: the latter
# fails at once on a pod created a moment ago, whose status has no conditions yet.
for deployment in $(kubectl get deployments -n volcano-system -o name); do
  remaining=$(( deadline - $(date +%s) ))
  (( remaining > 0 )) || remaining=1
  kubectl rollout status "$deployment" -n volcano-system --timeout="${remaining}s" >/dev/null \
    || die "$deployment not ready: $(kubectl get pods -n volcano-system --no-headers | awk '$3 != "Running" && $3 != "Completed" {print $1 "=" $3}' | tr '\n' ' ')"
done
# The scheduler answers when it has created the default queue (it does so at start).
until kubectl get queue default >/dev/null 2>&1; do
  (( $(date +%s) < deadline )) || die "the scheduler has not created queue 'default'"
  sleep 2
done
echo "volcano: $version installed; scheduler up (queue 'default' exists)"
