#!/usr/bin/env python3
"""How fast the windows of a trajectory dataset move, per split: the windows whose history's mean
speed is 15 m/s or more (trains, highways), the quantiles of that speed, and how much of it they
keep (the future's mean speed over the history's). docs/real-data.md's GeoLife paragraph quotes it: the
held-out users keep their speed, the training users' few fast windows slow down.

Usage (standard library only): python3 scripts/geolife_speeds.py [DATASET] [--fast 15]
(default DATASET: checkpoints/real/geolife-data, which `scripts/real_data.py` imports)
"""
import argparse, glob, json, math, os, tarfile


def meters(lat):
    return 111320.0 * math.cos(math.radians(lat)), 110540.0


def windows(dataset, split):
    for path in sorted(glob.glob(os.path.join(dataset, f"{split}-*.tar"))):
        with tarfile.open(path) as t:
            for m in t:
                if m.name.endswith(".json"):
                    yield json.load(t.extractfile(m))


def speeds(s, step):
    """(history mean speed, future mean speed) in m/s; None without a future (labels `step`
    seconds apart unless the sample lists its horizons)."""
    h, fut = s["history"], (s.get("target") or {}).get("future") or []
    if len(h) < 2 or not fut or h[-1]["t"] <= h[0]["t"]:
        return None
    kx, ky = meters(h[-1]["lat"])
    d = lambda a, b: math.hypot((b[1] - a[1]) * kx, (b[0] - a[0]) * ky)
    pts = [(f["lat"], f["lon"]) for f in h]
    v_hist = sum(d(a, b) for a, b in zip(pts, pts[1:])) / (h[-1]["t"] - h[0]["t"])
    fpts = [pts[-1]] + [(p[0], p[1]) for p in fut]
    horizon = s["horizons_s"][-1] if s.get("horizons_s") else None
    span = horizon or len(fut) * step
    return v_hist, sum(d(a, b) for a, b in zip(fpts, fpts[1:])) / span


def q(xs, p):
    xs = sorted(xs)
    return xs[round(p * (len(xs) - 1))]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", nargs="?", default=os.path.join("checkpoints", "real", "geolife-data"))
    ap.add_argument("--fast", type=float, default=15.0)
    a = ap.parse_args()
    m = json.load(open(os.path.join(a.dataset, "manifest.json")))
    step = m["spec"]["future_step_s"]
    print(f"| split | windows | {a.fast:g}+ m/s | their speed: median / 75% / 90% / max | future over history speed: 25% / median / 75% |")
    print("|---|---|---|---|---|")
    for split in ["train", "val", "test"]:
        all_, fast = 0, []
        for s in windows(a.dataset, split):
            v = speeds(s, step)
            if v is None:
                continue
            all_ += 1
            if v[0] >= a.fast:
                fast.append(v)
        if not fast:
            print(f"| {split} | {all_} | 0 | | |")
            continue
        hv, r = [x[0] for x in fast], [x[1] / x[0] for x in fast]
        print(f"| {split} | {all_} | {len(fast)} | {q(hv, .5):.1f} / {q(hv, .75):.1f} / {q(hv, .9):.1f} / {max(hv):.1f} "
              f"| {q(r, .25):.2f} / {q(r, .5):.2f} / {q(r, .75):.2f} |")


if __name__ == "__main__":
    main()
