#!/usr/bin/env python3
"""Regenerates docs/video.md's table: what dashcam clips buy on the simulator.

For each seed, trains `configs/video.toml` on the simulated world with clips and evaluates it on
the test split twice: as trained, and with video dropped (`dfm eval --drop video`: the same model,
its video tokens masked, as in `--ablation`). With `--retrain`, also trains the same config with
video dropped from training (`train.drop_modalities=["video"]`), a model that never relied on
video. Prints minFDE at K=6 and K=1 as mean +- spread (sample standard deviation) over seeds: on
the decision points approaching a traffic light (`slices.light_ahead`, by its colour at t0) and
on every test sample; then, seed by seed, how much closer the model is with its video than with
it masked (paired: the same weights).

Usage (from the project root, after `cargo build --release`):
    python3 scripts/video.py [--seeds 1,2,3] [--retrain] [--out checkpoints/video-study]

About 11 minutes per training on 2 CPU cores (3 trainings, 6 with --retrain). Only the standard
library is needed. A difference inside the spread is a tie.
"""
import argparse, json, os, subprocess, sys

from study import cell, run


def fde(part, k):
    # A report has its metrics at the top; a slice under "model".
    t = part["trajectory"] if "trajectory" in part else part["model"]["trajectory"]
    return t[k]["min_fde_m"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--retrain", action="store_true", help="also train without video")
    ap.add_argument("--out", default=os.path.join("checkpoints", "video-study"))
    a = ap.parse_args()
    seeds = [int(s) for s in a.seeds.split(",")]
    os.makedirs(a.out, exist_ok=True)
    data = os.path.join(a.out, "data")
    trainings = [("with video", [])]
    if a.retrain:
        trainings.append(("trained without video", ["--set", 'train.drop_modalities=["video"]']))
    arms = {name: [] for name, _ in trainings}
    arms["video dropped at eval"] = []
    for arm, extra in trainings:
        for s in seeds:
            rd = os.path.join(a.out, f"{arm.replace(' ', '-')}-s{s}")
            report = os.path.join(rd, "eval_test.json")
            if not os.path.isfile(report):
                subprocess.run(["rm", "-rf", rd])
                run(["train", "--config", "configs/video.toml", "--device", "flex", "--set", f"run.seed={s}",
                     "--set", f"run.dir={rd}", "--set", f"data.path={data}"] + extra, rd + ".log")
            arms[arm].append(json.load(open(report)))
            if arm == "with video":
                dropped = os.path.join(rd, "eval_test_without_video.json")
                if not os.path.isfile(dropped):
                    run(["eval", "--model", rd, "--device", "flex", "--drop", "video", "--json", dropped],
                        dropped + ".log")
                arms["video dropped at eval"].append(json.load(open(dropped)))
    first = arms["with video"][0]
    light = first["slices"]["light_ahead"]
    rows = [(f"light ahead, {c} at t0", lambda r, c=c: r["slices"]["light_ahead"][c], light[c]["samples"])
            for c in ("red", "green") if c in light]
    rows.append(("every test sample", lambda r: r, first["samples"]))
    print(f"\nVideo on the simulator (configs/video.toml, test split), seeds {a.seeds}: minFDE m\n")
    names = list(arms)
    print("| decision points | samples | " + " | ".join(f"K=6 {n}" for n in names) + " | "
          + " | ".join(f"K=1 {n}" for n in names) + " |")
    print("|---|---|" + "---|" * (2 * len(names)))
    for name, part, n in rows:
        cells = [cell([fde(part(r), k) for r in arms[arm]]) for k in ("at_k", "at_1") for arm in names]
        print(f"| {name} | {n} | " + " | ".join(cells) + " |")
    print(f"\nWith video minus video dropped at eval, the same model, seed by seed ({a.seeds}): m\n")
    print("| decision points | K=6 | K=1 |")
    print("|---|---|---|")
    for name, part, _ in rows:
        gains = [cell([fde(part(w), k) - fde(part(d), k)
                       for w, d in zip(arms["with video"], arms["video dropped at eval"])])
                 for k in ("at_k", "at_1")]
        print(f"| {name} | " + " | ".join(gains) + " |")


if __name__ == "__main__":
    sys.exit(main())
