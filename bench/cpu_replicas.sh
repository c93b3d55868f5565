#!/usr/bin/env bash
# Training on many CPU cores with train.replicas: 150 steps of configs/quickstart.toml on flex
# with 1, 2, 4, 8 and 16 replicas (batch 32 split into that many parts), the samples/s each
# run logs at its steps 100 and 150, and its validation loss.
# Usage: [DFM=path/to/dfm] bench/cpu_replicas.sh [OUT_DIR]
set -uo pipefail
cd "$(dirname "$0")/.."
DFM=${DFM:-target/release/dfm}
out=${1:-target/bench-replicas}
work=${WORK:-/tmp/dfm-replicas}
mkdir -p "$out" "$work"
step() { echo "== $(date +%T) $*"; }

step "machine: $(nproc) cores"
step "simulate: 60 quickstart routes"
timeout 60 "$DFM" data synth --out "$work/qs" --routes 60 --seed 1 | tail -1
for r in ${REPLICAS:-1 2 4 8 16}; do
  step "train quickstart, $r replicas"
  timeout 120 "$DFM" train --config configs/quickstart.toml --set "data.path=$work/qs" \
    --set "run.dir=$work/r$r" --set train.max_steps=150 --set train.log_every=50 \
    --set "train.replicas=$r" --device flex | grep -E "^step|validation loss"
  cp "$work/r$r/metrics.jsonl" "$out/metrics-r$r.jsonl"
done
step done
