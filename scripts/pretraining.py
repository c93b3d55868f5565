#!/usr/bin/env python3
"""Does self-supervised pretraining help a model transfer to a source it never saw? Regenerates
docs/transfer.md's pretraining table: prints it (mean +- sample standard deviation over seeds) and writes
OUT/pretraining.json.

Usage (from the project root, after `cargo build --release`; shares its data and its from-scratch
and supervised runs with scripts/transfer.py when given the same --out):
    python3 scripts/pretraining.py [--seeds 1,2,3] [--shared ../shared/data] [--out checkpoints/transfer]
                                   [--targets fleet,geolife,lmrc]   (lmrc alone: the next-stop table)

For each left-out source (the 10 s fleet, the GeoLife user group) and seed, the same model
(`configs/foundation.toml`) is trained on the other sources (GeoLife or the fleet, plus the
simulator) four ways, then fine-tuned on 1% and 10% of the left-out source's training routes and
scored on its test split (minFDE of the most likely trajectory):
- from scratch (no pretraining);
- supervised on the other sources (scripts/transfer.py's foundation model; the whole model
  carries over);
- self-supervised on the other sources, masked reconstruction only (`train.objective = "pretrain"`,
  loss weights next = align = 0; the encoders carry over);
- self-supervised with every objective: reconstruction, next-patch prediction and contrastive
  alignment of the history with the other modalities.
Fine-tuning from self-supervised encoders trains fresh heads, so it runs on the from-scratch
schedule; fine-tuning a supervised model runs on transfer.py's shorter one.

And a task the foundation model never trained on real data: the next stop on LMRC routes (the
shared sample's 8 routes in scripts/real_data.py's folds: seed S tests fold S - 1, 2 routes, with
1 validation and 5 training routes). The foundation model trained on all three sources (transfer.py's `all-s<seed>`)
fine-tuned with `configs/finetune-lmrc.toml`, against `configs/lmrc.toml` from scratch and the
rules, on the same held-out routes.
"""
import argparse, json, os, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import transfer as T  # noqa: E402

FRACTIONS = [0.01, 0.1]
VARIANTS = {
    "recon": ["train.loss_weights.next=0", "train.loss_weights.align=0"],
    "all": [],
}


def subset(a, name, data, f, s):
    sub = os.path.join(a.out, "data", f"{name}-{f}-s{s}")
    if not os.path.isfile(os.path.join(sub, "manifest.json")):
        T.run(["data", "subset", "--in", data, "--out", sub, "--fraction", str(f), "--seed", str(s), "--force"],
              sub + ".log")
    return sub


def pretrain(rd, seed, srcs, variant):
    """A self-supervised run; done when its last checkpoint's metrics say so."""
    done = os.path.join(rd, "done")
    if not os.path.isfile(done):
        os.system(f"rm -rf '{rd}'")
        T.run(["train", "--config", T.CONFIG, "--device", "flex", "--set", f"run.seed={seed}", "--set",
               f"run.dir={rd}", "--set", "train.objective=pretrain", "--set", T.sources(*srcs)]
              + [x for e in VARIANTS[variant] for x in ("--set", e)], rd + ".log")
        open(done, "w").close()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", default="1,2,3")
    p.add_argument("--shared", default="../shared/data")
    p.add_argument("--out", default="checkpoints/transfer")
    p.add_argument("--targets", default="fleet,geolife,lmrc",
                   help="left-out sources (one process each runs in parallel), and lmrc: the next-stop comparison")
    a = p.parse_args()
    seeds = [int(s) for s in a.seeds.split(",")]
    geo, fleet, sim = T.prepare(a)
    every = {"fleet": (fleet, [geo, sim]), "geolife": (geo, [fleet, sim])}
    targets = {t: every[t] for t in a.targets.split(",") if t in every}
    arms = ["scratch", "supervised", "ssl-recon", "ssl-all"]
    res = {"seeds": seeds, **{t: {arm: {str(f): [] for f in FRACTIONS} for arm in arms} for t in targets}}
    for s in seeds:
        for t, (data, others) in targets.items():
            prefix = "" if t == "fleet" else f"{t}-"
            sup = os.path.join(a.out, f"no-{t}-s{s}")
            T.train(sup, s, [T.sources(*others)])
            bases = {"supervised": sup}
            for v in VARIANTS:
                rd = os.path.join(a.out, f"ssl-{v}-no-{t}-s{s}")
                pretrain(rd, s, others, v)
                bases[f"ssl-{v}"] = rd
            for f in FRACTIONS:
                sub = subset(a, t, data, f, s)
                sc = os.path.join(a.out, f"{prefix}scratch-{f}-s{s}")
                T.train(sc, s, [T.sources(sub), "train.epochs=100000"] + T.budget(sub, 6, 300))
                res[t]["scratch"][str(f)].append(T.evaluate(sc, data, allow_shift=True))
                ft = os.path.join(a.out, f"{prefix}fine-tuned-{f}-s{s}")
                T.train(ft, s, [T.sources(sub), f"train.init_from={sup}", "train.lr=5e-4", "train.warmup_steps=20",
                                "train.epochs=100000"] + T.budget(sub, 2, 150))
                res[t]["supervised"][str(f)].append(T.evaluate(ft, data))
                for v in VARIANTS:
                    rd = os.path.join(a.out, f"{prefix}ssl-{v}-fine-tuned-{f}-s{s}")
                    T.train(rd, s, [T.sources(sub), f"train.init_from={bases['ssl-' + v]}", "train.epochs=100000"]
                            + T.budget(sub, 6, 300))
                    res[t][f"ssl-{v}"][str(f)].append(T.evaluate(rd, data))
    if "lmrc" in a.targets.split(","):
        res["lmrc"] = [lmrc(a, s, geo, fleet, sim) for s in seeds]
    json.dump(res, open(os.path.join(a.out, "pretraining.json"), "w"), indent=1)
    report(res)


