#!/usr/bin/env bash
# Times dfm's training step and its PyTorch twin on the same machine, in one run, and prints the
# ratio. Usage: bench/pytorch/compare.sh [CONFIG] [DEVICE]   (DEVICE: flex | wgpu | cuda)
#   bench/pytorch/compare.sh configs/quickstart.toml flex     # CPU, fp32 (PyTorch with 2 threads)
#   bench/pytorch/compare.sh configs/base.toml cuda           # GPU, PyTorch fp32 and bf16
# Needs a release build (cargo build --release) and `pip install torch`.
set -euo pipefail
cd "$(dirname "$0")/../.."
config=${1:-configs/quickstart.toml}
device=${2:-flex}
out=${OUT_DIR:-target/bench}
mkdir -p "$out"
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp}
./target/release/dfm bench train --config "$config" --device "$device" --json "$out/dfm.json"
if [ "$device" = flex ]; then
  python3 bench/pytorch/dfm_torch.py --config "$config" --threads "$(nproc)" --json "$out/torch-fp32.json"
  runs="fp32"
else
  python3 bench/pytorch/dfm_torch.py --config "$config" --device cuda --json "$out/torch-fp32.json"
  python3 bench/pytorch/dfm_torch.py --config "$config" --device cuda --dtype bf16 --json "$out/torch-bf16.json"
  runs="fp32 bf16"
fi
for r in $runs; do
  python3 - "$out/dfm.json" "$out/torch-$r.json" <<'PY'
import json, sys
d, t = (json.load(open(p)) for p in sys.argv[1:3])
print(f"dfm {d['device']}: {d['compute_samples_per_s']:.1f} samples/s (model step), MFU {d['mfu_compute']:.3f}; "
      f"pytorch {t['dtype']}: {t['samples_per_s']:.1f} samples/s, MFU {t['mfu']:.3f}; "
      f"dfm / pytorch = {d['compute_samples_per_s'] / t['samples_per_s']:.2f}")
PY
done
