#!/usr/bin/env python3
"""Does a longer history help a learned model at K=1 on GeoLife? Ridge regression and gradient
boosting on the same windows, reading the last 12 fixes (60 s) or all 36 (3 min).

Windows come from a GeoLife import with 36 fixes of history, so both inputs predict exactly the
same futures (users 000-005 train, 006-007 test). Features, in the agent frame (origin at the last
fix, x along the last displacement): positions, steps and step lengths; targets: the future's
offset from constant velocity. Ridge (alpha 10) and scikit-learn's HistGradientBoostingRegressor
(absolute error, 200 iterations, one per output coordinate), as `../shared/tools/window_refs.py`.
Prints minFDE (m) at 60 s.

Usage (from the project root):
    dfm data import geolife --in ../shared/data/geolife --out datasets/geolife-h36 --history 36
    python3 scripts/geolife_history.py [--data datasets/geolife-h36]
Needs numpy, scipy and scikit-learn (it shares the loader of geolife_overlap.py).
"""
import argparse
import numpy as np
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import Ridge

from geolife_overlap import fde, load

EARTH_M = 6371008.8


def last_fix_frame(hist, fut):
    """Meters about each window's last fix, rotated so x is the last displacement."""
    lat0, lon0 = hist[:, -1:, 0], hist[:, -1:, 1]
    c = np.cos(np.radians(lat0))
    xy = lambda a: np.stack([np.radians(a[..., 1] - lon0) * EARTH_M * c, np.radians(a[..., 0] - lat0) * EARTH_M], -1)
    h, f = xy(hist), xy(fut)
    d = h[:, -1] - h[:, -2]
    ang = np.where(np.hypot(d[:, 0], d[:, 1]) > 0.5, np.arctan2(d[:, 1], d[:, 0]), 0.0)
    co, si = np.cos(ang)[:, None], np.sin(ang)[:, None]
    rot = lambda p: np.stack([p[..., 0] * co + p[..., 1] * si, -p[..., 0] * si + p[..., 1] * co], -1)
    return rot(h), rot(f)


def cv_positions(h, n):
    v = h[:, -1] - h[:, -2]
    return h[:, -1:] + np.stack([v * (i + 1) for i in range(n)], 1)


def features(h):
    v = np.diff(h, axis=1)
    return np.concatenate([h.reshape(len(h), -1), v.reshape(len(h), -1), np.linalg.norm(v, axis=2)], 1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="datasets/geolife-h36")
    a = ap.parse_args()
    htr, ftr = last_fix_frame(*load(a.data, "train"))
    hte, fte = last_fix_frame(*load(a.data, "test"))
    n = ftr.shape[1]
    print(f"train {len(htr)} windows, test {len(hte)}; history {htr.shape[1]} fixes, future {n}")
    cv = cv_positions(hte, n)
    print(f"constant velocity {fde(cv, fte):.2f} m\n")
    print("| history | ridge m | gradient boosting m |")
    print("|---|---|---|")
    for fixes in (12, htr.shape[1]):
        xtr, xte = features(htr[:, -fixes:]), features(hte[:, -fixes:])
        ytr = (ftr - cv_positions(htr, n)).reshape(len(ftr), -1)
        ridge = cv + Ridge(alpha=10.0).fit(xtr, ytr).predict(xte).reshape(len(xte), n, 2)
        boost = np.stack([HistGradientBoostingRegressor(max_iter=200, loss="absolute_error", random_state=0)
                          .fit(xtr, ytr[:, j]).predict(xte) for j in range(ytr.shape[1])], 1)
        print(f"| {fixes} fixes ({fixes * 5} s) | {fde(ridge, fte):.2f} | {fde(cv + boost.reshape(len(xte), n, 2), fte):.2f} |")


if __name__ == "__main__":
    main()
