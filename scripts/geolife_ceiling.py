#!/usr/bin/env python3
"""How far ahead of ridge can any learner get on the held-out GeoLife users, even one allowed to
learn from those very users? A ceiling for the issue's "10% ahead of ridge at K=1".

The reference is ridge fitted on the training users (000-005), as in every dfm evaluation. Against
it, scikit-learn's gradient boosting (HistGradientBoostingRegressor, absolute error, 200
iterations, one per coordinate of the final offset from constant velocity) is fitted on:
  1. the training users only (what dfm is asked to do);
  2. the training users plus the held-out users' *other days* (5 folds by user and local day,
     drawn 3 times: a test window is never predicted by a model that saw its day), the most generous setting a
     deployed model could reach after living with these people for weeks;
  3. as 2, plus where the window is (its last fix in meters about Beijing's centre of the data)
     and its heading: a personal map of the places and routes the user repeats.
Prints minFDE at 60 s (m) and each learner over ridge. A second table leaves one user out at a
time (every split of the import: the other seven users train ridge and gradient boosting): on
which people a learner gets ahead of ridge, and by how much.

Usage (from the project root, after `python3 scripts/real_data.py --only geolife` or
`dfm data import geolife --in ../shared/data/geolife --out datasets/geolife`):
    python3 scripts/geolife_ceiling.py [--data checkpoints/real/geolife-data]
Needs numpy and scikit-learn (it shares the loaders of geolife_overlap.py and geolife_history.py).
"""
import argparse
import numpy as np
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import Ridge

from geolife_history import EARTH_M, last_fix_frame, cv_positions, features
from geolife_overlap import load
from study import cell

BEIJING_UTC_OFFSET_S = 8 * 3600
FOLDS = 5
STEP_S = 5.0  # the import's resampling step (`dfm data import geolife --step`)
SEEDS = (1, 2, 3)


def place(hist, origin):
    """The last fix in meters about `origin`, and the heading of the last step as sine and cosine."""
    lat0, lon0 = origin
    last, prev = hist[:, -1], hist[:, -2]
    x = np.radians(last[:, 1] - lon0) * EARTH_M * np.cos(np.radians(lat0))
    y = np.radians(last[:, 0] - lat0) * EARTH_M
    dy, dx = last[:, 0] - prev[:, 0], (last[:, 1] - prev[:, 1]) * np.cos(np.radians(lat0))
    ang = np.arctan2(dy, dx)
    return np.stack([x, y, np.cos(ang), np.sin(ang)], 1)


def boost(x, y):
    """Gradient boosting per target column; returns a function of the features."""
    fits = [HistGradientBoostingRegressor(max_iter=200, loss="absolute_error", random_state=0).fit(x, y[:, j])
            for j in range(y.shape[1])]
    return lambda z: np.stack([f.predict(z) for f in fits], 1)


def final_error(offset, cv_end, true_end):
    return float(np.mean(np.linalg.norm(cv_end + offset - true_end, axis=1)))


def all_windows(data):
    """Every window of the import (all splits), in the agent frame, with its user."""
    hs, fs, users = [], [], []
    for split in ("train", "val", "test", "test_days"):
        keys = []
        h, f = load(data, split, keys)
        if len(h):
            hs.append(h)
            fs.append(f)
            users += [u for u, _ in keys]
    h, f = last_fix_frame(np.concatenate(hs), np.concatenate(fs))
    return h, f, np.array(users)


def leave_one_user_out(data):
    h, f, users = all_windows(data)
    n = f.shape[1]
    cv = cv_positions(h, n)[:, -1]
    y, x = f[:, -1] - cv, features(h)
    speed = np.linalg.norm(np.diff(h, axis=1), axis=2).mean(1) / STEP_S
    print("\nleave one user out (the other seven train):\n")
    print("| user | windows | median speed m/s | constant velocity m | ridge / CV | gradient boosting / CV | boosting / ridge |")
    print("|---|---|---|---|---|---|---|")
    for u in sorted(set(users)):
        te, tr = users == u, users != u
        err = lambda offset: final_error(offset, cv[te], f[te][:, -1])
        c = err(0 * y[te])
        r = err(Ridge(alpha=10.0).fit(x[tr], y[tr]).predict(x[te]))
        g = err(boost(x[tr], y[tr])(x[te]))
        print(f"| {u} | {te.sum()} | {np.median(speed[te]):.1f} | {c:.1f} | {r / c:.3f} | {g / c:.3f} | {g / r:.3f} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="checkpoints/real/geolife-data")
    a = ap.parse_args()
    keys_tr, keys_te = [], []
    raw_tr, raw_te = load(a.data, "train", keys_tr), load(a.data, "test", keys_te)
    (htr, ftr), (hte, fte) = last_fix_frame(*raw_tr), last_fix_frame(*raw_te)
    n = ftr.shape[1]
    cv_tr, cv_te = cv_positions(htr, n)[:, -1], cv_positions(hte, n)[:, -1]
    ytr = ftr[:, -1] - cv_tr
    xtr, xte = features(htr), features(hte)
    origin = (raw_tr[0][:, -1, 0].mean(), raw_tr[0][:, -1, 1].mean())
    ptr, pte = place(raw_tr[0], origin), place(raw_te[0], origin)
    day = np.array([f"{u}/{int((t + BEIJING_UTC_OFFSET_S) // 86400)}" for u, t in keys_te])
    groups = np.unique(day)
    print(f"train {len(xtr)} windows (users 000-005), test {len(xte)} (users 006-007, {len(groups)} user-days, "
          f"{FOLDS} folds by day, fold draws {', '.join(map(str, SEEDS))})")

    ridge = Ridge(alpha=10.0).fit(xtr, ytr).predict(xte)
    ref = final_error(ridge, cv_te, fte[:, -1])
    rows = [("constant velocity", [final_error(0 * ridge, cv_te, fte[:, -1])]),
            ("ridge, training users (the reference)", [ref]),
            ("gradient boosting, training users", [final_error(boost(xtr, ytr)(xte), cv_te, fte[:, -1])])]
    yte = fte[:, -1] - cv_te
    for name, with_place in (("+ the held-out users' other days", False), ("+ their other days and a map of their places", True)):
        errs = []
        for seed in SEEDS:
            rng = np.random.default_rng(seed)
            fold_of_group = dict(zip(groups, rng.permutation(len(groups)) % FOLDS))
            fold = np.array([fold_of_group[d] for d in day])
            pred = np.zeros_like(yte)
            for k in range(FOLDS):
                seen, held = fold != k, fold == k
                x_fit, x_held = np.concatenate([xtr, xte[seen]]), xte[held]
                if with_place:
                    x_fit = np.concatenate([x_fit, np.concatenate([ptr, pte[seen]])], 1)
                    x_held = np.concatenate([x_held, pte[held]], 1)
                pred[held] = boost(x_fit, np.concatenate([ytr, yte[seen]]))(x_held)
            errs.append(final_error(pred, cv_te, fte[:, -1]))
        rows.append((f"gradient boosting, training users {name}", errs))
    print("\n| learner | minFDE m | / ridge |")
    print("|---|---|---|")
    for name, errs in rows:
        print(f"| {name} | {spread(errs)} | {spread([e / ref for e in errs], 3)} |")
    leave_one_user_out(a.data)


def spread(values, digits=2):
    """`mean ± spread` (`study.cell`) over several values; a single one as it is."""
    return cell(list(values), digits) if len(values) > 1 else f"{values[0]:.{digits}f}"

if __name__ == "__main__":
    main()
