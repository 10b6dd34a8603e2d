#!/usr/bin/env bash
# `make run`: mirror a cluster into Redis on this machine.
#   - a reachable cluster in KUBECONFIG / ~/.kube/config is used; otherwise the
#     local control plane (kube2redis localcluster up) is started;
#   - a local redis-server is started unless KUBE2REDIS_REDIS_URL is set;
#   - the watcher and projector run under supervisord;
#   - examples/manual/simple-job.yaml is applied.
# Ctrl-C, or `make stop` (this script with "stop"), stops everything it started.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv_bin="$repo/.venv/bin"
run_dir="${KUBE2REDIS_RUN_DIR:-$repo/.run}"
mkdir -p "$run_dir"
run_dir="$(cd "$run_dir" && pwd)"
export KUBE2REDIS_RUN_DIR="$run_dir"
export KUBE2REDIS_BIN="$venv_bin/kube2redis"
export KUBE2REDIS_PROJECTORS="${KUBE2REDIS_PROJECTORS:-1}"
export KUBE2REDIS_WATCHER_HEALTH_PORT="${KUBE2REDIS_WATCHER_HEALTH_PORT:-8080}"
export KUBE2REDIS_PROJECTOR_HEALTH_PORT="${KUBE2REDIS_PROJECTOR_HEALTH_PORT:-8081}"
export KUBE2REDIS_LOG_FORMAT="${KUBE2REDIS_LOG_FORMAT:-text}"
state_file="$run_dir/started"
localcluster=("$venv_bin/kube2redis" localcluster)
if [[ -n "${KUBE2REDIS_LOCALCLUSTER_STATE:-}" ]]; then
  localcluster+=(--state-dir "$KUBE2REDIS_LOCALCLUSTER_STATE")
fi

stop_all() {
  if [[ -S "$run_dir/supervisor.sock" ]]; then
    "$venv_bin/supervisorctl" -c "$repo/deploy/supervisord.conf" shutdown >/dev/null 2>&1 || true
    # supervisord exits once its programs have; wait for its pid, bounded.
    if [[ -f "$run_dir/supervisord.pid" ]]; then
      pid="$(cat "$run_dir/supervisord.pid")"
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    fi
  fi
  if [[ -f "$state_file" ]] && grep -q '^localcluster$' "$state_file"; then
    "${localcluster[@]}" down
  fi
  rm -f "$state_file"
  echo "stopped."
}

if [[ "${1:-}" == "stop" ]]; then
  stop_all
  exit 0
fi

: > "$state_file"
free_port() { "$venv_bin/python" -c 'from kube2redis.localcluster.processes import free_port; print(free_port())'; }

# 1. The cluster: the configured one if it answers, else the local control plane.
kubectl_bin="$(command -v kubectl || echo "${XDG_CACHE_HOME:-$HOME/.cache}/kube2redis/localcluster/bin/kubectl")"
if [[ -n "${KUBECONFIG:-}" || -f "$HOME/.kube/config" ]] && \
   "$kubectl_bin" version --request-timeout=5s >/dev/null 2>&1; then
  echo "using the cluster of context: $("$kubectl_bin" config current-context)"
else
  echo "no reachable cluster configured: starting the local control plane"
  eval "$("${localcluster[@]}" up)"
  echo localcluster >> "$state_file"
fi
export KUBECONFIG="${KUBECONFIG:-$HOME/.kube/config}"

# 2. Redis: the one in KUBE2REDIS_REDIS_URL, else our own.
if [[ -n "${KUBE2REDIS_REDIS_URL:-}" ]]; then
  export KUBE2REDIS_START_REDIS=false KUBE2REDIS_REDIS_PORT=0
else
  command -v redis-server >/dev/null || { echo "error: redis-server not found (apt-get install redis-server), or set KUBE2REDIS_REDIS_URL" >&2; exit 1; }
  KUBE2REDIS_REDIS_PORT="${KUBE2REDIS_REDIS_PORT:-$(free_port)}"
  export KUBE2REDIS_START_REDIS=true KUBE2REDIS_REDIS_PORT
  export KUBE2REDIS_REDIS_URL="redis://127.0.0.1:$KUBE2REDIS_REDIS_PORT/0"
fi

trap 'echo; stop_all; exit 0' INT TERM
"$venv_bin/supervisord" -c "$repo/deploy/supervisord.conf"
echo supervisord >> "$state_file"

# 3. Something to mirror.
for _ in $(seq 1 50); do
  "$kubectl_bin" get crd jobs.batch.volcano.sh >/dev/null 2>&1 && break
  sleep 0.2
done
"$kubectl_bin" apply --server-side -n default -f "$repo/examples/manual/simple-job.yaml"

cat <<MSG

kube2redis is running (logs in $run_dir). Try:
  export KUBECONFIG=$KUBECONFIG KUBE2REDIS_REDIS_URL=$KUBE2REDIS_REDIS_URL
  $venv_bin/kube2redis status
  $venv_bin/kube2redis get job default/simple-job
  $venv_bin/kube2redis ls job -o wide; $venv_bin/kube2redis counts job
  $venv_bin/python $repo/examples/jobs_by_queue.py --redis-url $KUBE2REDIS_REDIS_URL
  redis-cli -u $KUBE2REDIS_REDIS_URL HGETALL k8s:job:default:simple-job
  curl -s localhost:$KUBE2REDIS_PROJECTOR_HEALTH_PORT/metrics | grep apply_results
Ctrl-C (or make stop) stops everything.
MSG

# Stay in the foreground until Ctrl-C; leave if supervisord dies.
while kill -0 "$(cat "$run_dir/supervisord.pid" 2>/dev/null || echo 0)" 2>/dev/null; do
  sleep 1 &
  wait $! || true
done
stop_all
