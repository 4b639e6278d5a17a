-- message_accept.lua: everything the milter writes in its account's slot for one accepted
-- message, in one call: the message record, the account's tag totals, the day's counts by tag
-- (_count_tags.lua) and, when asked, the count against the sending limits (_commit.lua). The
-- writes outside the slot (PREFIX queue:QID, PREFIX msgid:ID, PREFIX stats:messages) go in the
-- same pipeline as plain commands (store/messages.py, Messages.accept).
--
-- KEYS[1]   PREFIX {ACCOUNT}:message:QID       hash  the record (TTL)
-- KEYS[2]   PREFIX {ACCOUNT}:tags              hash  TAG -> messages accepted with it
-- KEYS[3]   PREFIX {ACCOUNT}:counts:DAY        hash  the day's counts (_count_tags.lua)
-- KEYS[4..10]  the keys of policy_commit.lua, in its order (_commit.lua)
--
-- ARGV[1]   TTL of the record, seconds
-- ARGV[2]   "1": count the message against the sending limits, "0": do not (no KEYS[4..10]
--           are touched)
-- ARGV[3..10]  ARGV[1..8] of policy_commit.lua (queue id, today, recipients, bytes, the three
--           bucket TTLs, whether accounts warm up by default); unused with ARGV[2] = "0"
-- ARGV[11]  TTL of the day's counts, ARGV[12] most distinct tags a day, ARGV[13] the kind
--           counted ("accepted") (tags_count.lua's ARGV[1..3])
-- ARGV[14]  the number of tags T, then ARGV[15..14+T] the tags
-- ARGV[15+T...]  the record's fields and values, in pairs
--
-- Returns   {folded, m, r, b, held}: how many tags were counted as "(other, folded)", then
--           policy_commit.lua's answer ({0, 0, 0, 0} when not counted)

-- include: _commit

-- include: _count_tags

local tag_count = tonumber(ARGV[14])
local tags = {}
for i = 15, 14 + tag_count do tags[#tags + 1] = ARGV[i] end

local counted = {0, 0, 0, 0}
if ARGV[2] == '1' then
  counted = commit(
    {KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10]},
    ARGV[3], ARGV[4], ARGV[5], ARGV[6], {ARGV[7], ARGV[8], ARGV[9]}, ARGV[10])
end

local fields = {}
for i = 15 + tag_count, #ARGV do fields[#fields + 1] = ARGV[i] end
if #fields > 0 then
  redis.call('HSET', KEYS[1], unpack(fields))
  redis.call('EXPIRE', KEYS[1], ARGV[1])
end

for _, tag in ipairs(tags) do
  redis.call('HINCRBY', KEYS[2], tag, 1)
end
local folded = count_tags(KEYS[3], ARGV[11], ARGV[12], ARGV[13], tags)
return {folded, counted[1], counted[2], counted[3], counted[4]}
