-- post_random.lua — wrk script: POST {"text":"hello"} to /v1/conversations/c<N>/messages, N uniform in
-- 0 .. CONVERSATIONS-1 (env SF_BENCH_CONVERSATIONS, default 10000). Every app in benchmarks/apps serves this path.
--
-- wrk -t1 -c64 -d10s --latency -s benchmarks/wrk/post_random.lua http://127.0.0.1:PORT

local conversations = tonumber(os.getenv("SF_BENCH_CONVERSATIONS") or "10000")
local body = '{"text":"hello"}'
local headers = { ["Content-Type"] = "application/json" }

function setup(thread)
  thread:set("seed", math.random(1, 2 ^ 30))
end

function init(args)
  math.randomseed(os.time() + (seed or 0))
end

function request()
  local path = "/v1/conversations/c" .. math.random(0, conversations - 1) .. "/messages"
  return wrk.format("POST", path, headers, body)
end
