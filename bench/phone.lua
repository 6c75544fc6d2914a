-- wrk script for bench/run.py. Every request carries the User-Agent in BENCH_USER_AGENT (a phone's, as a
-- real scan does) and the client address in BENCH_FORWARDED_FOR as X-Forwarded-For (a routable one, as a
-- real visitor's is); BENCH_METHOD and BENCH_BODY set the method and body. done() prints one line,
-- "BENCH_JSON {...}", with the counts and latency percentiles (microseconds) that run.py reads.
wrk.method = os.getenv("BENCH_METHOD") or "GET"
local body = os.getenv("BENCH_BODY")
if body ~= nil and body ~= "" then
  wrk.body = body
end
wrk.headers["User-Agent"] = os.getenv("BENCH_USER_AGENT")
wrk.headers["X-Forwarded-For"] = os.getenv("BENCH_FORWARDED_FOR")

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "bytes": %d, "status_errors": %d, "connect_errors": %d, ' ..
    '"read_errors": %d, "write_errors": %d, "timeouts": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, ' ..
    '"max_us": %d}\n',
    summary.requests, summary.duration, summary.bytes, errors.status, errors.connect, errors.read,
    errors.write, errors.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max))
end
