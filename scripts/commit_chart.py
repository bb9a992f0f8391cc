#!/usr/bin/env python3
"""Draw commits per second of the four `commit` variants from criterion's output.

Usage: cargo bench --bench commit && python3 scripts/commit_chart.py [OUT.svg]
Reads target/criterion/commit/<function>/new/estimates.json (criterion's printed estimate:
the slope when present, else the mean) and writes an SVG bar chart (default
docs/commit_chart.svg). Only the Python standard library is used.
"""
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
FUNCTIONS = [
    ("sqlite_wal_full", "stock SQLite, WAL, synchronous=FULL (durable)", "#7f7f7f"),
    ("pagelog_sync", "pagelog Sync (durable per commit)", "#1f77b4"),
    ("sqlite_wal_normal", "stock SQLite, WAL, synchronous=NORMAL (not durable)", "#bdbdbd"),
    ("pagelog_gated64", "pagelog Gated, durable every 64 commits", "#2ca02c"),
]


def estimate_ns(function):
    path = ROOT / "target" / "criterion" / "commit" / function / "new" / "estimates.json"
    data = json.loads(path.read_text())
    est = data.get("slope") or data["mean"]
    return est["point_estimate"]


def main():
    out = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "commit_chart.svg"
    rows = []
    for function, label, color in FUNCTIONS:
        ns = estimate_ns(function)
        rows.append((function, label, color, 1e9 / ns, ns))
    width, bar_h, gap, left, top = 900, 34, 18, 380, 60
    height = top + len(rows) * (bar_h + gap) + 40
    peak = max(r[3] for r in rows)
    scale = (width - left - 140) / peak
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        'font-family="sans-serif" font-size="14">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        '<text x="20" y="30" font-size="18" font-weight="bold">'
        "Commits per second, one-row transactions (cargo bench --bench commit)</text>",
    ]
    for i, (function, label, color, per_s, ns) in enumerate(rows):
        y = top + i * (bar_h + gap)
        w = max(1, per_s * scale)
        parts.append(f'<text x="{left - 10}" y="{y + bar_h * 0.65}" text-anchor="end">{label}</text>')
        parts.append(f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{color}"/>')
        parts.append(
            f'<text x="{left + w + 8:.1f}" y="{y + bar_h * 0.65}">{per_s:,.0f}/s ({ns / 1000:.1f} µs)</text>'
        )
    parts.append("</svg>")
    out.write_text("\n".join(parts) + "\n")
    print(f"wrote {out}")
    for function, _, _, per_s, ns in rows:
        print(f"{function:20} {ns / 1000:10.1f} µs  {per_s:12,.0f} commits/s")


if __name__ == "__main__":
    main()
