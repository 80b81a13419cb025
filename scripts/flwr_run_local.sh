#!/usr/bin/env bash
# `flwr run .` as a Flower user would, with the traps of flwr 1.42 handled:
# - runtime dependency installation is disabled (it would download a CUDA torch per run);
# - the detached local SuperLink that `flwr run` starts is stopped afterwards (and waited for),
#   also on failure;
# - `flwr run --stream` exits 0 even when the ServerApp fails, so the run's real final status
#   is read back with `flwr ls` and this script exits non-zero unless it is finished:completed.
# - the run settings are resolved and checked first, as the ServerApp will resolve them for
#   NUM_NODES institutions: a run that could not work is refused (exit 2) before anything starts.
# - Ray: a private instance listening on 127.0.0.1 only; with RAY_ADDRESS=HOST:PORT the
#   institutions run on that existing Ray cluster instead (Flower 1.42's federation config cannot
#   carry an address: the SuperLink's simulation process inherits RAY_ADDRESS and ray.init reads
#   it). RAY_CPUS: CPUs per institution's actor (default: all of this machine's; 1 on a cluster).
# Usage: scripts/flwr_run_local.sh [NUM_NODES] [extra run-config, e.g. "rounds=3 model='mlp'"]
set -euo pipefail
cd "$(dirname "$0")/.."
nodes="${1:-20}"
extra="${2:-}"
export FLWR_HOME="${FLWR_HOME:-$PWD/runs/flwr-home}"
export FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1 RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO=0
mkdir -p "$FLWR_HOME"
# Ray's cluster switch off: its node address is 127.0.0.1 and every server listens there only
# (a private instance, or a cluster on loopback; on, Ray rewrites 127.0.0.1 to this machine's
# network address). Left on for a cluster on other machines.
ray_address="${RAY_ADDRESS:-}"
ray_host="${ray_address%:*}"
case "$ray_address" in
  "") export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 RAY_CPUS="${RAY_CPUS:-$(nproc)}" ;;
  *) case "$ray_host" in
       127.*|localhost|"[::1]") export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 ;;
     esac
     RAY_CPUS="${RAY_CPUS:-1}" ;;
esac
out="${OUT:-$PWD/runs/flwr-run}"
flwr="${FLWR:-$(dirname "$(command -v python)")/flwr}"
[ -x "$flwr" ] || flwr=.venv/bin/flwr
jointcredit="$(dirname "$flwr")/jointcredit"

"$jointcredit" config resolve --institutions "$nodes" --run-config "$extra" >/dev/null || exit 2

# SIGTERM, and wait for it to be gone (a busy SuperLink takes seconds to shut down); SIGKILL
# after 30 s. Its flower-superexec helper exits with it.
stop_superlink() {
  local pattern="flower-superlink.*--database $FLWR_HOME/local-superlink/state.db"
  pkill -TERM -f "$pattern" 2>/dev/null || return 0
  for _ in $(seq 60); do
    pgrep -f "$pattern" >/dev/null || return 0
    sleep 0.5
  done
  pkill -KILL -f "$pattern" 2>/dev/null || true
}
trap stop_superlink EXIT

log="$FLWR_HOME/last-run.log"
"$flwr" run . local --stream \
  --federation-config "num-supernodes=$nodes client-resources-num-cpus=$RAY_CPUS" \
  --run-config "min-nodes=$nodes out-dir='$out' $extra" 2>&1 | tee "$log"
run_id=$(grep -oE "Successfully started run [0-9]+" "$log" | grep -oE "[0-9]+$" || true)
if [ -z "$run_id" ]; then
  echo "flwr run did not start a run" >&2
  exit 1
fi
status=$("$flwr" ls local --run-id "$run_id" --format json |
  python -c 'import json,sys; print(json.load(sys.stdin)["runs"][0]["status"])')
echo "run $run_id: $status"
[ "$status" = "finished:completed" ] || exit 1
echo "model: $out/model  metrics: $out/metrics.json"
