#!/usr/bin/env bash
# Launch `python -m dtrain.train RECIPE [key=value ...]` on this node with torchrun.
#
# One node:   launch/torchrun.sh resnet50 data.root=/data/imagenet
# N nodes:    run the same line on every node, with the same rendezvous endpoint:
#             NNODES=4 RDZV_ENDPOINT=node0:29400 launch/torchrun.sh resnet200_preact data.root=...
#
# Every setting is an option or an environment variable (option wins). Defaults come, in this
# order, from the option, the variable, the variables a scheduler already sets (Slurm's
# SLURM_*, the Kubeflow training operator's PET_*), then a single-node default:
#   --nnodes N            NNODES          number of nodes, or MIN:MAX for an elastic job    [1]
#   --nproc-per-node P    NPROC_PER_NODE  processes per node       [visible GPUs (CUDA_VISIBLE_DEVICES,
#                                         nvidia-smi), else 1]
#   --rdzv-endpoint H:P   RDZV_ENDPOINT   host:port of the rendezvous store  [needed when nodes > 1]
#   --rdzv-id ID          RDZV_ID         job id shared by all nodes of one run             [dtrain]
#   --max-restarts K      MAX_RESTARTS    restarts of the worker group after a failure      [3]
#   --rdzv-join-timeout S RDZV_JOIN_TIMEOUT  seconds a (re-)rendezvous waits for every node before
#                                         this node gives up (a host that never comes back)   [600]
#   --rdzv-last-call-timeout S RDZV_LAST_CALL_TIMEOUT  seconds an elastic rendezvous waits for more
#                                         nodes once MIN have joined                           [30]
#   --dry-run                             check the config, print the torchrun command instead of running it
#   PYTHON                                interpreter that has dtrain installed           [python3]
#
# After a restart (failure, --max-restarts, Slurm requeue, pod rescheduling) the run continues from
# its newest checkpoint (checkpoint.resume=auto), so every node must see the same run directory.
#
# Preemption: torchrun is exec'd (it becomes this process), and told to forward SIGTERM and
# SIGUSR1 to the training processes, which write a checkpoint at the next step boundary and stop.
# It waits SHUTDOWN_TIMEOUT seconds [120] for them before SIGKILL.
#
# No node rank is needed: the c10d rendezvous numbers the nodes in the order they join.
set -euo pipefail

usage() { sed -n '2,32s/^# \{0,1\}//p' "$0"; }
die() { echo "launch/torchrun.sh: $*" >&2; exit 2; }

nnodes="${NNODES:-${PET_NNODES:-${SLURM_JOB_NUM_NODES:-1}}}"
nproc_per_node="${NPROC_PER_NODE:-${PET_NPROC_PER_NODE:-}}"
rdzv_endpoint="${RDZV_ENDPOINT:-${PET_RDZV_ENDPOINT:-}}"
rdzv_id="${RDZV_ID:-${PET_RDZV_ID:-${SLURM_JOB_ID:-dtrain}}}"
max_restarts="${MAX_RESTARTS:-${PET_MAX_RESTARTS:-3}}"
join_timeout="${RDZV_JOIN_TIMEOUT:-600}"
last_call_timeout="${RDZV_LAST_CALL_TIMEOUT:-30}"
dry_run=0

while [[ $# -gt 0 ]]; do
  case "$1" in
    --nnodes) nnodes="${2:?--nnodes needs a value}"; shift 2 ;;
    --nproc-per-node) nproc_per_node="${2:?--nproc-per-node needs a value}"; shift 2 ;;
    --rdzv-endpoint) rdzv_endpoint="${2:?--rdzv-endpoint needs a value}"; shift 2 ;;
    --rdzv-id) rdzv_id="${2:?--rdzv-id needs a value}"; shift 2 ;;
    --max-restarts) max_restarts="${2:?--max-restarts needs a value}"; shift 2 ;;
    --rdzv-join-timeout) join_timeout="${2:?--rdzv-join-timeout needs a value}"; shift 2 ;;
    --rdzv-last-call-timeout) last_call_timeout="${2:?--rdzv-last-call-timeout needs a value}"; shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; break ;;
    -*) die "unknown option $1 (see launch/torchrun.sh --help)" ;;
    *) break ;;
  esac
