#!/usr/bin/env bash
# Distil one student per config in configs/ablations/ (same data subset, epochs and seed),
# then print the results table. Usage: scripts/ablations.sh [TEACHER_DIR] [DATA_DIR]
set -euo pipefail
teacher=${1:-../shared/models/minilm-l6-sst2}
data=${2:-../shared/data/sst2}
for cfg in configs/ablations/*.json; do
  name=$(basename "$cfg" .json)
  [ -f "runs/ablations/$name.log" ] && continue  # done or running; delete the log to rerun
  he-inhibitor distill --teacher "$teacher" --data-dir "$data" --out "runs/ablations/$name" --config "$cfg" \
    > "runs/ablations/$name.log" 2>&1 || { echo "$name failed: see runs/ablations/$name.log"; exit 1; }
done
python scripts/results_table.py runs/ablations/*/
