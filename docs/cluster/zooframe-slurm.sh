#!/bin/bash
#SBATCH --job-name=zooframe
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=36
#SBATCH --time=04:00:00
# zooframe in a Slurm allocation: a Ray head on the first node (the driver's), a Ray worker on every node,
# `zooframe run` as the driver, and the MPI simulator's runs as job steps packed into the allocation's CPUs
# (the external plugin's "launch": {"launcher": "srun", ...} runs `srun --exact`).
#
#   sbatch zooframe-slurm.sh CONFIG [zooframe run options, e.g. --resume]
#
# The tasks of the allocation (--ntasks-per-node x --nodes) are the slots: one MPI rank each. Ray's processes
# share the CPUs with them (srun --overlap) and take none of the slots: a Ray worker only starts the
# simulator's srun steps and waits for them.
set -euo pipefail
config=${1:?usage: sbatch zooframe-slurm.sh CONFIG [zooframe run options]}
shift

actors_per_node=${ZOOFRAME_ACTORS_PER_NODE:-1}  # Ray CPUs per node; execution.workers = this x the nodes
port=${RAY_PORT:-6379}

# the same environment on every node: a virtual environment on a shared file system with torch, zooframe[ray],
# the external plugin and the solver
if [ -n "${ZOOFRAME_VENV:-}" ]; then . "$ZOOFRAME_VENV/bin/activate"; fi

# Ray's token authentication: one token per job, readable by this user alone, on the shared file system
export RAY_AUTH_MODE=token
export RAY_AUTH_TOKEN_PATH=${RAY_AUTH_TOKEN_PATH:-$PWD/.ray-token-$SLURM_JOB_ID}
(umask 077 && python -c 'import secrets; print(secrets.token_hex(32))' > "$RAY_AUTH_TOKEN_PATH")

mapfile -t nodes < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
head_ip=$(srun --overlap --nodes=1 --ntasks=1 -w "${nodes[0]}" hostname --ip-address | awk '{print $1}')
export RAY_ADDRESS=$head_ip:$port
# when the script ends, Ray's steps end at once (they keep nothing): the job is over then, not after Slurm's
# KillWait; --signal without --full spares this script
trap 'scancel --signal=KILL "$SLURM_JOB_ID" 2>/dev/null || true' EXIT

# the head holds no actors (--num-cpus=0): the driver runs beside it
srun --overlap --nodes=1 --ntasks=1 -w "${nodes[0]}" \
    ray start --head --block --node-ip-address="$head_ip" --port="$port" --num-cpus=0 \
    --include-dashboard=false --disable-usage-stats &
until (exec 3<>"/dev/tcp/$head_ip/$port") 2>/dev/null; do sleep 1; done
for node in "${nodes[@]}"; do
    srun --overlap --nodes=1 --ntasks=1 -w "$node" \
        ray start --block --address="$RAY_ADDRESS" --num-cpus="$actors_per_node" --disable-usage-stats &
done

# the config says "execution": {"backend": "ray", "workers": W, "ray": {"address": "auto"}} (auto: RAY_ADDRESS);
# W workers x launch.ranks must fit in the slots, which zooframe checks before any work
zooframe run "$config" --quiet "$@"
