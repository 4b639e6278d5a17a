-- event_record.lua: record one event of an account, once per message, recipient and kind.
--
-- KEYS[1]  PREFIX {ACCOUNT}:events        stream  the account's events (field `event`: JSON)
-- KEYS[2]  PREFIX {ACCOUNT}:seen:QID      hash    "KIND:recipient" -> event id (TTL)
-- KEYS[3]  PREFIX {ACCOUNT}:counts:DAY    hash    KIND and "tag:TAG:KIND" -> count (TTL)
-- ARGV[1]  field, "KIND:recipient"
-- ARGV[2]  the event id
-- ARGV[3]  the event as JSON
-- ARGV[4]  TTL of the seen hash, seconds (as long as the message record lives)
-- ARGV[5]  TTL of the counters, seconds
-- ARGV[6]  "1": one event per message, recipient and kind (delivery, bounce, ...);
--          "0": every occurrence is counted, only the first goes to the stream (open, click)
-- ARGV[7]  the kind
-- ARGV[8...] the message's tags
--
-- Returns {state, event id, counted} where state is 1 (recorded), 0 (a duplicate: nothing
-- written, the id is the one recorded first) or 2 (a repeat of open/click: counted only), and
-- counted is 1 when the reputation counters already have this outcome ("counted:" field).
--
-- The stream is never trimmed here: only the webhooks dispatcher trims, and only what its
-- consumer group has acknowledged (events_trim.lua), so no event is lost before delivery.

local existing = redis.call('HGET', KEYS[2], ARGV[1])
local counted = redis.call('HEXISTS', KEYS[2], 'counted:' .. ARGV[1])
if existing and ARGV[6] == '1' then
  return {0, existing, counted}
end

local kind = ARGV[7]
redis.call('HINCRBY', KEYS[3], kind, 1)
for i = 8, #ARGV do
  redis.call('HINCRBY', KEYS[3], 'tag:' .. ARGV[i] .. ':' .. kind, 1)
end
redis.call('EXPIRE', KEYS[3], ARGV[5])

if existing then
  return {2, existing, counted}
end

redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[4])
redis.call('XADD', KEYS[1], '*', 'event', ARGV[3])
return {1, ARGV[2], counted}
