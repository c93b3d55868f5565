#!/usr/bin/env python3
"""Regenerates docs/real-data.md's tables: imports the shared samples, trains every seed, evaluates
on held-out data, and prints mean +- spread (sample standard deviation) over seeds.

Usage (from the project root, after `cargo build --release`):
    python3 scripts/real_data.py [--seeds 1,2,3] [--shared ../shared/data] [--out checkpoints/real]
                                 [--folds 0,1,2,3] [--only geolife|fleet|lmrc] [--set KEY=VALUE ...]
                                 [--history FIXES] [--sim-pretrain ROUTES] [--chart docs/real-data.svg]

- GeoLife (`configs/geolife.toml`): users 000-005 train, 006-007 test (the importer's split).
  Trajectory: minFDE of the model's most likely trajectory (K=1), its best of K, its most probable
  mode, constant velocity and the run's ridge regression, on the same windows. `--history 36`
  imports GeoLife with 36 fixes (3 min) of history instead of 12 (fewer windows: a trip must be
  longer); use another --out. `--sim-pretrain 300` starts every GeoLife run from a model trained
  on a simulated world with GeoLife's shapes (3 epochs, same seed); use another --out.
- GPS CSV fleet (`configs/gps-csv.toml`): the eight GeoLife users written as one GPS CSV
  (`scripts/geolife_csv.py`), imported at 10 s; held-out trips of the same people. Same columns.
- LMRC (`configs/lmrc.toml`): the 8 routes, ordered by a hash of the route id, are cut into 4
  folds of 2 (`--test-frac 0.25 --val-frac 0.125 --fold F`: 2 test routes, 1 validation, 5
  training); fold F is trained with seeds F + 1, F + 5 and F + 9 (`--lmrc-seeds`), so every route
  is tested by 3 runs; the rules' rows repeat per seed (they have no seed). Next stop HR@3, accuracy, Kendall tau of the route roll-out, for the
  model and "same zone, then nearest"; Kendall tau of the zone plans (`src/route_plan.rs`) driven
  the way the model finds likelier or by a rule.
`--chart PATH` also draws the tables as an SVG chart (`scripts/chart.py`): minFDE over constant
velocity per source, and LMRC's per-decision scores and roll-out against the zone rule.
Only the standard library is needed. A result whose difference is inside the spread is a tie.
"""
import argparse, json, os, subprocess, sys

import chart
from study import cell, ms, run

# What --chart draws: one bar group per trajectory source, and LMRC's scores.
CHART = {"trajectory": [], "lmrc": []}


def train_seeds(a, config, data, name, seeds, per_seed=lambda s: []):
    """Trains `config` on `data` once per seed (runs already evaluated are kept), with `per_seed(s)`
    extra `--set` arguments; their reports."""
    return [train_run(a, config, data, os.path.join(a.out, f"{name}-s{s}"), s, per_seed(s)) for s in seeds]


def train_run(a, config, data, rd, seed, extra=()):
    """Trains `config` on `data` into `rd` with `seed` (a run already evaluated is kept); its
    report."""
    if not os.path.isfile(os.path.join(rd, "eval_test.json")):
        subprocess.run(["rm", "-rf", rd])
        run(["train", "--config", config, "--device", "flex", "--set", f"run.seed={seed}",
             f"run.dir={rd}", f"data.path={data}"] + extra_sets(a) + list(extra), rd + ".log")
    return json.load(open(os.path.join(rd, "eval_test.json")))


def trajectory_tables(title, reports):
    """minFDE of the model (K=1, most probable mode, best of 6), ridge and constant velocity, then
    by the history's speed band: mean +- spread over the runs."""
    rows = {k: [] for k in ["model K=1", "model top mode", "model best of 6", "ridge", "constant velocity"]}
    bands = {}
    for r in reports:
        t, b = r["trajectory"], r["baselines"]
        rows["model K=1"].append(t["at_1"]["min_fde_m"])
        rows["model top mode"].append(t["top_mode"]["min_fde_m"])
        rows["model best of 6"].append(t["at_k"]["min_fde_m"])
        rows["ridge"].append(b["ridge"]["trajectory"]["at_k"]["min_fde_m"])
        rows["constant velocity"].append(b["constant_velocity"]["trajectory"]["at_k"]["min_fde_m"])
        for band, sl in r["slices"].get("speed", {}).items():
            fde = lambda m, at="at_k": m["trajectory"][at]["min_fde_m"]
            bands.setdefault(band, []).append((sl["samples"], fde(sl["model"], "at_1"), fde(sl["model"]),
                                               fde(sl["baselines"]["constant_velocity"]), fde(sl["baselines"]["ridge"])))
    cv = rows["constant velocity"]
    rel = lambda k: ms([x / c for x, c in zip(rows[k], cv)])
    CHART["trajectory"].append((title.split(",")[0].split(" (")[0], [
        (k, *rel(k)) for k in ["model K=1", "model best of 6", "ridge"]]))
    print(f"\n{title}:\n")
    print("| | minFDE m | / constant velocity | / ridge |")
    print("|---|---|---|---|")
    for k, v in rows.items():
        rcv = [x / c for x, c in zip(v, cv)]
        rr = [x / c for x, c in zip(v, rows["ridge"])]
        print(f"| {k} | {cell(v)} | {cell(rcv, 3)} | {cell(rr, 3)} |")
    print("\nminFDE m by the history's mean speed (`slices.speed`):\n")
    print("| speed | windows | model K=1 | model best of 6 | constant velocity | ridge |")
    print("|---|---|---|---|---|---|")
    for band, v in bands.items():
        col = lambda i: cell([x[i] for x in v], 1)
        print(f"| {band} | {v[0][0]} | {col(1)} | {col(2)} | {col(3)} | {col(4)} |")


