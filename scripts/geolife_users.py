#!/usr/bin/env python3
"""Leave-users-out cross-validation on a GeoLife tree: how a config does on people it never saw,
over several splits of the people rather than one. Use it to choose between configs without
looking at the held-out users of docs/real-data.md's table (the default folds use only its training users).

Usage (from the project root, after `cargo build --release`; standard library only):
    python3 scripts/geolife_users.py [--shared ../shared/data/geolife] [--out checkpoints/users]
        [--folds 004,005/002,003/000,001] [--seeds 1,2] [--jobs 2] [--threads 1]
        [--variant NAME=KEY=VALUE,KEY=VALUE ...] [--set KEY=VALUE ...]

- Each fold is a copy of the tree (links) in which the fold's users are renamed to sort last, so
  the importer's split (the last quarter of the users is `test`) holds them out; the fold's
  other users train. The default folds cut the importer's own training users (all but the last
  quarter) into pairs: docs/real-data.md's held-out users are in none of them.
- Every variant (`baseline` is `configs/geolife.toml` as it is; a variant adds `--set` keys) trains
  every fold with every seed, `--jobs` runs at a time, each with `--threads` threads.
- Prints, per variant, the model's most likely trajectory (K=1) and best of 6 against ridge and
  constant velocity on the same windows: mean ± sample standard deviation over folds x seeds,
  then per fold. A difference inside the spread is a tie.
"""
import argparse, concurrent.futures as cf, json, os, subprocess, sys

from study import DFM, cell


def users_of(tree):
    return sorted(d for d in os.listdir(tree) if os.path.isdir(os.path.join(tree, d)))


