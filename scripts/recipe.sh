#!/usr/bin/env bash
# Everything a distillation recipe needs on a fresh machine, in order, each stage skipped once done:
# the MPNet teacher (docs/teacher.md), the MiniLM teacher's training cache, MPNet's logits for the
# training phrases, then three seeds of one config side by side (one thread each on the 2 cores).
#
#   scripts/recipe.sh [CONFIG] [PREFIX]      e.g. scripts/recipe.sh configs/ema_2ep.json ema2
#
# writes runs/PREFIX-seed{1,0,2} (default: the recipe's defaults, PREFIX recipe) and a log per stage
# under runs/recipe-log/. Every stage resumes: the teacher from its checkpoint, the logits from their
# shards, each distillation from its phase checkpoints, so after an interrupt the same command goes on.
# Measured on the 2-core machine (docs/teacher.md, docs/log.md): teacher 42 min, cache and logits
# 13 min; the three seeds of the recipe side by side: two exact epochs and calibration ~69 min, then
# half an epoch in poly form ~42 min.
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG=${1:-}
PREFIX=${2:-recipe}
DATA=${HE_INHIBITOR_DATA:-../shared/data/sst2}
MINILM=../shared/models/minilm-l6-sst2
LOG=runs/recipe-log
if [ -n "$CONFIG" ] && [ ! -f "$CONFIG" ]; then
  echo "error: config $CONFIG not found (an experiment is a JSON of overrides, configs/README.md)" >&2
  exit 2
fi
mkdir -p "$LOG" runs/teacher-mpnet
stage() { echo "$(date -u +%FT%TZ) $*" | tee -a "$LOG/stages.txt"; }

if [ ! -f runs/teacher-mpnet/model/metrics.json ]; then
  resume=()
  [ -f runs/teacher-mpnet/checkpoint/state.pt ] && resume=(--resume)
  stage "teacher ${resume[*]}"
  he-inhibitor teacher --base mpnet --data-dir "$DATA" --out runs/teacher-mpnet/model \
    --checkpoint-dir runs/teacher-mpnet/checkpoint --checkpoint-every 100 --eval-every 500 --threads 2 \
    "${resume[@]}" >> runs/teacher-mpnet/train.log 2>&1
fi

stage "MiniLM training cache"
python - "$MINILM" "$DATA" <<'EOF' > "$LOG/cache.log" 2>&1
import sys
from pathlib import Path

import torch

from he_inhibitor.data import load_sst2
from he_inhibitor.teacher_cache import build_cache
from he_inhibitor.train.config import DistillConfig

torch.set_num_threads(2)
x, y = load_sst2(Path(sys.argv[2]), "train")
build_cache(Path(sys.argv[1]), x, y, Path("runs/cache"), max_len=DistillConfig().student.max_len)
EOF

stage "MPNet logits"
he-inhibitor teacher-logits --teacher runs/teacher-mpnet/model --data-dir "$DATA" --cache runs/logits --threads 2 \
  > "$LOG/logits.log" 2>&1

stage "distill ${CONFIG:-(recipe)} as runs/$PREFIX-seed{1,0,2}"
pids=()
for K in 1 0 2; do
  [ -f "runs/$PREFIX-seed$K/metrics.json" ] && continue  # finished
  he-inhibitor distill --teacher "$MINILM" --data-dir "$DATA" --out "runs/$PREFIX-seed$K" \
    ${CONFIG:+--config "$CONFIG"} --set seed=$K > "$LOG/$PREFIX-seed$K.log" 2>&1 &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
stage "done: python scripts/results_table.py runs/$PREFIX-seed1 runs/$PREFIX-seed0 runs/$PREFIX-seed2"