def geolife(a, seeds):
    data = os.path.join(a.out, "geolife-data")
    if not os.path.isfile(os.path.join(data, "manifest.json")):
        history = ["--history", str(a.history)] if a.history else []
        run(["data", "import", "geolife", "--in", os.path.join(a.shared, "geolife"), "--out", data, "--force"]
            + history, os.path.join(a.out, "geolife-import.log"))
    per_seed = sim_pretraining(a, seeds) if a.sim_pretrain else (lambda s: [])
    reports = train_seeds(a, "configs/geolife.toml", data, "geolife", seeds, per_seed)
    past = f"{a.history * 5} s" if a.history else "60 s"
    trajectory_tables(f"GeoLife, users 006-007 held out ({past} -> 60 s), seeds {','.join(map(str, seeds))}", reports)


def sim_pretraining(a, seeds):
    """`--sim-pretrain N`: a simulated world of N routes with GeoLife's shapes (5 s fixes, 12 -> 12),
    on which `configs/geolife.toml` trains 3 epochs per seed; each GeoLife run then starts from the
    pretrained run of its seed (`train.init_from`: the whole model, its grid and normalization)."""
    sim = os.path.join(a.out, "sim-data")
    if not os.path.isfile(os.path.join(sim, "manifest.json")):
        run(["data", "synth", "--out", sim, "--routes", str(a.sim_pretrain), "--seed", "1", "--force",
             "--history-len", "12", "--history-step", "5", "--future-len", "12", "--future-step", "5",
             "--imu-len", "12", "--imu-rate", "0.2"], sim + ".log")
    train_seeds(a, "configs/geolife.toml", sim, "sim-pretrain", seeds, lambda s: ["--set", "train.epochs=3"])
    return lambda s: ["--set", f"train.init_from={os.path.join(a.out, f'sim-pretrain-s{s}')}"]


def fleet(a, seeds):
    """All eight GeoLife users as one GPS CSV fleet (`scripts/geolife_csv.py`), imported with the
    gps-csv defaults (10 s fixes, 60 s -> 60 s, trips split by a hash of their id: the test trips
    come from the people the model trained on), trained with `configs/gps-csv.toml`."""
    data, csv = os.path.join(a.out, "fleet-data"), os.path.join(a.out, "fleet.csv")
    if not os.path.isfile(os.path.join(data, "manifest.json")):
        tree = os.path.join(a.shared, "geolife")
        users = ",".join(sorted(d for d in os.listdir(tree) if os.path.isdir(os.path.join(tree, d))))
        r = subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__), "geolife_csv.py"),
                            "--in", tree, "--users", users, "--out", csv])
        if r.returncode != 0:
            sys.exit("geolife_csv.py failed")
        run(["data", "import", "gps-csv", "--in", csv, "--out", data, "--force"], os.path.join(a.out, "fleet-import.log"))
    reports = train_seeds(a, "configs/gps-csv.toml", data, "fleet", seeds)
    trajectory_tables(f"GPS CSV fleet of the 8 GeoLife users, held-out trips (60 s -> 60 s), seeds "
                      f"{','.join(map(str, seeds))}", reports)


def lmrc(a, folds):
    plans = {"model": "model, zone plan driven its likelier way", "nearest_end_first": "zone plan, nearest end first",
             "far_end_first": "zone plan, far end first", "better_end_first": "zone plan, better end (reads the truth)"}
    rule = "same zone, then nearest"
    rows = {"model": [], "model, zone-first roll-out": [], rule: [],
            "same zone, then neighbouring zone, then nearest": [], "nearest stop first": []}
    rows.update({v: [] for v in plans.values()})
    for f in folds:
        data = os.path.join(a.out, f"lmrc-data-f{f}")
        if not os.path.isfile(os.path.join(data, "manifest.json")):
            run(["data", "import", "lmrc", "--in", os.path.join(a.shared, "lmrc-sample"), "--out", data, "--force",
                 "--seed", "1", "--test-frac", "0.25", "--val-frac", "0.125", "--fold", str(f)], data + ".log")
        for seed in lmrc_seeds(f, a.lmrc_seeds):
            lmrc_run(a, f, seed, data, rows, plans, rule)
    seeds = [s for f in folds for s in lmrc_seeds(f, a.lmrc_seeds)]
    print(f"\nLMRC, 2 held-out routes per fold (folds {','.join(map(str, folds))}, seeds "
          f"{','.join(map(str, seeds))}; {sum(x[3] for x in rows['model']) // a.lmrc_seeds} test decisions in all):\n")
    print("| | HR@3 | accuracy | roll-out Kendall tau |")
    print("|---|---|---|---|")
    for k, v in rows.items():
        hr, acc = ("", "") if k in plans.values() else (cell([x[0] for x in v], 3), cell([x[1] for x in v], 3))
        print(f"| {k} | {hr} | {acc} | {cell([x[2] for x in v], 3)} |")
    for i, name in enumerate(["HR@3", "accuracy", "roll-out Kendall"]):
        CHART["lmrc"].append((name, [(k, *ms([x[i] for x in rows[k]])) for k in ["model", rule]]))
    # The same routes on both sides: the difference per run, then its mean and spread.
    d = lambda x, y, i: [p[i] - q[i] for p, q in zip(x, y)]
    m, r_ = rows["model"], rows[rule]
    pl = rows[plans["model"]]
    print(f"| model - {rule}, per run (same routes) | {cell(d(m, r_, 0), 3)} | {cell(d(m, r_, 1), 3)} | "
          f"{cell(d(m, r_, 2), 3)} (greedy); {cell(d(pl, r_, 2), 3)} (zone plan) |")