done

[[ $# -ge 1 ]] || die "name a recipe, e.g. launch/torchrun.sh resnet50 data.root=/data/imagenet"

if [[ -z "$nproc_per_node" ]]; then
  nproc_per_node=1
  if [[ -n "${CUDA_VISIBLE_DEVICES:-}" && "$CUDA_VISIBLE_DEVICES" != "-1" ]]; then
    # The GPUs a scheduler gave this job (Slurm, the NVIDIA device plugin), not all of the node's.
    IFS=, read -r -a visible <<< "$CUDA_VISIBLE_DEVICES"
    nproc_per_node="${#visible[@]}"
  elif command -v nvidia-smi >/dev/null 2>&1; then
    gpus="$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)"
    if [[ "$gpus" -gt 0 ]]; then nproc_per_node="$gpus"; fi
  fi
fi
[[ "$nproc_per_node" =~ ^[1-9][0-9]*$ ]] || die "NPROC_PER_NODE=$nproc_per_node must be a positive integer"
[[ "$nnodes" =~ ^[1-9][0-9]*(:[1-9][0-9]*)?$ ]] || die "NNODES=$nnodes must be N or MIN:MAX"
[[ "$max_restarts" =~ ^[0-9]+$ ]] || die "MAX_RESTARTS=$max_restarts must be a non-negative integer"
[[ "$join_timeout" =~ ^[1-9][0-9]*$ ]] || die "RDZV_JOIN_TIMEOUT=$join_timeout must be a positive number of seconds"
[[ "$last_call_timeout" =~ ^[1-9][0-9]*$ ]] || die "RDZV_LAST_CALL_TIMEOUT=$last_call_timeout must be a positive number of seconds"

# The recipe and its overrides are checked here, once, before torchrun starts (also with --dry-run):
# a bad key is dtrain's one-line error and exit 2. Under torchrun it would be a failed worker, a
# traceback from the agent, and --max-restarts retries of the same typo.
"${PYTHON:-python3}" -m dtrain.train --check-config "$@" || exit $?

rendezvous=()
if [[ "$nnodes" == "1" && -z "$rdzv_endpoint" ]]; then
  # One node: a private rendezvous on a free port, so two jobs on one machine do not collide.
  rendezvous=(--standalone)
else
  [[ -n "$rdzv_endpoint" ]] || die "NNODES=$nnodes needs RDZV_ENDPOINT=host:port of one node (e.g. node0:29400), the same on every node"
  rendezvous=(--rdzv-backend=c10d "--rdzv-endpoint=$rdzv_endpoint" "--rdzv-id=$rdzv_id"
              "--rdzv-conf=join_timeout=$join_timeout,last_call_timeout=$last_call_timeout")
fi

# Forward SIGUSR1 as well as the default signals to the workers (a torchrun with --signals-to-handle,
# as in torch 2.13, reads these; an older one ignores them, and then only SIGTERM is forwarded).
export PET_SIGNALS_TO_HANDLE="${PET_SIGNALS_TO_HANDLE:-SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1}"
export TORCH_ELASTIC_SHUTDOWN_TIMEOUT="${SHUTDOWN_TIMEOUT:-${TORCH_ELASTIC_SHUTDOWN_TIMEOUT:-120}}"
# One CPU thread per process unless told otherwise: torchrun would set it anyway, with a warning.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
# A host that crashed and restarts must be able to rejoin. With the agent's TCPStore shared with
# the workers (torch's default), an agent publishes MASTER_ADDR/PORT only at its first rendezvous,
# so a restarted agent waits for keys nobody writes and every host fails after 60 s (torch
# issue 111646). Not sharing it, rank 0's worker hosts the workers' store in each round.
export TORCH_DISABLE_SHARE_RDZV_TCP_STORE="${TORCH_DISABLE_SHARE_RDZV_TCP_STORE:-1}"

command=("${PYTHON:-python3}" -m torch.distributed.run
  "--nnodes=$nnodes" "--nproc-per-node=$nproc_per_node" "--max-restarts=$max_restarts"
  "${rendezvous[@]}" -m dtrain.train "$@")

if [[ "$dry_run" == 1 ]]; then
  printf '%q ' "${command[@]}"; echo
  exit 0
fi
exec "${command[@]}"
