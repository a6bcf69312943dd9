-- wrk script for bench_api_load.py --generator wrk: POST /predict with the JSON bodies of the file named after
-- `--` (one per line), in turn; at the end one line "WRK_JSON {...}" with the counts and latency percentiles (us).
local bodies, i = {}, 0

function init(args)
  for line in io.lines(args[1]) do
    bodies[#bodies + 1] = line
  end
end

function request()
  i = i % #bodies + 1
  return wrk.format("POST", "/predict", { ["Content-Type"] = "application/json" }, bodies[i])
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "connect": %d, "read": %d, "write": %d, "status": %d, '
      .. '"timeout": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %.1f}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean
  ))
end
