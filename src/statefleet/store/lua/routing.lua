-- routing.lua — replace the fleet's routing weights if their revision is still the one the caller read, and log
-- the change (store/redis.py, RedisStore.set_routing).
--
-- KEYS[1]  routing hash  sf:{routing}      (w: weights JSON, r: revision)
-- KEYS[2]  change log    sf:{routing}:log  (a list, newest first)
--
-- ARGV[1]  the revision the caller read ('': whatever it is now)
-- ARGV[2]  the new weights, JSON
-- ARGV[3]  the change, a JSON object (old, new and revision are filled in here)
-- ARGV[4]  log entries kept
--
-- Returns {1, revision, weights JSON} when changed, {0, revision, weights JSON} (the current ones) when the
-- revision moved on since the caller read it.

local r = redis.call('HMGET', KEYS[1], 'w', 'r')
local old, revision = r[1] or '{}', tonumber(r[2] or 0)
if ARGV[1] ~= '' and tonumber(ARGV[1]) ~= revision then
  return {0, revision, old}
end
revision = revision + 1
redis.call('HSET', KEYS[1], 'w', ARGV[2], 'r', revision)
local change = cjson.decode(ARGV[3])
change['old'] = cjson.decode(old)
change['new'] = cjson.decode(ARGV[2])
change['revision'] = revision
redis.call('LPUSH', KEYS[2], cjson.encode(change))
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[4]) - 1)
return {1, revision, ARGV[2]}
