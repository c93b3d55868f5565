#!/usr/bin/env bash
# The GPU figures that bench/gpu.sh leaves out, in one run on one GPU machine (wgpu):
#   1. dfm bench infer and dfm bench serve (concurrency 1, 32, 128) of a quickstart bundle on
#      wgpu, and again on flex (the same machine's CPU cores) after step 2
#   2. bf16: the bf16 test binary (tests/wgpu_half.rs) and dfm bench train of configs/base.toml
#      in f32 and in bf16 (refused, with the reason, where the adapter does not compute in bf16)
#   3. video: dfm bench train of configs/video.toml on wgpu and on flex
# Usage: BUNDLE=path/to/export [DFM=path/to/dfm] [HALF_TEST=path/to/wgpu_half-test-binary] \
#          bench/gpu_inference_bf16_video.sh [OUT_DIR]
# Each step has its own time limit, so that one that hangs or fails leaves the others' figures.
set -uo pipefail
cd "$(dirname "$0")/.."
DFM=${DFM:-target/release/dfm}
bundle=${BUNDLE:?BUNDLE=path to a quickstart export bundle}
out=${1:-target/bench-gpu2}
work=${WORK:-/tmp/dfm-gpu2}
mkdir -p "$out" "$work"
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp}
step() { echo "== $(date +%T) $*"; }

step gpu
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
step "simulate: 60 quickstart routes, 60 base routes"
timeout 60 "$DFM" data synth --out "$work/qs" --routes 60 --seed 1 | tail -1
timeout 60 "$DFM" data synth --out "$work/base" --routes 60 --seed 7 | tail -1

infer_serve() {
  step "bench infer $1"
  timeout 90 "$DFM" bench infer --model "$bundle" --data "$work/qs" --device "$1" \
    --batch-sizes 1,8,64,256 --iterations 30 --json "$out/infer-$1.json"
  step "bench serve $1"
  timeout 100 "$DFM" bench serve --model "$bundle" --data "$work/qs" --device "$1" \
    --concurrency 1,32,128 --requests 2000 --max-batch 128 --json "$out/serve-$1.json"
}
infer_serve wgpu

if [ -n "${HALF_TEST:-}" ]; then
  step "bf16 test (tests/wgpu_half.rs)"
  CI=true timeout 90 "$HALF_TEST" --nocapture
fi
for prec in f32 bf16; do
  step "bench train base $prec wgpu"
  timeout 100 "$DFM" bench train --config configs/base.toml --set "data.path=$work/base" \
    --set "train.precision=\"$prec\"" --device wgpu --steps 20 --json "$out/train-base-$prec.json"
done

infer_serve flex

step "simulate: 40 video routes"
timeout 90 "$DFM" data synth --out "$work/video" --routes 40 --seed 1 --video | tail -1
for dev in wgpu flex; do
  step "bench train video $dev"
  timeout 80 "$DFM" bench train --config configs/video.toml --set "data.path=$work/video" \
    --device "$dev" --steps 30 --json "$out/train-video-$dev.json"
done
step done
