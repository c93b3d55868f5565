#!/usr/bin/env bash
# scripts/replicas.py's six whole quickstart runs (1 and 2 replicas, seeds 1-3) at once, on a
# host with 12 or more cores (two rayon threads each); then scripts/replicas.py prints the table
# from the run folders. README's table came from this on the H100 machine's 16 cores (8 minutes).
# Usage: [DFM=path/to/dfm] bench/replicas_seeds.sh [OUT=checkpoints/replicas]
set -uo pipefail
cd "$(dirname "$0")/.."
DFM=${DFM:-target/release/dfm}
out=${1:-checkpoints/replicas}
mkdir -p "$out"
echo "machine: $(nproc) cores"
# The quickstart world, simulated as `dfm train` does for a missing dataset (one step, thrown away).
"$DFM" train --config configs/quickstart.toml --device flex --set train.max_steps=1 \
  --set run.dir="$(mktemp -d)/warm" > /dev/null || exit 1
for r in 1 2; do for s in 1 2 3; do
  d="$out/r$r-s$s"
  RAYON_NUM_THREADS=2 "$DFM" train --config configs/quickstart.toml --device flex \
    --set run.seed=$s --set run.dir="$d" --set train.replicas=$r > "$d.log" 2>&1 &
done; done
wait
python3 scripts/replicas.py --out "$out"
