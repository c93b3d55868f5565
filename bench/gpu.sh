#!/usr/bin/env bash
# The GPU figures of README "Performance", in one run on one GPU machine:
#   1. dfm bench train at the base config's shapes on DEV (cuda: burn-cuda; wgpu: Vulkan; both
#      with burn's fusion and autotune, f32)
#   2. the PyTorch twin of the same step, fp32 and bf16 (bench/pytorch/dfm_torch.py)
#   3. dfm bench loader at base shapes (64 px images) per worker count
#   4. a short base-config training run on DEV: samples/s and its loss curve (metrics.jsonl)
#   5. dfm bench infer of that run's model on DEV
#   6. dfm bench train on wgpu (Vulkan) for the same step, when DEV is not wgpu
# Usage: [DEV=cuda|wgpu] [DFM=path/to/dfm] bench/gpu.sh [OUT_DIR]
# DEV=cuda needs a CUDA build (cargo build --release --features cuda); step 2 needs PyTorch with CUDA.
# Each step has its own time limit, so that one that hangs or fails leaves the others' figures.
set -uo pipefail
cd "$(dirname "$0")/.."
DFM=${DFM:-target/release/dfm}
out=${1:-target/bench-gpu}
data=${DATA:-datasets/base-bench}
routes=${ROUTES:-200}
epochs=${EPOCHS:-3}
dev=${DEV:-cuda}
# Extra config overrides for every step (a smoke test of this script on the CPU: DEV=flex
# ROUTES=3 SETS="model.d_model=32 model.layers=1 train.batch_size=16").
read -r -a extra <<< "${SETS:-}"
mkdir -p "$out"
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp}
step() { echo "== $(date +%T) $*"; }
base=(--config configs/base.toml --set "data.path=$data")
for kv in "${extra[@]}"; do base+=(--set "$kv"); done

step gpu
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
step "simulate $routes routes at base shapes"
[ -f "$data/manifest.json" ] || timeout 120 "$DFM" data synth --out "$data" --routes "$routes" --seed 7 | tail -4

step "bench train $dev"
timeout 150 "$DFM" bench train "${base[@]}" --device "$dev" --json "$out/train-$dev.json"
step "pytorch fp32 / bf16"
for dt in fp32 bf16; do
  timeout 60 python3 bench/pytorch/dfm_torch.py --config configs/base.toml --device cuda \
    --dtype "$dt" --json "$out/torch-$dt.json"
done
step "bench loader, base shapes"
timeout 45 "$DFM" bench loader --data "$data" --workers 1,2,4,8,16 --batch-size 256 \
  --image-size 64 --max-samples 6000 --device "$dev" --json "$out/loader.json"
step "train base, $epochs epochs on $routes routes"
rm -rf "$out/run"
timeout 180 "$DFM" train "${base[@]}" --device "$dev" --set "run.dir=$out/run" \
  --set "train.epochs=$epochs" --set train.warmup_steps=100 --set train.log_every=20 \
  --set train.checkpoint_every=10000
run=$out/run
cp "$run/metrics.jsonl" "$out/train-metrics.jsonl"
step "bench infer $dev"
timeout 60 "$DFM" bench infer --model "$run" --device "$dev" \
  --batch-sizes 1,64,512 --iterations 20 --json "$out/infer-$dev.json"
if [ "$dev" != wgpu ]; then
  step "bench train wgpu"
  timeout 150 "$DFM" bench train "${base[@]}" --device wgpu --json "$out/train-wgpu.json"
fi
step done
