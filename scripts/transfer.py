#!/usr/bin/env python3
"""Regenerates docs/transfer.md's report: does one model trained on several sources carry over to
a source (and a sampling rate) it never saw, and how much of that source's data does fine-tuning
need? Prints the tables (mean +- sample standard deviation over seeds) and writes
OUT/transfer.json and OUT/transfer.png.

Usage (from the project root, after `cargo build --release`; the plot needs matplotlib):
    python3 scripts/transfer.py [--seeds 1,2,3] [--shared ../shared/data] [--out checkpoints/transfer]

Sources (all made from the shared samples and the simulator):
- GeoLife users 000-003 at 5 s (`dfm data import geolife`: users 000-002 train, 003 test);
- a "fleet": GeoLife users 004-007 written as a GPS CSV and imported at 10 s (other people, another
  sampling; trajectories split by a hash: 25% test);
- the simulator (60 routes: 1 s history, 2 s future, rasters, IMU, stops).
Experiments, per seed (`configs/foundation.toml`, the same model everywhere):
- all three sources in one run, evaluated on each source's test split;
- fleet left out: train on GeoLife + simulator, evaluate zero-shot on the fleet's test split; then
  fine-tune that model (whole model, its grid and normalization) on 1%, 10% and 100% of the fleet's
  training routes, and train the same model from scratch on the same subsets;
- GeoLife left out: train on fleet + simulator, evaluate zero-shot on GeoLife's held-out user; then
  the same fine-tuning and from-scratch curve on GeoLife's training routes.
Trajectory error is the minFDE (m) of the most likely trajectory (K=1) and of the best of 6, with
constant velocity on the same windows.
"""
import argparse, json, os, subprocess, sys

import study
from study import ms, run

CONFIG = "configs/foundation.toml"
FRACTIONS = [0.01, 0.1, 1.0]


def manifest(d):
    return json.load(open(os.path.join(d, "manifest.json")))


def prepare(a):
    d = os.path.join(a.out, "data")
    os.makedirs(d, exist_ok=True)
    geo, fleet, sim = (os.path.join(d, n) for n in ["geolife", "fleet", "sim"])
    if not os.path.isfile(os.path.join(geo, "manifest.json")):
        users = os.path.join(d, "geolife-users")
        os.makedirs(users, exist_ok=True)
        for u in ["000", "001", "002", "003"]:
            link = os.path.join(users, u)
            if not os.path.exists(link):
                os.symlink(os.path.abspath(os.path.join(a.shared, "geolife", u)), link)
        run(["data", "import", "geolife", "--in", users, "--out", geo, "--force"], geo + ".log")
    if not os.path.isfile(os.path.join(fleet, "manifest.json")):
        csv = os.path.join(d, "fleet.csv")
        subprocess.run([sys.executable, "scripts/geolife_csv.py", "--in", os.path.join(a.shared, "geolife"),
                        "--users", "004,005,006,007", "--out", csv], check=True)
        run(["data", "import", "gps-csv", "--in", csv, "--out", fleet, "--tz", "Asia/Shanghai",
             "--test-frac", "0.25", "--force"], fleet + ".log")
    if not os.path.isfile(os.path.join(sim, "manifest.json")):
        run(["data", "synth", "--out", sim, "--routes", "60", "--seed", "1", "--force"], sim + ".log")
    return geo, fleet, sim


def sources(*paths):
    return "data.sources=[" + ", ".join(f'{{path = "{p}"}}' for p in paths) + "]"


def train(rd, seed, extra):
    if not os.path.isfile(os.path.join(rd, "eval_test.json")):  # written when a run finishes
        subprocess.run(["rm", "-rf", rd])
        run(["train", "--config", CONFIG, "--device", "flex", "--set", f"run.seed={seed}", "--set",
             f"run.dir={rd}"] + [x for e in extra for x in ("--set", e)], rd + ".log")


