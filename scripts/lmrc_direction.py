#!/usr/bin/env python3
"""What could tell which end of a route LMRC drivers start from, on the shared sample.

Per route: its station, its zones, Kendall's tau between the order the driver first enters each
zone and the order of the zone ids (area, row, column: `D-8.2B` is area D-8, row 2, column B;
+1 = the driver goes up the ids, -1 = down), and the zones it shares with any other route (a
zone-to-zone habit learned on training routes can only help a test route that drives the same
zones).

Usage (from the project root; standard library only):
    python3 scripts/lmrc_direction.py [--in ../shared/data/lmrc-sample]
"""
import argparse, json, math, os, re


def tau(a):
    c = d = 0
    for i in range(len(a)):
        for j in range(i + 1, len(a)):
            c += a[i] < a[j]
            d += a[i] > a[j]
    return (c - d) / max(1, c + d)


def zone_key(z):
    m = re.match(r"([A-Z])-(\d+)\.(\d+)([A-Z])$", z)
    return (m.group(1), int(m.group(2)), int(m.group(3)), m.group(4)) if m else (z,)


def is_zone(z):
    return isinstance(z, str) and z != "" and not (isinstance(z, float) and math.isnan(z))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--in", dest="inp", default=os.path.join("..", "shared", "data", "lmrc-sample"))
    a = ap.parse_args()
    routes = json.load(open(os.path.join(a.inp, "route_data.json")))
    seqs = json.load(open(os.path.join(a.inp, "actual_sequences.json")))
    zones, entered = {}, {}
    for r, d in routes.items():
        pos = seqs[r]["actual"]
        z_seq = []
        for s in sorted(pos, key=lambda s: pos[s]):
            z = d["stops"][s].get("zone_id")
            if is_zone(z) and z not in z_seq:
                z_seq.append(z)
        entered[r], zones[r] = z_seq, set(z_seq)
    print("| route | station | zones | tau(entry order, zone ids) | zones shared with other routes |")
    print("|---|---|---|---|---|")
    ups = downs = 0
    for r, d in routes.items():
        t = tau([zone_key(z) for z in entered[r]])
        ups, downs = ups + (t > 0), downs + (t < 0)
        shared = sum(len(zones[r] & zones[o]) for o in routes if o != r)
        print(f"| {r[8:16]} | {d['station_code']} | {len(zones[r])} | {t:+.2f} | {shared} |")
    print(f"\n{ups} routes go up the zone ids, {downs} down.")


if __name__ == "__main__":
    main()
