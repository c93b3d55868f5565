"""What a fleet's own past trips know about where a vehicle goes next (issue 39, before building
it into the model): the futures of training windows that started near the same place, with a
similar heading and speed, as a K=1 prediction and as features of gradient boosting, against
constant velocity and gradient boosting on the agent-frame history alone (the reference of
shared/tools/window_refs.py), on exactly the windows of a dfm dataset.

Usage: python3 scripts/retrieval_probe.py DATASET [--radius 50] [--heading 30] [--min 3]
         [--train train] [--test test] [--seeds 3]
Needs numpy and scikit-learn. The test windows are never among the neighbours; a training
window's neighbours leave out its own route (trip), as the model would in training.
"""
import argparse, glob, json, math, tarfile
import numpy as np

R = 6371008.8


def load(ds, split, limit=60000):
    out = []
    for f in sorted(glob.glob(f"{ds}/{split}-*.tar")):
        with tarfile.open(f) as t:
            for m in t.getmembers():
                if not m.name.endswith(".json"):
                    continue
                s = json.load(t.extractfile(m))
                h, fut = s["history"], (s.get("target") or {}).get("future")
                if fut and len(h) >= 2:
                    out.append((s["route_id"], [(p["lat"], p["lon"]) for p in h], fut))
                if len(out) >= limit:
                    return out
    return out


def windows(rows, origin):
    """Anchors in one plane (x, y of the last fix), headings, speeds, agent-frame histories
    and futures."""
    lat0, lon0 = origin
    c = math.cos(math.radians(lat0))
    def en(p):
        return ((p[1] - lon0) * math.pi / 180 * R * c, (p[0] - lat0) * math.pi / 180 * R)
    n = min(len(r[1]) for r in rows)
    m = min(len(r[2]) for r in rows)
    A, ang, H, F, routes = [], [], [], [], []
    for rid, h, f in rows:
        Hg = np.array([en(p) for p in h[-n:]])
        Fg = np.array([en(p) for p in f[:m]])
        d = Hg[-1] - Hg[-2]
        a = math.atan2(d[1], d[0]) if np.hypot(*d) > 0.5 else 0.0
        rot = np.array([[math.cos(-a), -math.sin(-a)], [math.sin(-a), math.cos(-a)]])
        A.append(Hg[-1]); ang.append(a)
        H.append((Hg - Hg[-1]) @ rot.T); F.append((Fg - Hg[-1]) @ rot.T)
        routes.append(rid)
    H = np.array(H)
    speed = np.linalg.norm(H[:, -1] - H[:, -2], axis=1)
    return np.array(A), np.array(ang), speed, H, np.array(F), np.array(routes)


def neighbours(tree, A, ang, speed, tr, radius, heading, same_route=None):
    """For each query, the training windows within `radius` m whose heading differs by less
    than `heading` degrees and whose step length is within a factor of 2."""
    idx = tree.query_radius(A, r=radius)
    out = []
    for i, cand in enumerate(idx):
        if len(cand) == 0:
            out.append(cand); continue
        dh = np.abs((tr["ang"][cand] - ang[i] + math.pi) % (2 * math.pi) - math.pi)
        s = tr["speed"][cand]
        ok = (dh < math.radians(heading)) & (s < 2 * speed[i] + 1.0) & (2 * s + 1.0 > speed[i])
        if same_route is not None:
            ok &= tr["routes"][cand] != same_route[i]
        out.append(cand[ok])
    return out


def retrieved(nb, tr, m, min_n):
    """The mean of the neighbours' futures (agent frame), and how many there were."""
    P = np.zeros((len(nb), m, 2)); cnt = np.array([len(c) for c in nb])
    for i, c in enumerate(nb):
        if len(c) >= min_n:
            P[i] = tr["F"][c].mean(axis=0)
    return P, cnt


def cv(H, m):
    v = H[:, -1] - H[:, -2]
    return np.stack([H[:, -1] + v * (k + 1) for k in range(m)], axis=1)


