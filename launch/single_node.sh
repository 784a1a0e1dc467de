#!/usr/bin/env bash
# One machine: `torchrun --standalone` with one process per visible GPU (NPROC CPU processes when
# there is none). Arguments pass through to the trainer:
#
#   launch/single_node.sh data.root=/data/imagenet run.dir=runs/alexnet
#   launch/single_node.sh --config configs/smoke_cpu.yaml data.root=data/demo/shards
#   CUDA_VISIBLE_DEVICES=0,1 launch/single_node.sh ...      # two of the GPUs
#   DRY_RUN=1 launch/single_node.sh ...                     # print the command, run nothing
#
# Re-running the same command resumes from the newest checkpoint in run.dir.
# Environment: PY (python with the project installed), NPROC (processes; default: visible GPUs, else 1).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python)}

if [ -z "${NPROC:-}" ]; then
  # torch counts what CUDA_VISIBLE_DEVICES leaves visible; nvidia-smi would not.
  NPROC=$("$PY" -c 'import torch; print(torch.cuda.device_count())')
  [ "$NPROC" -gt 0 ] || NPROC=1
fi

# --- the torchrun command line (tests parse it with torchrun's own parser) ---
cmd=("$PY" -m torch.distributed.run
     --standalone --nnodes=1 --nproc-per-node="$NPROC"
     -m trainer "$@")
# ---

if [ -n "${DRY_RUN:-}" ]; then
  printf '%q ' "${cmd[@]}"; echo
  exit 0
fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(( $(nproc) / NPROC > 0 ? $(nproc) / NPROC : 1 ))}
exec "${cmd[@]}"
