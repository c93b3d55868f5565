#!/usr/bin/env python3
"""Draws docs/video.md's dashcam figure (docs/clips.png): simulated clips, one row each (8 frames, left
to right, scaled 3x): three samples approaching a red light, three approaching a green one.

Usage (from the project root, after `cargo build --release`):
    python3 scripts/clips.py [--out docs/clips.png]

Simulates 12 routes with clips (`dfm data synth --video`) and reads the first test shard. Only
the standard library is needed (tar, .npy and .png by hand).
"""
import argparse, ast, json, os, struct, subprocess, sys, tarfile, tempfile, zlib

DFM = os.path.join("target", "release", "dfm")
SCALE, GAP = 3, 2


def read_npy(b):
    """uint8 [T, H, W, 3] from .npy bytes: (shape, data)."""
    n = struct.unpack("<H", b[8:10])[0]
    header = ast.literal_eval(b[10:10 + n].decode("latin1"))
    assert header["descr"] in ("|u1", "<u1"), header
    return header["shape"], b[10 + n:]


def write_png(path, w, h, rows):
    raw = b"".join(b"\x00" + bytes(r) for r in rows)
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(png)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join("docs", "clips.png"))
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "world")
        subprocess.run([DFM, "data", "synth", "--out", data, "--routes", "12", "--video"], check=True,
                       stdout=subprocess.DEVNULL)
        members = {}
        with tarfile.open(os.path.join(data, "test-000000.tar")) as t:
            for m in t.getmembers():
                members[m.name] = t.extractfile(m).read()
    picked = {"red": [], "green": []}
    for name in sorted(members):
        if not name.endswith(".json"):
            continue
        s = json.loads(members[name])
        light = (s.get("target") or {}).get("light_ahead")
        if light in picked and len(picked[light]) < 3:
            picked[light].append(read_npy(members[name[:-5] + ".video.npy"]))
    clips = picked["red"] + picked["green"]
    (t, h, w, _), _ = clips[0]
    fw, fh = w * SCALE, h * SCALE
    width = t * (fw + GAP) - GAP
    rows = []
    for ci, ((t, h, w, _), px) in enumerate(clips):
        for y in range(fh):
            row = []
            for k in range(t):
                for x in range(fw):
                    i = ((k * h + y // SCALE) * w + x // SCALE) * 3
                    row += px[i:i + 3]
                if k + 1 < t:
                    row += [255, 255, 255] * GAP
            rows.append(row)
        if ci + 1 < len(clips):
            rows += [[255, 255, 255] * width] * GAP
    write_png(a.out, width, len(rows), rows)
    print(f"{a.out}: {len(picked['red'])} clips approaching a red light, then {len(picked['green'])} a green one")


if __name__ == "__main__":
    sys.exit(main())
