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
-- The counting is _count_tags.lua's. Returns the number of the message's tags counted as
-- "(other, folded)".

-- include: _count_tags

local tags = {}
for i = 4, #ARGV do tags[#tags + 1] = ARGV[i] end
return count_tags(KEYS[1], ARGV[1], ARGV[2], ARGV[3], tags)
