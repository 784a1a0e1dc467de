#!/usr/bin/env bash
# `make demo`: a synthetic ImageNet-shaped dataset -> shards -> AlexNet trained by a 2-process
# torchrun on the CPU, interrupted once with SIGTERM (as a cluster preempts a job) and resumed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DATA=${DEMO_DATA:-data/demo}
RUN=${DEMO_RUN:-runs/demo}

if [ ! -f "$DATA/shards/_info.json" ]; then
  echo "== 1. a synthetic dataset (real JPEG files, WNID folders) and its shards"
  "$PY" -m data_prep synthetic --out "$DATA/images"
  "$PY" -m data_prep folder --train "$DATA/images/train" --val "$DATA/images/val" \
    --out "$DATA/shards" --shard-size 100
else
  echo "== 1. reusing the shards in $DATA/shards"
fi

rm -rf "$RUN"
export WANDB_SILENT=true  # the demo prints where the offline run is itself
train=("$PY" -m torch.distributed.run --standalone --nproc_per_node=2 -m trainer
       --config configs/smoke_cpu.yaml "data.root=$DATA/shards" "run.dir=$RUN")

echo "== 2. training; interrupted with SIGTERM once the first epoch's checkpoint exists"
mkdir -p "$RUN"
# torchrun prints a traceback when it is signalled itself; keep that in a file, not on the screen.
"${train[@]}" 2> "$RUN/interrupted_run.log" &
pid=$!
until compgen -G "$RUN/checkpoints/step-*.pt" >/dev/null; do
  kill -0 "$pid" 2>/dev/null || { echo "training ended before its first checkpoint" >&2; exit 1; }
  sleep 1
done
kill -TERM "$pid"
status=0; wait "$pid" || status=$?
echo "== torchrun exited with status $status after the ranks saved and stopped (each rank: 75, preempted)"
echo "   checkpoints now: $(ls "$RUN/checkpoints" | tr '\n' ' ')  (its log: $RUN/interrupted_run.log)"

echo "== 3. the same command again: resumes from the newest checkpoint and finishes"
"${train[@]}"

"$PY" -m trainer.plot "$RUN" >/dev/null
echo
echo "== done"
echo "checkpoints:  $RUN/checkpoints/ ($(ls "$RUN/checkpoints" | tr '\n' ' '))"
echo "metrics:      $RUN/metrics.jsonl"
echo "config:       $RUN/config.yaml"
echo "curves:       $RUN/curves.png"
echo "W&B (offline): $(ls -d "$RUN"/wandb/offline-run-* | tr '\n' ' ')"
echo "               upload with: .venv/bin/wandb sync $RUN/wandb/offline-run-*"
"$PY" - "$RUN/metrics.jsonl" <<'PYEOF'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
train = [r for r in rows if "train/loss" in r]
val = [r for r in rows if "val/top1" in r]
print(f"train loss:   first {train[0]['train/loss']:.3f} -> last {train[-1]['train/loss']:.3f}")
print("val top-1:    " + " -> ".join(f"{r['val/top1']:.2f}" for r in val) + "  (chance: 0.10)")
PYEOF
