-- append_events.lua — append live events (streamed tokens) to a conversation's bounded event log.
--
-- KEYS[1]  event stream       sf:{tenant:id}:e
--
-- ARGV[1]  event log length (older entries are trimmed)
-- ARGV[2]  event log ttl, ms (refreshed on every append)
-- ARGV[3 ..] events (JSON)
--
-- Returns the number of events appended.

for i = 3, #ARGV do
  redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[1], '*', 'd', ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return #ARGV - 2
