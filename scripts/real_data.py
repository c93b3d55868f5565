#!/usr/bin/env python3
"""Regenerates README's real-data tables: imports the shared samples, trains every seed, evaluates
on held-out data, and prints mean +- spread (sample standard deviation) over seeds.

Usage (from the project root, after `cargo build --release`):
    python3 scripts/real_data.py [--seeds 1,2,3] [--shared ../shared/data] [--out checkpoints/real]
                                 [--only geolife|lmrc] [--set KEY=VALUE ...]

- GeoLife (`configs/geolife.toml`): users 000-005 train, 006-007 test (the importer's split).
  Trajectory: minFDE of the model's most likely trajectory (K=1), its best of K, its most probable
  mode, constant velocity and the run's ridge regression, on the same windows.
- LMRC (`configs/lmrc.toml`): the 8 routes are split by a hash of the route id and the seed
  (`--test-frac 0.25 --val-frac 0.125`: 2 test routes, 1 validation, 5 training), so every seed
  tests on other routes. Next stop HR@3, accuracy, Kendall tau of the route roll-out, for the
  model and "same zone, then nearest".
Only the standard library is needed. A result whose difference is inside the spread is a tie.
"""
import argparse, json, os, subprocess, sys

from study import cell, ms, run


def geolife(a, seeds):
    data = os.path.join(a.out, "geolife-data")
    if not os.path.isfile(os.path.join(data, "manifest.json")):
        run(["data", "import", "geolife", "--in", os.path.join(a.shared, "geolife"), "--out", data, "--force"],
            os.path.join(a.out, "geolife-import.log"))
    rows = {k: [] for k in ["model K=1", "model top mode", "model best of 6", "ridge", "constant velocity"]}
    for s in seeds:
        rd = os.path.join(a.out, f"geolife-s{s}")
        if not os.path.isfile(os.path.join(rd, "eval_test.json")):
            subprocess.run(["rm", "-rf", rd])
            run(["train", "--config", "configs/geolife.toml", "--device", "flex", "--set", f"run.seed={s}",
                 f"run.dir={rd}", f"data.path={data}"] + extra_sets(a), rd + ".log")
        r = json.load(open(os.path.join(rd, "eval_test.json")))
        t, b = r["trajectory"], r["baselines"]
        rows["model K=1"].append(t["at_1"]["min_fde_m"])
        rows["model top mode"].append(t["top_mode"]["min_fde_m"])
        rows["model best of 6"].append(t["at_k"]["min_fde_m"])
        rows["ridge"].append(b["ridge"]["trajectory"]["at_k"]["min_fde_m"])
        rows["constant velocity"].append(b["constant_velocity"]["trajectory"]["at_k"]["min_fde_m"])
    cv = rows["constant velocity"]
    print(f"\nGeoLife, users 006-007 held out (60 s -> 60 s), seeds {','.join(map(str, seeds))}:\n")
    print("| | minFDE m | / constant velocity | / ridge |")
    print("|---|---|---|---|")
    for k, v in rows.items():
        rcv = [x / c for x, c in zip(v, cv)]
        rr = [x / c for x, c in zip(v, rows["ridge"])]
        print(f"| {k} | {cell(v)} | {cell(rcv, 3)} | {cell(rr, 3)} |")


def lmrc(a, seeds):
    rows = {"model": [], "model, zone-first roll-out": [], "same zone, then nearest": [], "nearest stop first": []}
    for s in seeds:
        data = os.path.join(a.out, f"lmrc-data-s{s}")
        if not os.path.isfile(os.path.join(data, "manifest.json")):
            run(["data", "import", "lmrc", "--in", os.path.join(a.shared, "lmrc-sample"), "--out", data, "--force",
                 "--seed", str(s), "--test-frac", "0.25", "--val-frac", "0.125"], data + ".log")
        rd = os.path.join(a.out, f"lmrc-s{s}")
        if not os.path.isfile(os.path.join(rd, "eval_test.json")):
            subprocess.run(["rm", "-rf", rd])
            run(["train", "--config", "configs/lmrc.toml", "--device", "flex", "--set", f"run.seed={s}",
                 f"run.dir={rd}", f"data.path={data}"] + extra_sets(a), rd + ".log")
        r = json.load(open(os.path.join(rd, "eval_test.json")))
        for name, m in [("model", r["next_stop"]),
                        ("same zone, then nearest", r["baselines"]["same_zone_nearest_first"]["next_stop"]),
                        ("nearest stop first", r["baselines"]["nearest_stop_first"]["next_stop"])]:
            ro = m.get("rollout") or {}
            rows[name].append((m["hr_at_3"], m["accuracy"], ro.get("krc", float("nan")), m["samples"]))
        zf = r["next_stop"].get("rollout_zone_first") or {}
        m = r["next_stop"]
        rows["model, zone-first roll-out"].append((m["hr_at_3"], m["accuracy"], zf.get("krc", float("nan")), 0))
    print(f"\nLMRC, 2 held-out routes per seed (seeds {','.join(map(str, seeds))}; "
          f"{sum(x[3] for x in rows['model'])} test decisions in all):\n")
    print("| | HR@3 | accuracy | roll-out Kendall tau |")
    print("|---|---|---|---|")
    for k, v in rows.items():
        print(f"| {k} | {cell([x[0] for x in v], 3)} | {cell([x[1] for x in v], 3)} | {cell([x[2] for x in v], 3)} |")


def extra_sets(a):
    """`--set KEY=VALUE` overrides passed on to every training run (a variant of the configs)."""
    return [x for kv in a.set for x in ("--set", kv)]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--shared", default=os.path.join("..", "shared", "data"))
    ap.add_argument("--out", default=os.path.join("checkpoints", "real"))
    ap.add_argument("--only", choices=["geolife", "lmrc"])
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="config override for every training run (repeatable); use another --out")
    a = ap.parse_args()
    seeds = [int(s) for s in a.seeds.split(",")]
    os.makedirs(a.out, exist_ok=True)
    if a.only in (None, "geolife"):
        geolife(a, seeds)
    if a.only in (None, "lmrc"):
        lmrc(a, seeds)


if __name__ == "__main__":
    main()
