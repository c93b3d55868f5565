"""Grouped bar charts with error bars as SVG, standard library only (the figures of docs/ that
people would rather look at than read). Used by scripts/real_data.py --chart.

A chart is a list of panels side by side; a panel is a dict with `title`, `groups` (name, then
bars: (series, mean, spread)), and optionally `ref` (a value drawn as a dashed line, with
`ref_label`).
"""
import html

COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b"]
W, H, TOP, BOTTOM, LEFT = 420, 300, 40, 70, 50


def _panel(p, x0):
    groups = p["groups"]
    vals = [m + s for _, bars in groups for _, m, s in bars] + [p.get("ref", 0)]
    lo = min(0.0, min(m - s for _, bars in groups for _, m, s in bars))
    hi = max(vals) * 1.1 or 1.0
    y = lambda v: TOP + (H - TOP - BOTTOM) * (hi - v) / (hi - lo)
    out = [f'<text x="{x0 + W / 2}" y="20" text-anchor="middle" font-size="13">{html.escape(p["title"])}</text>',
           f'<line x1="{x0 + LEFT}" y1="{y(0)}" x2="{x0 + W - 10}" y2="{y(0)}" stroke="#444"/>']
    for k in range(6):
        v = lo + (hi - lo) * k / 5
        out.append(f'<text x="{x0 + LEFT - 6}" y="{y(v) + 4}" text-anchor="end" font-size="10">{v:.2f}</text>')
        out.append(f'<line x1="{x0 + LEFT}" y1="{y(v)}" x2="{x0 + W - 10}" y2="{y(v)}" stroke="#ddd"/>')
    gw = (W - LEFT - 20) / len(groups)
    for gi, (gname, bars) in enumerate(groups):
        bw = gw * 0.8 / len(bars)
        gx = x0 + LEFT + 10 + gi * gw
        for bi, (series, m, s) in enumerate(bars):
            bx = gx + bi * bw
            top, base = y(max(m, 0)), y(min(m, 0))
            out.append(f'<rect x="{bx:.1f}" y="{top:.1f}" width="{bw * 0.9:.1f}" height="{base - top:.1f}" '
                       f'fill="{COLOURS[bi % len(COLOURS)]}"><title>{html.escape(series)}: {m:.3f} ± {s:.3f}</title></rect>')
            cx = bx + bw * 0.45
            out.append(f'<line x1="{cx:.1f}" y1="{y(m - s):.1f}" x2="{cx:.1f}" y2="{y(m + s):.1f}" stroke="#000"/>')
            out.append(f'<text x="{cx:.1f}" y="{top - 4:.1f}" text-anchor="middle" font-size="9">{m:.2f}</text>')
        out.append(f'<text x="{gx + gw * 0.4:.1f}" y="{H - BOTTOM + 16}" text-anchor="middle" font-size="11">'
                   f'{html.escape(gname)}</text>')
    if "ref" in p:
        out.append(f'<line x1="{x0 + LEFT}" y1="{y(p["ref"])}" x2="{x0 + W - 10}" y2="{y(p["ref"])}" '
                   f'stroke="#d62728" stroke-dasharray="5,4"/>')
        out.append(f'<text x="{x0 + W - 12}" y="{y(p["ref"]) - 4}" text-anchor="end" font-size="10" '
                   f'fill="#d62728">{html.escape(p.get("ref_label", ""))}</text>')
    series = [s for s, _, _ in groups[0][1]]
    for i, s in enumerate(series):
        lx = x0 + LEFT + (i % 2) * 180
        ly = H - BOTTOM + 34 + (i // 2) * 16
        out.append(f'<rect x="{lx}" y="{ly - 9}" width="10" height="10" fill="{COLOURS[i % len(COLOURS)]}"/>')
        out.append(f'<text x="{lx + 14}" y="{ly}" font-size="11">{html.escape(s)}</text>')
    return out


def write(path, panels, caption):
    width = W * len(panels)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{H + 20}" '
             f'font-family="sans-serif"><rect width="100%" height="100%" fill="white"/>']
    for i, p in enumerate(panels):
        parts += _panel(p, i * W)
    parts.append(f'<text x="8" y="{H + 12}" font-size="10" fill="#555">{html.escape(caption)}</text></svg>')
    with open(path, "w") as f:
        f.write("\n".join(parts) + "\n")
