#!/usr/bin/env bash
# Regenerates the figures of README.md and docs/ on the code as it stands, each with the command that
# gives it, into one folder (default figures/<commit>/):
#   quickstart.txt   README "Two commands": what `dfm quickstart` prints (a fresh run), and
#                    quickstart-loss.png, quickstart-modes.png: its figures (docs/ keeps them)
#   runs_compare.txt docs/tracking.md: `dfm runs compare` of quickstart seeds 1 and 2
#   real_data.txt    docs/real-data.md: the GeoLife and LMRC tables over seeds 1-3, and
#                    real-data.svg: the same as a chart (docs/ keeps it)
#   transfer.txt     docs/transfer.md: scripts/transfer.py (and docs/transfer.png)
#   pretraining.txt  docs/transfer.md (pretraining): scripts/pretraining.py
#   bench_*.txt      docs/performance.md: the training step, loader, inference and serving
#   pytorch.txt      docs/performance.md: the PyTorch twin (only where `import torch` works)
#   reliability.txt  docs/reliability.md: fuzzing, load and kill -9 at full size (--full only)
#   studies (--studies only): video.txt (docs/video.md, scripts/video.py), clips.png and clips.txt
#                    (docs/video.md's dashcam figure), replicas.txt (docs/training.md,
#                    scripts/replicas.py), geolife_*.txt (docs/real-data.md's GeoLife studies:
#                    overlap, history, ceiling, users, speeds), lmrc_direction.txt
# Usage (from the project root): bash scripts/figures.sh [--full] [--studies] [--no-transfer] [OUT]
# About 30 minutes on a 2-core machine after the build, plus the transfer and pretraining
# reports (about 2 hours; --no-transfer leaves them out), 2 hours more with --full, about 5
# more with --studies.
set -euo pipefail
cd "$(dirname "$0")/.."
full=0
studies=0
transfer=1
while [ $# -gt 0 ]; do
  case "$1" in
    --full) full=1; shift ;;
    --studies) studies=1; shift ;;
    --no-transfer) transfer=0; shift ;;
    *) break ;;
  esac
done
commit=$(git rev-parse --short HEAD)
out=${1:-figures/$commit}
mkdir -p "$out"
cargo build --release
dfm=target/release/dfm
stamp() { echo "# commit $commit, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores: $*"; }

# The quickstart, fresh, in its own folders (the README's block).
work=$(mktemp -d)
{
  stamp "dfm quickstart (fresh world and run)"
  "$dfm" quickstart --set "data.path=$work/world" --set "run.dir=$work/run"
} >"$out/quickstart.txt" 2>&1
# README's quickstart figures: the loss curves and the modes on test decision points.
cp "$work/run/loss.png" "$out/quickstart-loss.png"
"$dfm" eval --model "$work/run" --split test --data "$work/world" --plots "$work/plots" >/dev/null
cp "$work/plots/modes.png" "$out/quickstart-modes.png"

# docs/tracking.md: a second quickstart seed beside the first, compared.
{ stamp "dfm quickstart --set run.seed=2, then dfm runs compare"
  "$dfm" quickstart --set "data.path=$work/world" --set "run.dir=$work/run-seed2" --set run.seed=2 >/dev/null
  "$dfm" runs compare "$work/run" "$work/run-seed2"; } >"$out/runs_compare.txt" 2>&1

# Real data (needs ../shared/data).
{ stamp "python3 scripts/real_data.py"; python3 scripts/real_data.py --out "$work/real" --chart "$out/real-data.svg"; } >"$out/real_data.txt" 2>&1

