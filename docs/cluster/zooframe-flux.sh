#!/bin/bash
#flux: --nodes=2
#flux: --exclusive
#flux: --time-limit=4h
#flux: --job-name=zooframe
# zooframe in a Flux allocation: a Ray head on the instance's first broker (the driver's node), a Ray worker on
# every node, `zooframe run` as the driver, and the MPI simulator's runs as jobs of this Flux instance (the
# external plugin's "launch": {"launcher": "flux run", ...}), which Flux places on the allocation's cores.
#
#   flux batch zooframe-flux.sh CONFIG [zooframe run options, e.g. --resume]
#
# The allocation's cores are the slots: one MPI rank each. Ray's processes are started with `flux exec`, outside
# Flux's scheduling, so they take none of the slots: a Ray worker only starts the simulator's runs and waits.
set -euo pipefail
config=${1:?usage: flux batch zooframe-flux.sh CONFIG [zooframe run options]}
shift

actors_per_node=${ZOOFRAME_ACTORS_PER_NODE:-1}  # Ray CPUs per node; execution.workers = this x the nodes
port=${RAY_PORT:-6379}

# the same environment on every node: a virtual environment on a shared file system with torch, zooframe[ray],
# the external plugin and the solver
if [ -n "${ZOOFRAME_VENV:-}" ]; then . "$ZOOFRAME_VENV/bin/activate"; fi

# Ray's token authentication: one token per job, readable by this user alone, on the shared file system
export RAY_AUTH_MODE=token
export RAY_AUTH_TOKEN_PATH=${RAY_AUTH_TOKEN_PATH:-$PWD/.ray-token-$FLUX_JOB_ID}
(umask 077 && python -c 'import secrets; print(secrets.token_hex(32))' > "$RAY_AUTH_TOKEN_PATH")

head_ip=$(flux exec --rank=0 hostname --ip-address | awk '{print $1}')
export RAY_ADDRESS=$head_ip:$port

# the head holds no actors (--num-cpus=0): the driver runs beside it
flux exec --rank=0 --noinput \
    ray start --head --block --node-ip-address="$head_ip" --port="$port" --num-cpus=0 \
    --include-dashboard=false --disable-usage-stats &
until (exec 3<>"/dev/tcp/$head_ip/$port") 2>/dev/null; do sleep 1; done
flux exec --noinput \
    ray start --block --address="$RAY_ADDRESS" --num-cpus="$actors_per_node" --disable-usage-stats &

# the config says "execution": {"backend": "ray", "workers": W, "ray": {"address": "auto"}} (auto: RAY_ADDRESS)
# and "launch": {"launcher": "flux run", "ranks": R}; W workers x R ranks must fit in the allocation's cores
# (`flux resource info`), which zooframe checks before any work
zooframe run "$config" --quiet "$@"
