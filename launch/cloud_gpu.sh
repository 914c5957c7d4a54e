#!/usr/bin/env bash
# Usage: [DRY_RUN=1] launch/cloud_gpu.sh HOSTFILE GPUS_PER_NODE [poisson-tf-train flags...]
#
# Multi-node GPU VMs: one Horovod process per GPU over all hosts of HOSTFILE (one hostname per line), NCCL
# allreduce. Build once per VM image with `scripts/setup.sh --gpu` (tensorflow[and-cuda] + Horovod with NCCL);
# every VM needs the same venv path and passwordless ssh between VMs.
#
# Azure NDv2 (8x V100 32 GB, NVLink, 100 Gb/s InfiniBand EDR) and ND A100 v4 (8x A100 40 GB, NVLink 3, 8x 200 Gb/s
# InfiniBand HDR): use GPUS_PER_NODE=8 and the Azure HPC image (OFED, NCCL). Recommended for ND A100 v4 by Azure:
# NCCL_TOPO_FILE=/opt/microsoft/ndv4-topo.xml, NCCL_IB_PCI_RELAXED_ORDERING=1, CUDA_DEVICE_ORDER=PCI_BUS_ID;
# NCCL_SOCKET_IFNAME=eth0 on both (set NCCL_DEBUG=INFO once to see that NCCL picked InfiniBand). Each process
# pins its GPU by local rank (poisson_tf.distributed.init); megavoxel runs use --global_batch_size equal to the
# number of GPUs (one sample per GPU). The allreduce of the small preset's 1.46 MB of gradients is projected at
# 0.2 ms on one ND A100 v4 VM and 2.3 ms on 64 (benchmarks/bench_scaling_model.py; a model, no GPU measured).
# --resume=auto: after a preemption the same command continues the run from its last checkpoint.
# Eviction (Azure spot): Azure does not signal the processes; it posts a Preempt event in Scheduled Events about
# 30 s before it stops the VM. AZURE_SPOT=1 polls them every 5 s (curl to the instance metadata service,
# AZURE_EVENTS_URL) and sends SIGTERM to horovodrun on that notice: the ranks finish their step, rank 0 writes a
# checkpoint of exactly the steps done, every rank exits 75 (docs/parallel.rst, "Preemption"). Rerun this script
# on the new VM. A SIGTERM to this script (a shutdown, `kill`) takes the same path.
# DRY_RUN=1 prints the exact command instead of running it.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${POISSON_TF_VENV:-$ROOT/.venv}
HOSTFILE=${1:?usage: launch/cloud_gpu.sh HOSTFILE GPUS_PER_NODE [flags...]}
GPUS=${2:?usage: launch/cloud_gpu.sh HOSTFILE GPUS_PER_NODE [flags...]}
shift 2
HOSTS=$(grep -v -E '^\s*(#|$)' "$HOSTFILE" | awk -v g="$GPUS" '{printf "%s%s:%s", sep, $1, g; sep=","}')
NODES=$(grep -c -v -E '^\s*(#|$)' "$HOSTFILE")
export NCCL_SOCKET_IFNAME=${NCCL_SOCKET_IFNAME:-eth0}
export NCCL_IB_PCI_RELAXED_ORDERING=${NCCL_IB_PCI_RELAXED_ORDERING:-1}
export CUDA_DEVICE_ORDER=${CUDA_DEVICE_ORDER:-PCI_BUS_ID}
[ -f /opt/microsoft/ndv4-topo.xml ] && export NCCL_TOPO_FILE=${NCCL_TOPO_FILE:-/opt/microsoft/ndv4-topo.xml}
cmd=("$VENV/bin/horovodrun" -np "$((NODES * GPUS))" -H "$HOSTS"
     "$VENV/bin/python" -m poisson_tf.train --resume=auto "$@")
if [ "${DRY_RUN:-0}" = 1 ]; then
  env | grep -E '^(NCCL_|CUDA_DEVICE_ORDER)' | sort
  printf '%q ' "${cmd[@]}"; echo
else
  if [ "${AZURE_SPOT:-0}" = 1 ]; then  # this shell's pid becomes horovodrun's at the exec below
    EVENTS=${AZURE_EVENTS_URL:-http://169.254.169.254/metadata/scheduledevents?api-version=2020-07-01}
    (launcher=$$
     while kill -0 "$launcher" 2>/dev/null; do
       if curl -fsS -m 2 -H Metadata:true "$EVENTS" 2>/dev/null | grep -q '"EventType": *"Preempt"'; then
         echo "cloud_gpu.sh: Azure eviction notice: SIGTERM to horovodrun (pid $launcher)" >&2
         kill -TERM "$launcher"; exit 0
       fi
       sleep "${AZURE_POLL_SECONDS:-5}"
     done) &
  fi
  exec "${cmd[@]}"
fi
