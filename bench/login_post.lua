-- wrk script: POST form bodies in turn (one per line of BENCH_BODIES, e.g. one login per user), with an
-- optional Authorization header, and print one JSON line of results at the end, like token_post.lua.
--   BENCH_BODIES         the form bodies, separated by newlines
--   BENCH_AUTHORIZATION  the Authorization header value (omitted when empty)

local bodies = {}
for line in string.gmatch(os.getenv("BENCH_BODIES") or "", "[^\n]+") do
  table.insert(bodies, line)
end
local headers = { ["Content-Type"] = "application/x-www-form-urlencoded" }
local authorization = os.getenv("BENCH_AUTHORIZATION") or ""
if authorization ~= "" then
  headers["Authorization"] = authorization
end
local next_body = 0

function request()
  next_body = next_body % #bodies + 1
  return wrk.format("POST", nil, headers, bodies[next_body])
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests": %d, "duration_us": %d, "connect": %d, "read": %d, "write": %d, '
      .. '"status": %d, "timeout": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