def lmrc(a, s, geo, fleet, sim):
    """One seed of the LMRC next-stop comparison: {arm: (HR@3, accuracy, greedy roll-out Kendall,
    zone-plan roll-out Kendall)}."""
    data = os.path.join(a.out, "data", f"lmrc-f{s - 1}")
    if not os.path.isfile(os.path.join(data, "manifest.json")):
        T.run(["data", "import", "lmrc", "--in", os.path.join(a.shared, "lmrc-sample"), "--out", data, "--force",
               "--seed", "1", "--test-frac", "0.25", "--val-frac", "0.125", "--fold", str(s - 1)], data + ".log")
    foundation = os.path.join(a.out, f"all-s{s}")
    T.train(foundation, s, [T.sources(geo, fleet, sim)])
    runs = {"fine-tuned": ("configs/finetune-lmrc.toml", [f"train.init_from={foundation}"]),
            "scratch": ("configs/lmrc.toml", [])}
    out = {}
    for arm, (config, extra) in runs.items():
        rd = os.path.join(a.out, f"lmrc-{arm}-f{s - 1}")
        if not os.path.isfile(os.path.join(rd, "eval_test.json")):
            os.system(f"rm -rf '{rd}'")
            T.run(["train", "--config", config, "--device", "flex", "--set", f"run.seed={s}", "--set",
                   f"run.dir={rd}", "--set", f"data.path={data}"] + [x for e in extra for x in ("--set", e)],
                  rd + ".log")
        r = json.load(open(os.path.join(rd, "eval_test.json")))
        plan = ((r.get("route_plans") or {}).get("model") or {}).get("krc", float("nan"))
        out[arm] = next_stop(r["next_stop"])[:3] + [plan]
        out["same zone, then nearest"] = next_stop(r["baselines"]["same_zone_nearest_first"]["next_stop"])
        out["nearest stop first"] = next_stop(r["baselines"]["nearest_stop_first"]["next_stop"])
        out["decisions"] = r["next_stop"]["samples"]
    return out


def next_stop(m):
    return [m["hr_at_3"], m["accuracy"], (m.get("rollout") or {}).get("krc", float("nan")), float("nan")]


def report(res):
    seeds = ",".join(map(str, res["seeds"]))
    print(f"\nThe left-out source's test split, minFDE (m) of the most likely trajectory, after fine-tuning on a "
          f"share of its training routes; seeds {seeds}:\n")
    print("| left out | share | from scratch | supervised foundation | self-supervised: reconstruction | "
          "self-supervised: + next patch + alignment |")
    print("|---|---|---|---|---|---|")
    for t, label in [("fleet", "fleet (10 s)"), ("geolife", "GeoLife user 003 (5 s)")]:
        if t not in res:
            continue
        for f in FRACTIONS:
            row = [T.cell([r["k1"] for r in res[t][arm][str(f)]]) for arm in
                   ["scratch", "supervised", "ssl-recon", "ssl-all"]]
            print(f"| {label} | {f:.0%} | " + " | ".join(row) + " |")
    if "lmrc" not in res:
        return
    rows = res["lmrc"]
    print(f"\nLMRC next stop, 2 held-out routes per seed ({sum(r['decisions'] for r in rows)} decisions), "
          f"seeds {seeds}:\n")
    print("| | HR@3 | accuracy | greedy roll-out Kendall tau | zone plan, its likelier way |")
    print("|---|---|---|---|---|")
    for arm, label in [("fine-tuned", "foundation model, fine-tuned"), ("scratch", "configs/lmrc.toml from scratch"),
                       ("same zone, then nearest", "same zone, then nearest"),
                       ("nearest stop first", "nearest stop first")]:
        cells = [T.cell3([r[arm][i] for r in rows]) for i in range(3)]
        plan = [r[arm][3] for r in rows if len(r[arm]) > 3]
        cells.append(T.cell3(plan) if plan and plan[0] == plan[0] else "")
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
