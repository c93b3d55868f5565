#!/usr/bin/env bash
# WGSL against SPIR-V on one GPU (issue "GPU speed"): dfm bench train at the base config's
# shapes, f32 and bf16, with the default build (kernels compiled to WGSL) and the `vulkan` build
# (SPIR-V: cooperative-matrix matmul and the half types the driver reports); then f32 with
# the fused AdamW (train.optimizer = "adamw_fused") against burn's per-tensor AdamW.
# Build both first (the second keeps its own target folder, so neither rebuilds the other):
#   cargo build --release && cargo build --release --features vulkan --target-dir target-vk
# Usage: [WGSL=target/release/dfm] [SPIRV=target-vk/release/dfm] bench/gpu_spirv.sh [OUT_DIR]
# A SPIR-V build refuses software adapters (Mesa's lavapipe crashes on its kernels): run this
# where Vulkan reaches a real GPU. Each step has its own time limit.
set -uo pipefail
cd "$(dirname "$0")/.."
wgsl=${WGSL:-target/release/dfm}
spirv=${SPIRV:-target-vk/release/dfm}
out=${1:-target/bench-spirv}
data=${DATA:-datasets/base-bench}
mkdir -p "$out"
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp}
step() { echo "== $(date +%T) $*"; }
base=(--config configs/base.toml --set "data.path=$data" --device wgpu)

step gpu
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || true
[ -f "$data/manifest.json" ] || timeout 120 "$wgsl" data synth --out "$data" --routes 200 --seed 7 | tail -2
for build in wgsl spirv; do
  bin=$wgsl; [ "$build" = spirv ] && bin=$spirv
  for precision in f32 bf16; do
    step "bench train, $build build, $precision"
    timeout 150 "$bin" bench train "${base[@]}" --set "train.precision=\"$precision\"" \
      --json "$out/train-$build-$precision.json"
  done
done
for build in wgsl spirv; do
  bin=$wgsl; [ "$build" = spirv ] && bin=$spirv
  step "bench train, $build build, f32, fused AdamW"
  timeout 150 "$bin" bench train "${base[@]}" --set train.optimizer=adamw_fused \
    --json "$out/train-$build-f32-fused.json"
done
step done
