#!/usr/bin/env bash
# Forward passes side by side on a many-core machine (flex), and the same knob on wgpu:
#   1. dfm bench infer on flex: one pass at a time on every core, and the server's plan's
#      passes side by side (the "N at once/s" column)
#   2. dfm bench serve on flex at concurrency 32 and 128, --model-workers 1 (one pass at a
#      time, on every core), 0 (the plan: one pass per core, at most 16), 8 and 16
#   3. dfm bench serve on wgpu, --model-workers 1 and 2
#   4. dfm bench train of configs/quickstart.toml on flex with 1, 2, 4, 8 and 16 rayon threads
#      (how far one training step uses the cores)
# Usage: BUNDLE=path/to/quickstart/export [DFM=path/to/dfm] bench/cpu_passes.sh [OUT_DIR]
set -uo pipefail
cd "$(dirname "$0")/.."
DFM=${DFM:-target/release/dfm}
bundle=${BUNDLE:?BUNDLE=path to a quickstart export bundle}
out=${1:-target/bench-passes}
work=${WORK:-/tmp/dfm-passes}
mkdir -p "$out" "$work"
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp}
step() { echo "== $(date +%T) $*"; }

step "machine: $(nproc) cores"
step "simulate: 60 quickstart routes"
timeout 60 "$DFM" data synth --out "$work/qs" --routes 60 --seed 1 | tail -1
step "bench infer flex"
timeout 90 "$DFM" bench infer --model "$bundle" --data "$work/qs" --device flex \
  --batch-sizes 1,16,32,64 --iterations 30 --json "$out/infer-flex.json"
for w in 1 0 8 16; do
  step "bench serve flex --model-workers $w"
  timeout 60 "$DFM" bench serve --model "$bundle" --data "$work/qs" --device flex \
    --concurrency 32,128 --requests 3000 --max-batch 64 --model-workers "$w" \
    --json "$out/serve-flex-w$w.json" | tail -n 3
done
for w in 1 2; do
  step "bench serve wgpu --model-workers $w"
  timeout 100 "$DFM" bench serve --model "$bundle" --data "$work/qs" --device wgpu \
    --concurrency 32,128 --requests 3000 --max-batch 128 --model-workers "$w" \
    --json "$out/serve-wgpu-w$w.json" | tail -n 3
done
for t in 1 2 4 8 16; do
  step "bench train quickstart flex, $t threads"
  RAYON_NUM_THREADS=$t timeout 60 "$DFM" bench train --config configs/quickstart.toml \
    --set "data.path=$work/qs" --device flex --steps 20 --json "$out/train-qs-t$t.json" \
    | grep -E "samples/s"
done
step done