def default_folds(users):
    """Pairs of the importer's training users (it holds out the last quarter, at least one)."""
    n_test = max(1, -(-len(users) // 4))
    train = users[: len(users) - n_test]
    return [train[i : i + 2] for i in range(len(train) - 2, -1, -2) if len(train[i : i + 2]) == 2]


def fold_tree(tree, users, held_out, dest):
    """A tree of links: the fold's training users under their names, the held-out ones as `z...`
    (sorting last). Only the importer's training users take part when the fold is inner."""
    n_test = max(1, -(-len(users) // 4))
    pool = users if set(held_out) & set(users[len(users) - n_test :]) else users[: len(users) - n_test]
    os.makedirs(dest, exist_ok=True)
    for u in pool:
        link = os.path.join(dest, ("z" + u) if u in held_out else u)
        if not os.path.islink(link):
            os.symlink(os.path.abspath(os.path.join(tree, u)), link)
    return [u for u in pool if u not in held_out], held_out


def call(args, log, threads):
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    with open(log, "w") as f:
        r = subprocess.run([DFM] + args, stdout=f, stderr=subprocess.STDOUT, env=env)
    if r.returncode != 0:
        sys.exit(f"dfm {' '.join(args)} failed; see {log}")


def import_fold(a, name, held_out, users):
    root = os.path.join(a.out, name)
    data = os.path.join(root, "data")
    train, test = fold_tree(a.shared, users, held_out, os.path.join(root, "tree"))
    if not os.path.isfile(os.path.join(data, "manifest.json")):
        call(["data", "import", "geolife", "--in", os.path.join(root, "tree"), "--out", data, "--force"],
             os.path.join(root, "import.log"), a.threads)
    m = json.load(open(os.path.join(data, "manifest.json")))
    got = sorted(r.split("-")[0] for r in m["splits"]["test"]["routes"])
    if sorted(set(got)) != sorted("z" + u for u in test):
        sys.exit(f"fold {name}: the import held out {sorted(set(got))}, not {test}")
    return name, data, train


def train_one(a, fold, data, variant, sets, seed):
    rd = os.path.join(a.out, fold, f"{variant}-s{seed}")
    if not os.path.isfile(os.path.join(rd, "eval_test.json")):
        subprocess.run(["rm", "-rf", rd])
        call(["train", "--config", a.config, "--device", "flex", "--set", f"run.seed={seed}",
              "--set", f"run.dir={rd}", "--set", f"data.path={data}"]
             + [x for s in a.set + sets for x in ("--set", s)], rd + ".log", a.threads)
    r = json.load(open(os.path.join(rd, "eval_test.json")))
    t, b = r["trajectory"], r["baselines"]
    return {"k1": t["at_1"]["min_fde_m"], "k6": t["at_k"]["min_fde_m"],
            "ridge": b["ridge"]["trajectory"]["at_k"]["min_fde_m"],
            "cv": b["constant_velocity"]["trajectory"]["at_k"]["min_fde_m"], "samples": r["samples"]}


def parse_variant(s):
    name, _, sets = s.partition("=")
    if not name or not sets:
        sys.exit(f"--variant `{s}`: expected NAME=KEY=VALUE[,KEY=VALUE]")
    return name, sets.split(",")


def report(variants, folds, results, seeds):
    print("\n| variant | K=1 / ridge | K=1 / CV | best of 6 / CV | ridge / CV | K=1 / baseline's K=1 (same fold, seed) | runs |")
    print("|---|---|---|---|---|---|---|")
    base = [results[(variants[0], f, s)] for f in folds for s in seeds]
    for v in variants:
        rs = [results[(v, f, s)] for f in folds for s in seeds]
        print(f"| {v} | {cell([r['k1'] / r['ridge'] for r in rs], 3)} | {cell([r['k1'] / r['cv'] for r in rs], 3)} "
              f"| {cell([r['k6'] / r['cv'] for r in rs], 3)} | {cell([r['ridge'] / r['cv'] for r in rs], 3)} "
              f"| {cell([r['k1'] / b['k1'] for r, b in zip(rs, base)], 3)} | {len(rs)} |")
    print("\nper fold (held-out users: windows; K=1 / ridge, mean ± spread over seeds):\n")
    print("| variant | " + " | ".join(f"{f} ({results[(variants[0], f, seeds[0])]['samples']})" for f in folds) + " |")
    print("|---|" + "---|" * len(folds))
    for v in variants:
        print(f"| {v} | " + " | ".join(cell([results[(v, f, s)]["k1"] / results[(v, f, s)]["ridge"] for s in seeds], 3)
                                     for f in folds) + " |")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shared", default=os.path.join("..", "shared", "data", "geolife"))
    p.add_argument("--out", default=os.path.join("checkpoints", "users"))
    p.add_argument("--config", default=os.path.join("configs", "geolife.toml"))
    p.add_argument("--folds", help="held-out users per fold: 004,005/002,003 (default: pairs of the training users)")
    p.add_argument("--seeds", default="1,2")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--variant", action="append", default=[], help="NAME=KEY=VALUE[,KEY=VALUE] (repeatable)")
    p.add_argument("--set", action="append", default=[], help="KEY=VALUE for every run, the baseline too")
    a = p.parse_args()
    users = users_of(a.shared)
    folds = [f.split(",") for f in a.folds.split("/")] if a.folds else default_folds(users)
    if not folds or any(u not in users for f in folds for u in f):
        sys.exit(f"folds {folds}: every held-out user must be one of {users}")
    seeds = [int(s) for s in a.seeds.split(",")]
    variants = dict([("baseline", [])] + [parse_variant(v) for v in a.variant])
    os.makedirs(a.out, exist_ok=True)
    with cf.ThreadPoolExecutor(a.jobs) as ex:
        imported = list(ex.map(lambda f: import_fold(a, "out-" + "-".join(f), f, users), folds))
        for name, _, train in imported:
            print(f"fold {name}: trains on {','.join(train)}", flush=True)
        jobs = {(v, name, s): ex.submit(train_one, a, name, data, v, sets, s)
                for s in seeds for name, data, _ in imported for v, sets in variants.items()}
        results = {k: j.result() for k, j in jobs.items()}
    report(list(variants), [n for n, _, _ in imported], results, seeds)


if __name__ == "__main__":
    main()
