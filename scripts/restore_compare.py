"""Helpers of scripts/restore_compare.sh (pagelog's restore against Litestream's).

  python restore_compare.py bucket ENDPOINT BUCKET
      create the bucket (moto without authentication accepts any credentials)
  python restore_compare.py stored ENDPOINT BUCKET PREFIX
      print "objects=N bytes=N" for the objects under PREFIX/
  python restore_compare.py verify DB EXPECTED
      PRAGMA integrity_check and the content fingerprint of DB (opened read-only); exit 1
      unless the check says ok and the fingerprint line equals EXPECTED
  python restore_compare.py litestream-plan
      read `litestream restore -dry-run` output on stdin, print "files=N bytes=N levels=L:N,..."
  python restore_compare.py summary RESULTS
      RESULTS: lines "tool round seconds max_rss_kib"; print the table, the medians and the
      ratios (Litestream's time over pagelog's, pagelog's RSS over Litestream's)

The fingerprint is the one examples/restore_compare.rs prints: row count, sum(length(v)),
sum(id), and the CRC-32 of every row in id order as id (8 bytes big-endian), len(v) (4 bytes
big-endian) and v.
"""

import statistics
import sqlite3
import struct
import sys
import zlib


def s3_client(endpoint):
    import boto3  # installed with moto[server] in the script's venv

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="compare",
        aws_secret_access_key="compare",
    )


def bucket(endpoint, name):
    s3_client(endpoint).create_bucket(Bucket=name)


def stored(endpoint, name, prefix):
    objects = size = 0
    pages = s3_client(endpoint).get_paginator("list_objects_v2")
    for page in pages.paginate(Bucket=name, Prefix=prefix.rstrip("/") + "/"):
        for o in page.get("Contents", []):
            objects += 1
            size += o["Size"]
    print(f"objects={objects} bytes={size}")


def fingerprint(path):
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        check = conn.execute("PRAGMA integrity_check").fetchall()
        crc, rows, value_bytes, id_sum = 0, 0, 0, 0
        for rowid, v in conn.execute("SELECT id, v FROM t ORDER BY id"):
            crc = zlib.crc32(struct.pack(">qI", rowid, len(v)), crc)
            crc = zlib.crc32(v, crc)
            rows += 1
            value_bytes += len(v)
            id_sum += rowid
    finally:
        conn.close()
    line = f"fingerprint rows={rows} value_bytes={value_bytes} id_sum={id_sum} crc32={crc:08x}"
    return [r[0] for r in check], line


def verify(path, expected):
    check, line = fingerprint(path)
    ok = check == ["ok"] and line == expected
    print(f"integrity={'ok' if check == ['ok'] else '|'.join(check)} {line}")
    if line != expected:
        print(f"expected {expected}", file=sys.stderr)
    sys.exit(0 if ok else 1)


def litestream_plan():
    # `litestream restore -dry-run` (0.5) prints a "Files to fetch:" table:
    # level  file  min_txid  max_txid  size  timestamp
    files = size = 0
    levels = {}
    in_table = False
    for line in sys.stdin:
        words = line.split()
        if line.startswith("Files to fetch"):
            in_table = True
            continue
        if not in_table or not words or words[0] == "level":
            continue
        if len(words) >= 5 and words[0].isdigit() and words[4].isdigit():
            files += 1
            size += int(words[4])
            levels[words[0]] = levels.get(words[0], 0) + 1
    shown = ",".join(f"L{k}:{v}" for k, v in sorted(levels.items(), key=lambda kv: int(kv[0])))
    print(f"files={files} bytes={size} levels={shown or '-'}")


def summary(path):
    runs = {}
    print(f"{'tool':<11} {'round':>5} {'seconds':>9} {'peak RSS MiB':>13}")
    with open(path) as f:
        for line in f:
            tool, rnd, secs, kib = line.split()
            secs, mib = float(secs), int(kib) / 1024
            runs.setdefault(tool, []).append((secs, mib))
            print(f"{tool:<11} {rnd:>5} {secs:>9.2f} {mib:>13.1f}")
    med = {}
    for tool, rs in runs.items():
        med[tool] = (statistics.median(s for s, _ in rs), statistics.median(m for _, m in rs))
        print(f"{tool:<11} {'median':>5} {med[tool][0]:>9.2f} {med[tool][1]:>13.1f}")
    if "pagelog" in med and "litestream" in med:
        (pt, pm), (lt, lm) = med["pagelog"], med["litestream"]
        speed = lt / pt if pt > 0 else float("inf")
        rss = pm / lm if lm > 0 else float("inf")
        print(f"speed-up   litestream time / pagelog time = {speed:.2f}x (goal >= 2)")
        print(f"memory     pagelog RSS / litestream RSS   = {rss:.2f} (goal <= 1)")


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "bucket":
        bucket(*args)
    elif cmd == "stored":
        stored(*args)
    elif cmd == "verify":
        verify(*args)
    elif cmd == "litestream-plan":
        litestream_plan()
    elif cmd == "summary":
        summary(*args)
    else:
        sys.exit(f"unknown command {cmd!r}")


if __name__ == "__main__":
    main()