def evaluate(rd, data, split="test", allow_shift=False):
    out = os.path.join(rd, f"transfer_eval_{os.path.basename(data)}_{split}.json")
    if not os.path.isfile(out):
        run(["eval", "--model", rd, "--data", data, "--split", split, "--device", "flex", "--json", out]
            + (["--allow-shift"] if allow_shift else []), out + ".log")
    r = json.load(open(out))
    t, cv = r["trajectory"], r["baselines"]["constant_velocity"]["trajectory"]["at_k"]
    return {"k1": t["at_1"]["min_fde_m"], "best_of_6": t["at_k"]["min_fde_m"], "cv": cv["min_fde_m"],
            "samples": r["samples"]}


def budget(data, epochs, floor):
    """Batch size (64, smaller for a tiny subset) and optimizer steps for `epochs` passes over a
    dataset's training split, at least `floor`."""
    n = manifest(data)["splits"]["train"]["samples"]
    batch = 64 if n >= 256 else max(4, n // 4)
    return [f"train.batch_size={batch}", f"train.max_steps={max(floor, epochs * n // batch)}"]


def cell(xs):
    return study.cell(xs, 1)


def cell3(xs):
    return study.cell(xs, 3)


def curve(a, s, name, data, base, res):
    """Fine-tunes `base` (a run that never saw `data`) on 1%, 10% and 100% of `data`'s training
    routes, and trains the same model from scratch on them; scores both on `data`'s test split."""
    prefix = "" if name == "fleet" else f"{name}-"
    for f in FRACTIONS:
        sub = data
        if f < 1.0:
            sub = os.path.join(a.out, "data", f"{name}-{f}-s{s}")
            if not os.path.isfile(os.path.join(sub, "manifest.json")):
                run(["data", "subset", "--in", data, "--out", sub, "--fraction", str(f), "--seed", str(s),
                     "--force"], sub + ".log")
        res["train_samples"][name].setdefault(str(f), []).append(manifest(sub)["splits"]["train"]["samples"])
        ft = os.path.join(a.out, f"{prefix}fine-tuned-{f}-s{s}")
        train(ft, s, [sources(sub), f"train.init_from={base}", "train.lr=5e-4", "train.warmup_steps=20",
                      "train.epochs=100000"] + budget(sub, 2, 150))
        res["fine_tuned"][name][str(f)].append(evaluate(ft, data))
        sc = os.path.join(a.out, f"{prefix}scratch-{f}-s{s}")
        train(sc, s, [sources(sub), "train.epochs=100000"] + budget(sub, 6, 300))
        # A model trained from scratch on a few routes has their statistics (at 1% of the fleet,
        # a 3x smaller position scale than the whole source's): scoring it on the source it is a
        # subset of needs --allow-shift. The zero-shot and fine-tuned models never do.
        res["scratch"][name][str(f)].append(evaluate(sc, data, allow_shift=f < 1.0))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", default="1,2,3")
    p.add_argument("--shared", default="../shared/data")
    p.add_argument("--out", default="checkpoints/transfer")
    a = p.parse_args()
    seeds = [int(s) for s in a.seeds.split(",")]
    geo, fleet, sim = prepare(a)
    targets = ["fleet", "geolife"]
    res = {"seeds": seeds, "all_sources": {"geolife": [], "fleet": [], "sim": []},
           "zero_shot_fleet": [], "zero_shot_geolife": [],
           "train_samples": {t: {} for t in targets},
           "fine_tuned": {t: {str(f): [] for f in FRACTIONS} for t in targets},
           "scratch": {t: {str(f): [] for f in FRACTIONS} for t in targets}}
    for s in seeds:
        every = os.path.join(a.out, f"all-s{s}")
        train(every, s, [sources(geo, fleet, sim)])
        for name, data in [("geolife", geo), ("fleet", fleet), ("sim", sim)]:
            res["all_sources"][name].append(evaluate(every, data))
        nofleet = os.path.join(a.out, f"no-fleet-s{s}")
        train(nofleet, s, [sources(geo, sim)])
        res["zero_shot_fleet"].append(evaluate(nofleet, fleet))
        nogeo = os.path.join(a.out, f"no-geolife-s{s}")
        train(nogeo, s, [sources(fleet, sim)])
        res["zero_shot_geolife"].append(evaluate(nogeo, geo))
        curve(a, s, "fleet", fleet, nofleet, res)
        curve(a, s, "geolife", geo, nogeo, res)
    json.dump(res, open(os.path.join(a.out, "transfer.json"), "w"), indent=1)
    report(res, a.out)


def report(res, out):
    seeds = ",".join(map(str, res["seeds"]))
    col = lambda rows, k: cell([r[k] for r in rows])
    print(f"\nOne model on all three sources, each source's test split, minFDE m, seeds {seeds}:\n")
    print("| source | samples | model K=1 | model best of 6 | constant velocity | K=1 / CV |")
    print("|---|---|---|---|---|---|")
    for name, label in [("geolife", "GeoLife user 003 (5 s)"), ("fleet", "fleet (10 s)"), ("sim", "simulator (1 s / 2 s)")]:
        rows = res["all_sources"][name]
        ratio = [r["k1"] / r["cv"] for r in rows]
        print(f"| {label} | {rows[0]['samples']} | {col(rows, 'k1')} | {col(rows, 'best_of_6')} | "
              f"{col(rows, 'cv')} | {ms(ratio)[0]:.3f} ± {ms(ratio)[1]:.3f} |")
    print(f"\nZero-shot (the source never seen in training), minFDE m, seeds {seeds}:\n")
    print("| left out | samples | model K=1 | model best of 6 | constant velocity | K=1 / CV |")
    print("|---|---|---|---|---|---|")
    for name, key in [("fleet (10 s)", "zero_shot_fleet"), ("GeoLife user 003 (5 s)", "zero_shot_geolife")]:
        rows = res[key]
        ratio = [r["k1"] / r["cv"] for r in rows]
        print(f"| {name} | {rows[0]['samples']} | {col(rows, 'k1')} | {col(rows, 'best_of_6')} | "
              f"{col(rows, 'cv')} | {ms(ratio)[0]:.3f} ± {ms(ratio)[1]:.3f} |")
    for t, label in [("fleet", "the fleet"), ("geolife", "GeoLife")]:
        print(f"\nThe left-out source, {label}: its test split, minFDE m of the most likely trajectory (K=1), "
              f"seeds {seeds}:\n")
        print("| training routes | training samples | fine-tuned from the model without it | from scratch |")
        print("|---|---|---|---|")
        for f in FRACTIONS:
            n = res["train_samples"][t][str(f)]
            print(f"| {f:.0%} | {min(n)}-{max(n)} | {col(res['fine_tuned'][t][str(f)], 'k1')} | "
                  f"{col(res['scratch'][t][str(f)], 'k1')} |")
        ft10 = ms([r["k1"] for r in res["fine_tuned"][t]["0.1"]])[0]
        sc100 = ms([r["k1"] for r in res["scratch"][t]["1.0"]])[0]
        print(f"\n{label}: fine-tuned on 10% / from scratch on 100%: {ft10 / sc100:.3f}")
    plot(res, os.path.join(out, "transfer.png"))


def plot(res, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(no matplotlib: no plot)")
        return
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    xs = [f * 100 for f in FRACTIONS]
    for ax, t, title, zkey in [(axes[0], "fleet", "an unseen 10 s fleet", "zero_shot_fleet"),
                               (axes[1], "geolife", "an unseen GeoLife user (5 s)", "zero_shot_geolife")]:
        for key, label in [("fine_tuned", "fine-tuned from the model without it"), ("scratch", "from scratch")]:
            m = [ms([r["k1"] for r in res[key][t][str(f)]]) for f in FRACTIONS]
            ax.errorbar(xs, [x[0] for x in m], yerr=[x[1] for x in m], marker="o", capsize=3, label=label)
        z = ms([r["k1"] for r in res[zkey]])[0]
        cv = ms([r["cv"] for r in res[zkey]])[0]
        ax.axhline(z, color="gray", linestyle="--", label="zero-shot")
        ax.axhline(cv, color="black", linestyle=":", label="constant velocity")
        ax.set_xscale("log")
        ax.set_xlabel("share of its training routes (%)")
        ax.set_ylabel("minFDE of the most likely trajectory (m)")
        ax.set_title(f"Transfer to {title}")
        ax.legend(fontsize=7, loc="center right")
    fig.suptitle("mean ± sd over seeds", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"plot: {path}")


if __name__ == "__main__":
    main()