# Benchmarks on the quickstart's world and bundle.
bundle="$work/run/export"
{ stamp "dfm bench train --config configs/quickstart.toml --device flex"
  "$dfm" bench train --config configs/quickstart.toml --device flex --set "data.path=$work/world"; } >"$out/bench_train.txt" 2>&1
{ stamp "dfm bench loader --workers 1,2"
  "$dfm" bench loader --data "$work/world" --workers 1,2 --max-samples 20000; } >"$out/bench_loader.txt" 2>&1
{ stamp "dfm bench loader at base shapes (200 simulated routes, 64 px, batch 256)"
  "$dfm" data synth --out "$work/base" --routes 200 --seed 7 >/dev/null
  "$dfm" bench loader --data "$work/base" --workers 1,2 --batch-size 256 --image-size 64 \
    --max-samples 20000; rm -rf "$work/base"; } >"$out/bench_loader_base.txt" 2>&1
{ stamp "dfm bench infer --device flex"
  "$dfm" bench infer --model "$bundle" --device flex; } >"$out/bench_infer.txt" 2>&1
{ stamp "dfm bench serve --device flex (3 runs, each beside bench infer at batch 64)"
  for i in 1 2 3; do
    "$dfm" bench infer --model "$bundle" --device flex --batch-sizes 64
    "$dfm" bench serve --model "$bundle" --device flex --concurrency 1,32 --requests 2000
  done; } >"$out/bench_serve.txt" 2>&1
{ stamp "dfm predict --data (test split to Parquet; whole, then as two parts)"
  "$dfm" predict --model "$bundle" --data "$work/world" --split test --out "$work/pq" --device flex
  for i in 0 1; do
    "$dfm" predict --model "$bundle" --data "$work/world" --split test --out "$work/pq2" \
      --shard-index $i --num-shards 2 --device flex
  done; } >"$out/bench_predict.txt" 2>&1
if python3 -c "import torch" 2>/dev/null; then
  { stamp "bench/pytorch/compare.sh"; bash bench/pytorch/compare.sh; } >"$out/pytorch.txt" 2>&1
else
  echo "PyTorch is not installed: the twin's row was not measured" >"$out/pytorch.txt"
fi

# One model across sources, and what pretraining adds (need ../shared/data; matplotlib for the plot).
if [ "$transfer" = 1 ]; then
  { stamp "python3 scripts/transfer.py"; python3 scripts/transfer.py --out "$work/transfer";
    cp "$work/transfer/transfer.png" "$out/" 2>/dev/null || true; } >"$out/transfer.txt" 2>&1
  { stamp "python3 scripts/pretraining.py"; python3 scripts/pretraining.py --out "$work/transfer"; } \
    >"$out/pretraining.txt" 2>&1
fi

# The studies behind docs/video.md, docs/training.md (replicas) and docs/real-data.md's GeoLife
# and LMRC paragraphs (need ../shared/data).
if [ "$studies" = 1 ]; then
  geo="$work/geolife"
  "$dfm" data import geolife --in ../shared/data/geolife --out "$geo" >/dev/null
  "$dfm" data import geolife --in ../shared/data/geolife --out "$geo-h36" --history 36 >/dev/null
  { stamp "python3 scripts/video.py"; python3 scripts/video.py --out "$work/video"; } >"$out/video.txt" 2>&1
  { stamp "python3 scripts/clips.py"; python3 scripts/clips.py --out "$out/clips.png"; } >"$out/clips.txt" 2>&1
  { stamp "python3 scripts/replicas.py"; python3 scripts/replicas.py --out "$work/replicas"; } \
    >"$out/replicas.txt" 2>&1
  { stamp "python3 scripts/geolife_overlap.py"; python3 scripts/geolife_overlap.py --data "$geo"; } \
    >"$out/geolife_overlap.txt" 2>&1
  { stamp "python3 scripts/geolife_history.py"; python3 scripts/geolife_history.py --data "$geo-h36"; } \
    >"$out/geolife_history.txt" 2>&1
  { stamp "python3 scripts/geolife_ceiling.py"; python3 scripts/geolife_ceiling.py --data "$geo"; } \
    >"$out/geolife_ceiling.txt" 2>&1
  { stamp "python3 scripts/geolife_users.py"; python3 scripts/geolife_users.py --out "$work/users"; } \
    >"$out/geolife_users.txt" 2>&1
  { stamp "python3 scripts/geolife_speeds.py"; python3 scripts/geolife_speeds.py "$geo"; } \
    >"$out/geolife_speeds.txt" 2>&1
  { stamp "python3 scripts/lmrc_direction.py"; python3 scripts/lmrc_direction.py; } \
    >"$out/lmrc_direction.txt" 2>&1
fi

if [ "$full" = 1 ]; then
  {
    stamp "fuzzing, load and kill -9 at full size"
    DFM_FUZZ_CASES=1000000 cargo test --release --test fuzz -- --nocapture 2>&1 | grep -E "^fuzz"
    DFM_LOAD_REQUESTS=100000 cargo test --release --test serve load_with -- --nocapture 2>&1 | grep -E "^load"
    DFM_KILL9_TIMES=20 cargo test --release --test train killed_run -- --nocapture 2>&1 | grep -E "^kill"
  } >"$out/reliability.txt"
fi
rm -rf "$work"
echo "figures written to $out"
