-- wrk script for examples/gated_server.rs (used by scripts/gated_server_bench.sh).
--
--   METHOD=POST NAMES=1000 wrk -t2 -c64 -d30s -s scripts/gated_server_wrk.lua http://127.0.0.1:8080
--
-- Each request goes to /counter/cN with N uniform in 1..NAMES; METHOD is POST (increment,
-- the default) or GET (read). At the end one machine-readable line is printed:
--   RESULT requests=… seconds=… rps=… p50_ms=… p90_ms=… p99_ms=… p999_ms=… max_ms=… errors=…

local method = os.getenv("METHOD") or "POST"
local names = tonumber(os.getenv("NAMES") or "1000")

local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("id", counter)
end

function init(args)
  -- Each wrk thread has its own Lua state: give each its own random sequence.
  math.randomseed(os.time() * 1000 + (id or 0))
end

function request()
  return wrk.format(method, "/counter/c" .. math.random(1, names))
end

function done(summary, latency, requests)
  local e = summary.errors
  local errors = e.connect + e.read + e.write + e.status + e.timeout
  local seconds = summary.duration / 1e6
  io.write(string.format(
    "RESULT requests=%d seconds=%.2f rps=%.0f p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f p999_ms=%.3f max_ms=%.3f errors=%d\n",
    summary.requests, seconds, summary.requests / seconds,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency:percentile(99.9) / 1000,
    latency.max / 1000, errors))
end
