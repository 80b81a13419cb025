#!/usr/bin/env bash
# `flwr run .` as a Flower user would, with the traps of flwr 1.42 handled:
# - runtime dependency installation is disabled (it would download a CUDA torch per run);
# - the local SuperLink is started here, exactly as `flwr run . local` would start it but on
#   free ports of its own (Flower's are fixed: two runs on one machine would share one), and
#   stopped afterwards by its process id (and waited for), also on failure;
# - the run id is read from `flwr run --format json`; the ServerApp's log is then streamed
#   with `flwr log`; `flwr run --stream` would exit 0 even when the ServerApp fails, so the
#   run's real final status is read back with `flwr ls` and this script exits non-zero unless
#   it is finished:completed.
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
bin="$(dirname "$flwr")"
jointcredit="$bin/jointcredit"
# The SuperLink starts its flower-superexec (and that its flwr-serverapp) by name: from here.
export PATH="$bin:$PATH"

"$jointcredit" config resolve --institutions "$nodes" --run-config "$extra" >/dev/null || exit 2

# Two free ports: Flower's local SuperLink (Fleet/Runtime HTTP) and its Control API.
read -r http_port control_port < <("$bin/python" -c '
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))')
export FLWR_LOCAL_SUPERLINK_HTTP_API_PORT="$http_port" FLWR_LOCAL_CONTROL_API_PORT="$control_port"
state="$FLWR_HOME/local-superlink"
mkdir -p "$state"

# Flower's own local SuperLink command (flwr/cli/local_superlink.py), with its pid kept.
"$bin/flower-superlink" --insecure --simulation --isolation subprocess \
  --control-api-address "127.0.0.1:$control_port" --host 127.0.0.1 --port "$http_port" \
  --log-file "$state/superlink.log" --database "$state/state.db" \
  >/dev/null 2>&1 &
superlink=$!

# SIGTERM, and wait for it to be gone (a busy SuperLink takes seconds to shut down); SIGKILL
# after 30 s. Its flower-superexec helper exits with it.
stop_superlink() {
  kill -TERM "$superlink" 2>/dev/null || return 0
  for _ in $(seq 60); do
    kill -0 "$superlink" 2>/dev/null || { wait "$superlink" 2>/dev/null || true; return 0; }
    sleep 0.5
  done
  kill -KILL "$superlink" 2>/dev/null || true
  wait "$superlink" 2>/dev/null || true
}
trap stop_superlink EXIT

for _ in $(seq 150); do
  "$bin/python" -c "import httpx,sys; sys.exit(0 if httpx.get('http://127.0.0.1:$http_port/health', timeout=0.4).is_success else 1)" \
    2>/dev/null && break
  kill -0 "$superlink" 2>/dev/null || { echo "the local SuperLink exited: $state/superlink.log" >&2; exit 1; }
  sleep 0.2
done

answer=$("$flwr" run . local --format json \
  --federation-config "num-supernodes=$nodes client-resources-num-cpus=$RAY_CPUS" \
  --run-config "min-nodes=$nodes out-dir='$out' $extra")
run_id=$(printf '%s' "$answer" | "$bin/python" -c '
import json, sys
answer = json.load(sys.stdin)
print(answer["run-id"] if answer.get("success") and answer.get("run-id") else "")' || true)
if [ -z "$run_id" ]; then
  echo "flwr run did not start a run: $answer" >&2
  exit 1
fi
echo "Started run $run_id"
log="$FLWR_HOME/last-run.log"
"$flwr" log "$run_id" local --stream 2>&1 | tee "$log"
status=$("$flwr" ls local --run-id "$run_id" --format json |
  "$bin/python" -c 'import json,sys; print(json.load(sys.stdin)["runs"][0]["status"])')
echo "run $run_id: $status"
[ "$status" = "finished:completed" ] || exit 1
echo "model: $out/model  metrics: $out/metrics.json"
