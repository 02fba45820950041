-- wrk script: real request bodies with a unique transaction_id each, and an
-- optional fixed arrival rate (open loop, like wrk2).
--
-- Environment:
--   BENCH_PATH    path to request, e.g. /transactions (GET when it is /noop)
--   BENCH_BODIES  file of JSON bodies, one a line, without transaction_id
--   BENCH_PREFIX  prefix of the transaction ids (unique per run)
--   BENCH_RATE    requests per second over all threads; 0 = as fast as replies come
--   BENCH_KEY     X-API-Key to send (empty: none)
--
-- With a rate, request k of a thread is due at start + k / rate. Latency is
-- measured from that due time, not from when the request could be sent, so a
-- stalled server is charged for the requests that queued behind it
-- (no coordinated omission). Each request carries X-Request-Id, which the
-- gateway echoes, to match a reply with its due time.

local ffi = require("ffi")
ffi.cdef [[
  typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
  int clock_gettime(int clock, bench_timespec *ts);
]]
local ts = ffi.new("bench_timespec")
local function now_us()
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1e6 + tonumber(ts.tv_nsec) / 1e3
end

local threads = {}
local thread_count = 0

function setup(thread)
  thread_count = thread_count + 1
  thread:set("thread_index", thread_count)
  table.insert(threads, thread)
end

local path, bodies, prefix, key, period_us, method
local start_us, next_slot = nil, 0
local queue, queue_head, queue_tail = {}, 1, 0
local due_by_id = {}
latencies = {}
statuses = {}
sent = 0

function init(args)
  path = os.getenv("BENCH_PATH") or "/transactions"
  prefix = (os.getenv("BENCH_PREFIX") or "bench") .. "-" .. thread_index .. "-"
  key = os.getenv("BENCH_KEY") or ""
  local rate = tonumber(os.getenv("BENCH_RATE") or "0")
  local threads_n = tonumber(os.getenv("BENCH_THREADS") or "1")
  period_us = rate > 0 and (1e6 * threads_n / rate) or 0
  method = (path == "/noop" or path == "/health") and "GET" or "POST"
  bodies = {}
  local file = io.open(os.getenv("BENCH_BODIES") or "bench/perf_data/transactions.jsonl")
  if file then
    for line in file:lines() do
      if #line > 2 then table.insert(bodies, line) end
    end
    file:close()
  end
end

-- Called before each request: claim the next slot and wait for its due time.
function delay()
  if period_us == 0 then return 0 end
  local now = now_us()
  if start_us == nil then start_us = now end
  local due = start_us + next_slot * period_us
  next_slot = next_slot + 1
  queue_tail = queue_tail + 1
  queue[queue_tail] = due
  local wait_ms = (due - now) / 1000
  if wait_ms < 0 then return 0 end
  return math.floor(wait_ms)
end

function request()
  local due
  if period_us > 0 and queue_head <= queue_tail then
    due = queue[queue_head]
    queue[queue_head] = nil
    queue_head = queue_head + 1
  else
    due = now_us()
  end
  sent = sent + 1
  local id = prefix .. sent
  -- wrk delays in whole milliseconds, so a request may leave before its due
  -- time: then latency counts from when it left, never from a later instant.
  due_by_id[id] = math.min(due, now_us())
  local headers = { ["X-Request-Id"] = id }
  if key ~= "" then headers["X-API-Key"] = key end
  if method == "GET" then
    return wrk.format("GET", path, headers)
  end
  headers["Content-Type"] = "application/json"
  local body = bodies[(sent % #bodies) + 1]
  body = '{"transaction_id":"' .. id .. '",' .. body:sub(2)
  return wrk.format("POST", path, headers, body)
end

function response(status, headers, body)
  local id = headers["x-request-id"] or headers["X-Request-Id"]
  local due = id and due_by_id[id]
  if due then
    due_by_id[id] = nil
    table.insert(latencies, now_us() - due)
  end
  local key_s = tostring(status)
  statuses[key_s] = (statuses[key_s] or 0) + 1
end

function done(summary, latency, requests)
  local all = {}
  local by_status = {}
  for _, thread in ipairs(threads) do
    for _, v in ipairs(thread:get("latencies")) do table.insert(all, v) end
    for k, v in pairs(thread:get("statuses")) do
      by_status[k] = (by_status[k] or 0) + v
    end
  end
  table.sort(all)
  local function pct(p)
    if #all == 0 then return -1 end
    local i = math.max(1, math.min(#all, math.ceil(p / 100 * #all)))
    return all[i] / 1000
  end
  local parts = {}
  for k, v in pairs(by_status) do table.insert(parts, '"' .. k .. '":' .. v) end
  local errors = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"completed":%d,"duration_s":%.3f,"p50_ms":%.3f,"p90_ms":%.3f,' ..
    '"p99_ms":%.3f,"p999_ms":%.3f,"max_ms":%.3f,"statuses":{%s},' ..
    '"socket_errors":%d,"timeouts":%d}\n',
    #all, summary.duration / 1e6, pct(50), pct(90), pct(99), pct(99.9),
    pct(100), table.concat(parts, ","),
    errors.connect + errors.read + errors.write, errors.timeout))
end
