#!/usr/bin/env bash
# Is this cluster ready for workloads? One readable report; exit 1 with the reason
# when something is off. Checks: kubectl connects, Kubernetes >= 1.20, nodes
# Ready, every kube-system pod Running, Volcano's CRDs (informational).
#
# CLUSTER_CHECK_ALLOW_NO_NODES=1 turns "no nodes" into a skip (control planes
# without kubelets, such as `kube2redis localcluster`).
set -uo pipefail

failures=0
pass() { printf '  ok    %s\n' "$*"; }
fail() { printf '  FAIL  %s\n' "$*"; failures=$((failures + 1)); }
skip() { printf '  skip  %s\n' "$*"; }

command -v kubectl >/dev/null 2>&1 || { echo "cluster-check: error: kubectl not found" >&2; exit 1; }
context="$(kubectl config current-context 2>/dev/null || echo '?')"
echo "cluster-check: context '$context'"

if ! version_json="$(kubectl version -o json --request-timeout=10s 2>/dev/null)"; then
  fail "kubectl cannot reach the API server"
  echo "cluster-check: NOT READY ($failures problem)"
  exit 1
fi
pass "kubectl connects"

minor="$(printf '%s' "$version_json" | sed -n 's/.*"serverVersion".*"minor": *"\([0-9]*\).*/\1/p' | head -1)"
if [[ -z "$minor" ]]; then
  minor="$(printf '%s' "$version_json" | tr -d '\n ' | sed -n 's/.*"serverVersion":{[^}]*"minor":"\([0-9]*\).*/\1/p')"
fi
if [[ -n "$minor" && "$minor" -ge 20 ]]; then
  pass "Kubernetes 1.$minor (>= 1.20)"
else
  fail "Kubernetes 1.${minor:-?} is older than 1.20"
fi

nodes="$(kubectl get nodes --no-headers 2>/dev/null)"
if [[ -z "$nodes" ]]; then
  if [[ "${CLUSTER_CHECK_ALLOW_NO_NODES:-0}" == 1 ]]; then
    skip "no nodes: this control plane has no kubelets, workloads cannot run"
  else
    fail "no nodes: workloads cannot run"
  fi
else
  not_ready="$(printf '%s\n' "$nodes" | awk '$2 !~ /^Ready/ {print $1}')"
  total="$(printf '%s\n' "$nodes" | wc -l)"
  if [[ -z "$not_ready" ]]; then pass "$total node(s) Ready"; else fail "nodes not Ready: $not_ready"; fi
fi

pods="$(kubectl get pods -n kube-system --no-headers 2>/dev/null)"
if [[ -z "$pods" ]]; then
  skip "no pods in kube-system (control plane runs outside the cluster)"
else
  bad="$(printf '%s\n' "$pods" | awk '$3 != "Running" && $3 != "Completed" {print $1 "=" $3}')"
  if [[ -z "$bad" ]]; then pass "all kube-system pods Running"; else fail "kube-system pods not Running: $bad"; fi
fi

if kubectl get crd jobs.batch.volcano.sh >/dev/null 2>&1; then
  pass "Volcano CRDs installed"
else
  skip "Volcano not installed (manifests/volcano/install.sh)"
fi

if (( failures )); then
  echo "cluster-check: NOT READY ($failures problem(s))"
  exit 1
fi
echo "cluster-check: ready for workloads"