def lmrc_seeds(fold, n):
    """Fold F trains with seed F + 1, then F + 5, F + 9, ... (every fold and seed its own)."""
    return [fold + 1 + 4 * k for k in range(n)]


def lmrc_run(a, f, seed, data, rows, plans, rule):
    """Trains fold `f` with `seed` (a run already evaluated is kept) and adds its rows."""
    rd = os.path.join(a.out, f"lmrc-f{f}" if seed == f + 1 else f"lmrc-f{f}-s{seed}")
    r = train_run(a, "configs/lmrc.toml", data, rd, seed)
    b = r["baselines"]
    for name, m in [("model", r["next_stop"]), (rule, b["same_zone_nearest_first"]["next_stop"]),
                    ("same zone, then neighbouring zone, then nearest", b["zone_neighbour_first"]["next_stop"]),
                    ("nearest stop first", b["nearest_stop_first"]["next_stop"])]:
        ro = m.get("rollout") or {}
        rows[name].append((m["hr_at_3"], m["accuracy"], ro.get("krc", float("nan")), m["samples"]))
    zf = r["next_stop"].get("rollout_zone_first") or {}
    m = r["next_stop"]
    rows["model, zone-first roll-out"].append((m["hr_at_3"], m["accuracy"], zf.get("krc", float("nan")), 0))
    for key, name in plans.items():
        p = (r.get("route_plans") or {}).get(key) or {}
        rows[name].append((float("nan"), float("nan"), p.get("krc", float("nan")), 0))


def extra_sets(a):
    """`--set KEY=VALUE` overrides passed on to every training run (a variant of the configs)."""
    return [x for kv in a.set for x in ("--set", kv)]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="1,2,3", help="GeoLife seeds")
    ap.add_argument("--folds", default="0,1,2,3", help="LMRC folds")
    ap.add_argument("--lmrc-seeds", type=int, default=3,
                    help="LMRC runs per fold: fold F trains with seeds F + 1, F + 5, F + 9, ...")
    ap.add_argument("--shared", default=os.path.join("..", "shared", "data"))
    ap.add_argument("--out", default=os.path.join("checkpoints", "real"))
    ap.add_argument("--only", choices=["geolife", "fleet", "lmrc"])
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="config override for every training run (repeatable); use another --out")
    ap.add_argument("--history", type=int, help="GeoLife: fixes of history to import (12 by default)")
    ap.add_argument("--sim-pretrain", type=int, metavar="ROUTES",
                    help="GeoLife: start every run from a model trained on a simulated world of ROUTES routes")
    ap.add_argument("--chart", metavar="SVG", help="also draw the results as an SVG chart (docs/real-data.svg)")
    a = ap.parse_args()
    seeds = [int(s) for s in a.seeds.split(",")]
    os.makedirs(a.out, exist_ok=True)
    if a.only in (None, "geolife"):
        geolife(a, seeds)
    if a.only in (None, "fleet"):
        fleet(a, seeds)
    if a.only in (None, "lmrc"):
        lmrc(a, [int(f) for f in a.folds.split(",")])
    if a.chart:
        draw(a, seeds)


def draw(a, seeds):
    """The tables as a chart: trajectory sources as minFDE over constant velocity, LMRC's scores."""
    panels = []
    if CHART["trajectory"]:
        panels.append({"title": "held-out trajectories: minFDE / constant velocity", "ref": 1.0,
                       "ref_label": "constant velocity", "groups": CHART["trajectory"]})
    if CHART["lmrc"]:
        panels.append({"title": "LMRC held-out routes: next stop and roll-out", "groups": CHART["lmrc"]})
    chart.write(a.chart, panels, f"python3 scripts/real_data.py --chart {a.chart}: mean and spread over "
                f"seeds {a.seeds} (LMRC: folds {a.folds}, {a.lmrc_seeds} seeds each)")
    print(f"\nchart written to {a.chart}")


if __name__ == "__main__":
    main()
