#!/usr/bin/env bash
# Smoke test of Volcano on the current cluster: submit examples/manual/simple-job.yaml
# and check, each with a timeout, that
#   1. the Job is accepted and readable (kubectl get vcjob),
#   2. Volcano made a PodGroup whose minMember equals the Job's minAvailable,
#   3. its pods were created and all bound (gang scheduling: together or not at all),
#   4. the Job reached Completed,
#   5. the pods' logs say hello (skipped on simulated kwok nodes, which have no logs).
# Exit 0 only if every check that can run here held. Steps that need nodes are
# skipped, with a message, on a cluster without any (a bare control plane).
#
# SMOKE_NAMESPACE (default "default"), SMOKE_TIMEOUT (seconds per wait, default 180).
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ns="${SMOKE_NAMESPACE:-default}"
timeout="${SMOKE_TIMEOUT:-180}"
job=simple-job
failures=0
pass() { printf '  ok    %s\n' "$*"; }
fail() { printf '  FAIL  %s\n' "$*"; failures=$((failures + 1)); }
skip() { printf '  skip  %s\n' "$*"; }
die() { echo "smoke-test: error: $*" >&2; exit 1; }

# wait_for DESCRIPTION COMMAND...: poll until COMMAND succeeds, at most $timeout s.
wait_for() {
  local what="$1"; shift
  local deadline=$(( $(date +%s) + timeout ))
  until "$@" >/dev/null 2>&1; do
    if (( $(date +%s) >= deadline )); then
      fail "timed out after ${timeout}s: $what"
      return 1
    fi
    sleep 1
  done
}

command -v kubectl >/dev/null 2>&1 || die "kubectl not found"
echo "smoke-test: context '$(kubectl config current-context 2>/dev/null || echo '?')', namespace '$ns'"
kubectl version --request-timeout=10s >/dev/null 2>&1 || die "cannot reach the cluster"
kubectl get crd jobs.batch.volcano.sh >/dev/null 2>&1 || die "Volcano is not installed (manifests/volcano/install.sh)"

kubectl delete vcjob "$job" -n "$ns" --ignore-not-found --wait=true --timeout=60s >/dev/null
kubectl apply --server-side -n "$ns" -f "$here/simple-job.yaml" >/dev/null || die "kubectl apply failed"
min_available="$(kubectl get vcjob "$job" -n "$ns" -o jsonpath='{.spec.minAvailable}')"
replicas="$(kubectl get vcjob "$job" -n "$ns" -o jsonpath='{.spec.tasks[0].replicas}')"
pass "job submitted (minAvailable $min_available, $replicas replicas)"
kubectl get vcjob "$job" -n "$ns" >/dev/null && pass "kubectl get vcjob shows it"

if [[ -z "$(kubectl get nodes --no-headers 2>/dev/null)" ]]; then
  skip "no nodes (no kubelets, no simulated nodes): PodGroup, scheduling, running and completion need Volcano's controllers and nodes; start them with 'kube2redis localcluster up --volcano'"
  kubectl delete vcjob "$job" -n "$ns" --ignore-not-found >/dev/null
  (( failures )) && exit 1
  echo "smoke-test: passed (steps needing nodes skipped)"
  exit 0
fi

podgroup() {
  kubectl get podgroups -n "$ns" -o jsonpath="{range .items[?(@.metadata.ownerReferences[0].name==\"$job\")]}{.metadata.name}{end}"
}
has_podgroup() { [[ -n "$(podgroup)" ]]; }
if wait_for "PodGroup of $job" has_podgroup; then
  pg="$(podgroup)"
  min_member="$(kubectl get podgroup "$pg" -n "$ns" -o jsonpath='{.spec.minMember}')"
  if [[ "$min_member" == "$min_available" ]]; then
    pass "PodGroup $pg has minMember $min_member = minAvailable"
  else
    fail "PodGroup $pg has minMember $min_member, minAvailable is $min_available"
  fi
fi

pods() { kubectl get pods -n "$ns" -l "volcano.sh/job-name=$job" -o jsonpath='{range .items[*]}{.metadata.name}{" "}{.spec.nodeName}{"\n"}{end}'; }
all_bound() {
  local listed; listed="$(pods)"
  [[ "$(printf '%s' "$listed" | grep -c .)" -ge "$replicas" ]] && \
    ! printf '%s\n' "$listed" | awk 'NF < 2 {bad=1} END {exit !bad}'
}
if wait_for "$replicas pods of $job bound to nodes" all_bound; then
  pass "$replicas pods created and bound together: $(pods | awk '{print $1 "->" $2}' | tr '\n' ' ')"
fi

completed() { [[ "$(kubectl get vcjob "$job" -n "$ns" -o jsonpath='{.status.state.phase}')" == Completed ]]; }
if wait_for "$job to reach Completed" completed; then
  pass "job Completed: $(kubectl get vcjob "$job" -n "$ns" --no-headers)"
fi

first_pod="$(pods | awk 'NR == 1 {print $1}')"
node="$(pods | awk 'NR == 1 {print $2}')"
if [[ -n "$node" && "$(kubectl get node "$node" -o jsonpath='{.metadata.annotations.kwok\.x-k8s\.io/node}')" == fake ]]; then
  skip "logs: $node is a simulated kwok node, its containers do not really run"
elif [[ -n "$first_pod" ]] && kubectl logs -n "$ns" "$first_pod" 2>/dev/null | grep -q "hello from volcano"; then
  pass "logs of $first_pod say hello"
else
  fail "no 'hello from volcano' in the logs of ${first_pod:-any pod of the job}"
fi

if (( failures )); then
  echo "smoke-test: FAILED ($failures check(s))"
  exit 1
fi
echo "smoke-test: passed"
