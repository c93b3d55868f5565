#!/usr/bin/env python3
"""Writes GeoLife users' trajectories as a generic GPS CSV (`trajectory_id,timestamp,lat,lon`,
UNIX seconds), for `dfm data import gps-csv`: a second real source with another sampling (the
transfer report imports it at 10 s, where GeoLife is imported at 5 s).

Usage: python3 scripts/geolife_csv.py --in ../shared/data/geolife --users 006,007 --out fleet.csv
"""
import argparse, calendar, os, time


def rows(root, user):
    folder = os.path.join(root, user, "Trajectory")
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".plt"):
            continue
        with open(os.path.join(folder, name)) as f:
            lines = f.read().splitlines()[6:]  # six header lines
        for line in lines:
            c = line.split(",")
            if len(c) < 7:
                continue
            t = calendar.timegm(time.strptime(f"{c[5]} {c[6]}", "%Y-%m-%d %H:%M:%S"))
            yield f"{user}-{name[:-4]}", t, c[0], c[1]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--in", dest="root", required=True)
    p.add_argument("--users", required=True, help="comma-separated user folders, e.g. 006,007")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    with open(a.out, "w") as out:
        out.write("trajectory_id,timestamp,lat,lon\n")
        for u in a.users.split(","):
            for tid, t, lat, lon in rows(a.root, u.strip()):
                out.write(f"{tid},{t},{lat},{lon}\n")


if __name__ == "__main__":
    main()
