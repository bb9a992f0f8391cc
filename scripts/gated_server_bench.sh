#!/usr/bin/env bash
# Sync vs Gated over HTTP: builds examples/gated_server.rs in release, and for each mode starts
# it on a fresh database, checks it answers (a smoke run: POST, POST, GET on one counter),
# warms it up, then drives it with wrk — POSTs to random counter names, then GETs — and prints
# requests/s and latency percentiles of both modes side by side, with the log's writes per
# fsync. Figures and their machine: docs/GATED_SERVER.md.
#
#   scripts/gated_server_bench.sh
#
# Settings (environment): DURATION (30s), CONNECTIONS (64), THREADS (2, wrk's), WARMUP (5s),
# NAMES (1000 counters), ROUNDS (1: each round runs Sync then Gated), PORT (18080),
# WORKERS (server worker threads; default its own: the cores), BENCH_DIR (where the temporary
# databases go, so the disk measured is that one's; default $TMPDIR or /tmp), KEEP=1 keeps them.
# Needs wrk (Debian: apt-get install -y wrk). Honors CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

DURATION=${DURATION:-30s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
WARMUP=${WARMUP:-5s}
NAMES=${NAMES:-1000}
ROUNDS=${ROUNDS:-1}
PORT=${PORT:-18080}
WORKERS=${WORKERS:-}
BENCH_DIR=${BENCH_DIR:-${TMPDIR:-/tmp}}

if ! command -v wrk >/dev/null 2>&1; then
  echo "wrk is not installed; on Debian/Ubuntu: apt-get install -y wrk" >&2
  exit 1
fi

echo "== building the example (release)"
cargo build --release --example gated_server
bin="${CARGO_TARGET_DIR:-$root/target}/release/examples/gated_server"
[ -x "$bin" ] || { echo "no binary at $bin" >&2; exit 1; }

work=$(mktemp -d "$BENCH_DIR/gated-bench.XXXXXX")
server=""
cleanup() {
  if [ -n "$server" ] && kill -0 "$server" 2>/dev/null; then
    kill -TERM "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
  fi
  if [ "${KEEP:-0}" = 1 ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

# One HTTP/1.1 request over bash's /dev/tcp (no curl needed); prints the body.
http() { # METHOD PATH
  local resp
  exec 3<>"/dev/tcp/127.0.0.1/$PORT" || return 1
  printf '%s %s HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n' "$1" "$2" >&3
  resp=$(cat <&3)
  exec 3<&- 3>&-
  case "$resp" in
    "HTTP/1.1 200"*) printf '%s' "${resp#*$'\r\n\r\n'}" ;;
    *) echo "$1 $2: ${resp%%$'\r'*}" >&2; return 1 ;;
  esac
}

stat_of() { # JSON FIELD
  sed -n "s/.*\"$2\":\([0-9.]*\).*/\1/p" <<<"$1"
}

echo "== machine"
echo "date:    $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "nproc:   $(nproc)"
echo "kernel:  $(uname -r)"
echo "load:    $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min)"
echo "db disk: $(df -h "$work" | tail -1)"
echo "wrk:     -t$THREADS -c$CONNECTIONS -d$DURATION, $NAMES counters, warm-up $WARMUP"

results=()
run_wrk() { # METHOD DURATION -> RESULT line
  METHOD=$1 NAMES=$NAMES wrk -t"$THREADS" -c"$CONNECTIONS" -d"$2" \
    -s "$root/scripts/gated_server_wrk.lua" "http://127.0.0.1:$PORT" | grep '^RESULT' || true
}

for round in $(seq 1 "$ROUNDS"); do
  for mode in sync gated; do
    db="$work/$mode-$round/counters.db"
    mkdir -p "$(dirname "$db")"
    args=(--mode "$mode" --addr "127.0.0.1:$PORT" --db "$db")
    [ -n "$WORKERS" ] && args+=(--workers "$WORKERS")
    "$bin" "${args[@]}" >"$work/$mode-$round.log" 2>&1 &
    server=$!
    for _ in $(seq 1 100); do
      http GET /stats >/dev/null 2>&1 && break
      kill -0 "$server" 2>/dev/null || { cat "$work/$mode-$round.log" >&2; exit 1; }
      sleep 0.1
    done
    # Smoke run: the counter counts and reads back.
    a=$(http POST /counter/smoke); b=$(http POST /counter/smoke); c=$(http GET /counter/smoke)
    if [ "$a,$b,$c" != "1,2,2" ]; then
      echo "smoke run failed in $mode mode: POST=$a POST=$b GET=$c" >&2
      exit 1
    fi
    echo "== round $round, $mode: smoke run ok (POST 1, POST 2, GET 2); warming up $WARMUP"
    run_wrk POST "$WARMUP" >/dev/null
    before=$(http GET /stats)
    echo "== round $round, $mode: POST for $DURATION"
    post=$(run_wrk POST "$DURATION")
    after=$(http GET /stats)
    writes=$(( $(stat_of "$after" writes) - $(stat_of "$before" writes) ))
    syncs=$(( $(stat_of "$after" log_syncs) - $(stat_of "$before" log_syncs) ))
    waits=$(( $(stat_of "$after" gated_waits) - $(stat_of "$before" gated_waits) ))
    per_sync=$(awk -v w="$writes" -v s="$syncs" 'BEGIN { if (s > 0) printf "%.1f", w / s; else print "-" }')
    echo "   $post"
    echo "   writes $writes, log fsyncs $syncs, writes per fsync $per_sync, responses that waited for an fsync $waits"
    results+=("POST $mode $per_sync $post")
    echo "== round $round, $mode: GET for $DURATION"
    get=$(run_wrk GET "$DURATION")
    echo "   $get"
    results+=("GET $mode - $get")
    kill -TERM "$server"
    wait "$server" || { echo "the $mode server exited with an error:" >&2; cat "$work/$mode-$round.log" >&2; exit 1; }
    server=""
  done
done

field() { # RESULT-LINE KEY
  sed -n "s/.* $2=\([^ ]*\).*/\1/p" <<<" $1"
}

echo
echo "== results (requests/s; latency in ms; writes per log fsync)"
printf '%-5s %-6s %9s %8s %8s %8s %9s %8s %7s %12s\n' \
  run mode "req/s" p50 p90 p99 p99.9 max errors "writes/fsync"
for r in "${results[@]}"; do
  read -r kind mode per_sync line <<<"$r"
  printf '%-5s %-6s %9s %8s %8s %8s %9s %8s %7s %12s\n' "$kind" "$mode" \
    "$(field "$line" rps)" "$(field "$line" p50_ms)" "$(field "$line" p90_ms)" \
    "$(field "$line" p99_ms)" "$(field "$line" p999_ms)" "$(field "$line" max_ms)" \
    "$(field "$line" errors)" "$per_sync"
done
for kind in POST GET; do
  s=0 g=0
  for r in "${results[@]}"; do
    read -r k mode _ line <<<"$r"
    [ "$k" = "$kind" ] || continue
    v=$(field "$line" rps)
    if [ "$mode" = sync ]; then s=$(awk -v a="$s" -v b="$v" 'BEGIN{print a+b}'); else g=$(awk -v a="$g" -v b="$v" 'BEGIN{print a+b}'); fi
  done
  awk -v k="$kind" -v s="$s" -v g="$g" 'BEGIN { if (s > 0) printf "%s: Gated/Sync requests/s = %.2f\n", k, g / s }'
done
