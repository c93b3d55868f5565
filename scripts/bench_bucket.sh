#!/usr/bin/env bash
# The loader's rate from an S3 bucket beside the local disk, at the quickstart's shapes
# (docs/performance.md, "Datasets in a bucket"). Needs `moto_server` (pip install 'moto[server]'),
# an S3-compatible server it starts on loopback, and a release build (`cargo build --release`).
#   scripts/bench_bucket.sh [WORKERS]        (default 1,2)
set -euo pipefail
cd "$(dirname "$0")/.."
WORKERS="${1:-1,2}"
DFM=target/release/dfm
TMP="$(mktemp -d)"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
moto_server -H 127.0.0.1 -p "$PORT" >"$TMP/moto.log" 2>&1 &
MOTO=$!
trap 'kill $MOTO 2>/dev/null; rm -rf "$TMP"' EXIT
for _ in $(seq 100); do curl -s "http://127.0.0.1:$PORT" >/dev/null && break; sleep 0.1; done
curl -s -X PUT "http://127.0.0.1:$PORT/bench" >/dev/null
export AWS_ENDPOINT_URL="http://127.0.0.1:$PORT" AWS_ALLOW_HTTP=true AWS_REGION=us-east-1 \
  AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench
# The quickstart's world (configs/quickstart.toml: 240 routes, seed 1), on disk and in the bucket.
$DFM data synth --out "$TMP/quickstart" --routes 240 --seed 1 >/dev/null
$DFM data synth --out s3://bench/quickstart --routes 240 --seed 1 >/dev/null
for data in "$TMP/quickstart" s3://bench/quickstart; do
  echo "== $data"
  $DFM bench loader --data "$data" --workers "$WORKERS" --batch-size 32 --image-size 32 --device flex
done
