"""Does `train.replicas = 2` train as well as one replica? configs/quickstart.toml on the
quickstart world (datasets/quickstart, as `dfm quickstart` simulates it), seeds 1-3, one and
two replicas; the test split's minFDE (best of 6, the model's point and its most likely mode),
the best validation loss and the training rate, mean ± sample standard deviation over seeds.

Usage: python3 scripts/replicas.py [--retrain] [--out checkpoints/replicas]
(runs that already hold eval_test.json are read, not retrained, unless --retrain)."""
import argparse, json, os, statistics, sys

sys.path.insert(0, os.path.dirname(__file__))
from study import run, cell

SEEDS = [1, 2, 3]
REPLICAS = [1, 2]


def train(out, r, seed, retrain):
    d = os.path.join(out, f"r{r}-s{seed}")
    if retrain or not os.path.exists(os.path.join(d, "eval_test.json")):
        run(["train", "--config", "configs/quickstart.toml", "--device", "flex",
             "--set", f"run.seed={seed}", "--set", f"run.dir={d}",
             "--set", f"train.replicas={r}"], d + ".log")
    return d


def figures(d):
    e = json.load(open(os.path.join(d, "eval_test.json")))["trajectory"]
    rows = [json.loads(l) for l in open(os.path.join(d, "metrics.jsonl"))]
    val = [r["val_loss"] for r in rows if "val_loss" in r]
    rate = [r["samples_per_s"] for r in rows if "samples_per_s" in r]
    return {
        "K=6": e["at_k"]["min_fde_m"],
        "K=1": e["at_1"]["min_fde_m"],
        "top mode": e["top_mode"]["min_fde_m"],
        "best val loss": min(val),
        "samples/s": statistics.median(rate),
    }


def main():
    a = argparse.ArgumentParser()
    a.add_argument("--retrain", action="store_true")
    a.add_argument("--out", default=os.path.join("checkpoints", "replicas"))
    o = a.parse_args()
    table = {r: [figures(train(o.out, r, s, o.retrain)) for s in SEEDS] for r in REPLICAS}
    keys = list(table[1][0].keys())
    print(f"quickstart, seeds {SEEDS}, test split (minFDE m), mean ± sd")
    print("| replicas | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for r in REPLICAS:
        cells = [cell([f[k] for f in table[r]], 0 if k == "samples/s" else 3 if "loss" in k else 2)
                 for k in keys]
        print(f"| {r} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
