-- _count_tags.lua: one message counted per account, UTC day and tag, as a function that
-- tags_count.lua and message_accept.lua include (scripts.text() puts it in place of their
-- "-- include: _count_tags" line).
--
-- count_tags(key, ttl, cap, kind, tags)
--   key    PREFIX {ACCOUNT}:counts:DAY  hash  KIND and "tag:TAG:KIND" -> count (TTL);
--                                             "distinct:TAG" and "distinct": the day's tags
--                                             with counters of their own
--   ttl    TTL of the counters, seconds (events.counter_days)
--   cap    most distinct tags counted per account and day (events.tags_per_day); a tag of
--          the day beyond them is counted as "(other, folded)", once per message
--   kind   the kind counted: "accepted"
--   tags   the message's tags (a table)
--   returns the number of the message's tags counted as "(other, folded)"
--
-- The per-tag block is the one in event_record.lua, so accepted messages and their events
-- share the day's distinct tags.
local function count_tags(key, ttl, cap, kind, tags)
  redis.call('HINCRBY', key, kind, 1)
  local tags_cap = tonumber(cap)
  local folded = 0
  for _, tag in ipairs(tags) do
    if redis.call('HEXISTS', key, 'distinct:' .. tag) == 0 then
      if tonumber(redis.call('HGET', key, 'distinct') or '0') < tags_cap then
        redis.call('HSET', key, 'distinct:' .. tag, 1)
        redis.call('HINCRBY', key, 'distinct', 1)
      else
        tag = nil
      end
    end
    if tag then
      redis.call('HINCRBY', key, 'tag:' .. tag .. ':' .. kind, 1)
    else
      folded = folded + 1
    end
  end
  if folded > 0 then
    redis.call('HINCRBY', key, 'tag:(other, folded):' .. kind, 1)
  end
  redis.call('EXPIRE', key, ttl)
  return folded
end