def feats(H):
    V = np.diff(H, axis=1)
    return np.concatenate([H.reshape(len(H), -1), V.reshape(len(H), -1), np.linalg.norm(V, axis=2)], axis=1)


def boost(Xtr, R, Xte, seed):
    from sklearn.ensemble import HistGradientBoostingRegressor
    P = np.zeros((len(Xte), R.shape[1]))
    for j in range(R.shape[1]):
        g = HistGradientBoostingRegressor(max_iter=200, learning_rate=0.1, loss="absolute_error", random_state=seed)
        P[:, j] = g.fit(Xtr, R[:, j]).predict(Xte)
    return P


def fde(P, F):
    return np.linalg.norm(P[:, -1] - F[:, -1], axis=1).mean()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dataset"); ap.add_argument("--train", default="train"); ap.add_argument("--test", default="test")
    ap.add_argument("--radius", type=float, default=50.0); ap.add_argument("--heading", type=float, default=30.0)
    ap.add_argument("--min", type=int, default=3); ap.add_argument("--seeds", type=int, default=3)
    a = ap.parse_args()
    from sklearn.neighbors import KDTree
    rtr, rte = load(a.dataset, a.train), load(a.dataset, a.test)
    origin = rtr[0][1][-1]
    Atr, angtr, sptr, Htr, Ftr, routes = windows(rtr, origin)
    Ate, angte, spte, Hte, Fte, _ = windows(rte, origin)
    m = min(Ftr.shape[1], Fte.shape[1]); Ftr, Fte = Ftr[:, :m], Fte[:, :m]
    tr = dict(ang=angtr, speed=sptr, F=Ftr, routes=routes)
    tree = KDTree(Atr)
    nb_te = neighbours(tree, Ate, angte, spte, tr, a.radius, a.heading)
    nb_tr = neighbours(tree, Atr, angtr, sptr, tr, a.radius, a.heading, same_route=routes)
    Pte, cte = retrieved(nb_te, tr, m, a.min); Ptr, ctr = retrieved(nb_tr, tr, m, a.min)
    has = cte >= a.min
    print(f"{a.dataset}: train {len(Htr)} test {len(Hte)} windows, future {m} steps; "
          f"radius {a.radius} m, heading {a.heading} deg, at least {a.min} neighbours: "
          f"{has.mean():.1%} of test windows have them (train, own route left out: {(ctr >= a.min).mean():.1%})")
    cvte, cvtr = cv(Hte, m), cv(Htr, m)
    base = fde(cvte, Fte)
    print(f"constant velocity           minFDE {base:7.1f}  1.000")
    print(f"retrieval where found, else CV    {fde(np.where(has[:, None, None], Pte, cvte), Fte):7.1f}  "
          f"{fde(np.where(has[:, None, None], Pte, cvte), Fte) / base:.3f}")
    # Retrieval's residual over CV, masked where nothing is near, as features of boosting.
    def rfeat(P, c, cvp):
        mask = (c >= a.min)[:, None]
        return np.concatenate([((P - cvp).reshape(len(P), -1)) * mask, mask, np.log1p(c)[:, None]], axis=1)
    Rtr = (Ftr - cvtr).reshape(len(Ftr), -1)
    for name, Xtr, Xte in [
        ("gradient boosting, history", feats(Htr), feats(Hte)),
        ("gradient boosting + retrieval", np.concatenate([feats(Htr), rfeat(Ptr, ctr, cvtr)], 1),
         np.concatenate([feats(Hte), rfeat(Pte, cte, cvte)], 1)),
    ]:
        scores = [fde(cvte + boost(Xtr, Rtr, Xte, s).reshape(len(Xte), m, 2), Fte) for s in range(a.seeds)]
        f = np.array(scores)
        print(f"{name:30s} minFDE {f.mean():7.1f} ± {f.std(ddof=1) if len(f) > 1 else 0:.1f}  {f.mean() / base:.3f}")


main()
