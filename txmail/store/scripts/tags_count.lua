-- tags_count.lua: count one accepted message per account, UTC day and tag.
--
-- KEYS[1]  PREFIX {ACCOUNT}:counts:DAY    hash    "accepted" and "tag:TAG:accepted" -> count
--                                                  (TTL); "distinct:TAG" and "distinct": the
--                                                  day's tags with counters of their own
-- ARGV[1]  TTL of the counters, seconds (events.counter_days)
-- ARGV[2]  most distinct tags counted per account and day (events.tags_per_day); a tag of the
--          day beyond them is counted as "(other, folded)", once per message
-- ARGV[3]  the kind counted: "accepted"
-- ARGV[4...] the message's tags
--
-- The per-tag block is the one in event_record.lua, so accepted messages and their events
-- share the day's distinct tags. Returns the number of the message's tags counted as
-- "(other, folded)".

local kind = ARGV[3]
redis.call('HINCRBY', KEYS[1], kind, 1)

local tags_cap = tonumber(ARGV[2])
local folded = 0
for i = 4, #ARGV do
  local tag = ARGV[i]
  if redis.call('HEXISTS', KEYS[1], 'distinct:' .. tag) == 0 then
    if tonumber(redis.call('HGET', KEYS[1], 'distinct') or '0') < tags_cap then
      redis.call('HSET', KEYS[1], 'distinct:' .. tag, 1)
      redis.call('HINCRBY', KEYS[1], 'distinct', 1)
    else
      tag = nil
    end
  end
  if tag then
    redis.call('HINCRBY', KEYS[1], 'tag:' .. tag .. ':' .. kind, 1)
  else
    folded = folded + 1
  end
end
if folded > 0 then
  redis.call('HINCRBY', KEYS[1], 'tag:(other, folded):' .. kind, 1)
end

redis.call('EXPIRE', KEYS[1], ARGV[1])
return folded
