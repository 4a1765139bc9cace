-- load.lua — a consistent snapshot of one conversation.
--
-- KEYS[1]  meta hash          sf:{tenant:id}:m
-- KEYS[2]  history list       sf:{tenant:id}:h
-- KEYS[3]  state string       sf:{tenant:id}:s
-- KEYS[4]  inbox list         sf:{tenant:id}:i
--
-- ARGV: none.
--
-- Returns nil when the conversation does not exist, else
--   {version, turns, created µs, active µs, live lease owner|nil, state|nil, pending, history...}

local meta, hist, state, inbox = KEYS[1], KEYS[2], KEYS[3], KEYS[4]

local r = redis.call('HMGET', meta, 'v', 'n', 'c', 'a', 'o', 'x')
if not r[1] then
  return false
end
local owner = false
if r[5] and tonumber(r[6] or 0) > clock() then
  owner = r[5]
end
local out = {r[1], r[2], r[3], r[4], owner, redis.call('GET', state) or false, redis.call('LLEN', inbox)}
for _, utterance in ipairs(redis.call('LRANGE', hist, 0, -1)) do
  out[#out + 1] = utterance
end
return out
