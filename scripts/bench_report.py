#!/usr/bin/env python3
"""Print the benchmark tables of docs/BENCHMARKS.md from criterion's output.

Usage: cargo bench --bench log && cargo bench --bench commit && cargo bench --bench restore &&
    python3 scripts/bench_report.py
       python3 scripts/bench_report.py --goals   (one line: each goal's ratio, for repeated runs)
Reads target/criterion/<group>/<function>/new/estimates.json: the median and the mean time per
iteration, and the goal ratios computed from the means (as the issues define them).
"""
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
CRIT = ROOT / "target" / "criterion"


def est(group, function):
    p = CRIT / group / function / "new" / "estimates.json"
    if not p.exists():
        return None
    d = json.loads(p.read_text())
    return d["median"]["point_estimate"], d["mean"]["point_estimate"]


def fmt(ns):
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    return f"{ns / 1e3:.1f} µs"


# (group, function, baseline function or None, goal text)
ROWS = [
    ("log_append", "raw_write_fdatasync_4k", None, "physical limit"),
    ("log_append", "log_sync_4k", "raw_write_fdatasync_4k", ""),
    ("log_append", "raw_write_fdatasync_1m", None, "physical limit"),
    ("log_append", "log_sync_1m", "raw_write_fdatasync_1m", "≤ 1.25"),
    ("group_commit", "raw_write_fdatasync_64k", None, "physical limit (a batch's disk part)"),
    ("group_commit", "raw_wake_15threads", None, "physical limit (a batch's wake-ups)"),
    ("group_commit", "bare_group_commit_4k_16threads", ("log_append", "log_sync_4k"),
     "a bare group commit, no log"),
    ("group_commit", "log_sync_4k_16threads", ("log_append", "log_sync_4k"), "≤ 0.125 (1/8)"),
    ("commit", "sqlite_wal_full", None, ""),
    ("commit", "pagelog_sync", "sqlite_wal_full", "≤ 1.05"),
    ("commit", "sqlite_wal_normal", None, ""),
    ("commit", "pagelog_gated64", "sqlite_wal_normal", "≤ 1.25"),
    ("commit", "sqlite_wal_full_10rows", None, ""),
    ("commit", "pagelog_sync_10rows", "sqlite_wal_full_10rows", ""),
    ("commit", "sqlite_wal_normal_10rows", None, ""),
    ("commit", "pagelog_gated64_10rows", "sqlite_wal_normal_10rows", ""),
    ("commit", "sqlite_wal_full_1mib", None, ""),
    ("commit", "pagelog_sync_1mib", "sqlite_wal_full_1mib", ""),
    ("commit", "sqlite_wal_normal_1mib", None, ""),
    ("commit", "pagelog_gated64_1mib", "sqlite_wal_normal_1mib", ""),
    ("read", "sqlite_point_select", None, ""),
    ("read", "pagelog_point_select", "sqlite_point_select", "≤ 1.05"),
    ("restore", "copy_64m", None, "physical limit (durable copy)"),
    ("restore", "copy_64m_nosync", None, ""),
    ("restore", "pagelog_restore_64m", "copy_64m", "≤ 2"),
]


def goals():
    parts = []
    for group, function, base, goal in ROWS:
        if not goal or base is None or not goal.startswith("≤"):
            continue
        e = est(group, function)
        bg, bf = base if isinstance(base, tuple) else (group, base)
        b = est(bg, bf)
        if e is None or b is None:
            continue
        r = e[1] / b[1]
        limit = float(goal.split()[1])
        parts.append(f"{function} {r:.3f}{'' if r <= limit else ' (not met)'}")
    floor = floor16()
    if floor is not None:
        parts.append(f"floor16 {floor:.3f}")
    bare = bare16()
    if bare is not None:
        parts.append(f"bare16 {bare:.3f}")
    print("; ".join(parts))


def floor16():
    """The least `log_sync_4k_16threads` / `log_sync_4k` that a design with one fsync in flight
    can reach on this machine: one 64 KiB write + fdatasync and one wake-up of 15 sleepers per
    16 records (see benches/log.rs)."""
    disk = est("group_commit", "raw_write_fdatasync_64k")
    wake = est("group_commit", "raw_wake_15threads")
    single = est("log_append", "log_sync_4k")
    if disk is None or wake is None or single is None:
        return None
    return (disk[1] + wake[1]) / 16 / single[1]


def bare16():
    """`bare_group_commit_4k_16threads` / `log_sync_4k`: the goal's ratio as a bare group commit,
    without the log, reaches it in the same run (see benches/log.rs)."""
    bare = est("group_commit", "bare_group_commit_4k_16threads")
    single = est("log_append", "log_sync_4k")
    if bare is None or single is None:
        return None
    return bare[1] / single[1]


def main():
    if "--goals" in sys.argv:
        goals()
        return
    current = None
    for group, function, base, goal in ROWS:
        e = est(group, function)
        if e is None:
            continue
        if group != current:
            current = group
            print(f"\n| `{group}` | median | mean | ratio of means | goal |\n|---|---|---|---|---|")
        ratio = ""
        if base is not None:
            bg, bf = base if isinstance(base, tuple) else (group, base)
            b = est(bg, bf)
            if b is not None:
                r = e[1] / b[1]
                ratio = f"{r:.3f} × `{bf}`"
                if goal.startswith("≤"):
                    limit = float(goal.split()[1])
                    ratio += " — met" if r <= limit else " — **not met**"
        print(f"| `{function}` | {fmt(e[0])} | {fmt(e[1])} | {ratio} | {goal} |")
        floor = floor16() if function == "log_sync_4k_16threads" else None
        if floor is not None:
            print(f"| floor: (`raw_write_fdatasync_64k` + `raw_wake_15threads`) / 16 | | | "
                  f"{floor:.3f} × `log_sync_4k` | |")


if __name__ == "__main__":
    main()
