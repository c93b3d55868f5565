#!/usr/bin/env python3
"""How much of the held-out GeoLife users' ground the training users covered, and what a prior
retrieved from the training users' own futures adds to ridge regression at K=1; then the same
retrieval from the held-out user's own past (a personal map, strictly causal).

For every test window (users 006-007), finds the training windows (users 000-005) whose last fix
lies within R m and whose heading differs by less than H degrees, and, where at least 3 exist,
adds their mean ridge residual (their future minus ridge's prediction for them, in the agent
frame) to ridge's prediction, shrunk by n / (n + 10). Prints the share of test windows with such
neighbours and the minFDE (m) at 60 s of constant velocity, ridge and ridge + retrieval.
The second table retrieves instead from the same test user's windows that ended at least an hour
before the window starts (what a deployed model could have stored about that person).

Usage (from the project root, after `dfm data import geolife --in ../shared/data/geolife --out
datasets/geolife`): python3 scripts/geolife_overlap.py [--data datasets/geolife]
Needs numpy, scipy and scikit-learn.
"""
import argparse, glob, json, tarfile
import numpy as np
from scipy.spatial import cKDTree
from sklearn.linear_model import Ridge

EARTH_M = 6378137.0


def load(data, split, keys=None):
    hist, fut = [], []
    for path in sorted(glob.glob(f"{data}/{split}-*.tar")):
        with tarfile.open(path) as t:
            for m in t.getmembers():
                if m.name.endswith(".json"):
                    s = json.loads(t.extractfile(m).read())
                    hist.append([[h["lat"], h["lon"]] for h in s["history"]])
                    fut.append(s["target"]["future"])
                    if keys is not None:
                        keys.append((s["route_id"].split("-")[0], s["t0"]))
    return np.array(hist), np.array(fut)


def shared_origin_frame(hist, fut, origin):
    """Local meters (equirectangular about `origin`), then rotated so x is the heading over the
    last two steps; returns history, future, last position (unrotated) and heading."""
    lat0, lon0 = origin

    def xy(a):
        return np.stack([(a[..., 1] - lon0) * np.pi / 180 * EARTH_M * np.cos(lat0 * np.pi / 180),
                         (a[..., 0] - lat0) * np.pi / 180 * EARTH_M], -1)

    h, f = xy(hist), xy(fut)
    o = h[:, -1:]
    v = h[:, -1] - h[:, -3]
    ang = np.arctan2(v[:, 1], v[:, 0])
    c, s = np.cos(ang)[:, None], np.sin(ang)[:, None]
    rot = lambda p: np.stack([p[..., 0] * c + p[..., 1] * s, -p[..., 0] * s + p[..., 1] * c], -1)
    return rot(h - o), rot(f - o), h[:, -1], ang


def cv_offsets(h, n):
    v = h[:, -1] - h[:, -2]
    return np.stack([v * (i + 1) for i in range(n)], 1)


def fde(pred, fut):
    return float(np.mean(np.linalg.norm(pred[:, -1] - fut[:, -1], axis=-1)))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="datasets/geolife")
    a = ap.parse_args()
    htr, ftr = load(a.data, "train")
    keys = []
    hte, fte = load(a.data, "test", keys)
    origin = (htr[:, -1, 0].mean(), htr[:, -1, 1].mean())
    hA, fA, pA, aA = shared_origin_frame(htr, ftr, origin)
    hB, fB, pB, aB = shared_origin_frame(hte, fte, origin)
    n = fA.shape[1]
    ridge = Ridge(alpha=1.0).fit(hA.reshape(len(hA), -1), (fA - cv_offsets(hA, n)).reshape(len(hA), -1))
    predict = lambda h: cv_offsets(h, n) + ridge.predict(h.reshape(len(h), -1)).reshape(len(h), n, 2)
    rA, rB = predict(hA), predict(hB)
    print(f"train {len(hA)} windows, test {len(hB)}")
    print(f"constant velocity {fde(cv_offsets(hB, n), fB):.2f} m, ridge {fde(rB, fB):.2f} m")
    print("\nretrieved from the training users:")
    retrieval_table(pA, aA, fA - rA, pB, aB, rB, fB, lambda i, js: js)
    user = np.array([k[0] for k in keys])
    t0 = np.array([k[1] for k in keys])
    span = fB.shape[1] * 5.0 + hB.shape[1] * 5.0
    print("\nretrieved from the same test user's own windows that ended an hour or more earlier:")
    retrieval_table(pB, aB, fB - rB, pB, aB, rB, fB,
                    lambda i, js: js[(user[js] == user[i]) & (t0[js] + span + 3600 <= t0[i])])


def retrieval_table(p_from, a_from, resid_from, p_to, a_to, pred_to, fut_to, allowed):
    """ridge + the shrunk mean residual of the windows in `p_from` within each radius and heading
    (`allowed(i, js)` narrows the candidates of window i), where there are at least 3."""
    tree = cKDTree(p_from)
    print("| radius m | heading within | test windows with >= 3 neighbours | ridge + retrieval m |")
    print("|---|---|---|---|")
    for radius in (15, 30, 60):
        for heading in (30, 60):
            pred, hit = pred_to.copy(), 0
            for i, js in enumerate(tree.query_ball_point(p_to, radius)):
                js = allowed(i, np.array(js, dtype=int))
                if len(js):
                    turn = np.abs((a_from[js] - a_to[i] + np.pi) % (2 * np.pi) - np.pi) * 180 / np.pi
                    js = js[turn < heading]
                if len(js) < 3:
                    continue
                hit += 1
                pred[i] = pred_to[i] + len(js) / (len(js) + 10) * resid_from[js].mean(0)
            print(f"| {radius} | {heading}° | {hit / len(p_to):.1%} | {fde(pred, fut_to):.2f} |")


if __name__ == "__main__":
    main()
