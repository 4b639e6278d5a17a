-- reputation_count.lua: reputation_record.lua for one outcome event, counted at most once: the
-- event's "counted:" mark in its message's seen hash is checked and set in the same call, so
-- the bounce pipe and the maillog follower (maillog_batch.lua, which marks the same way) cannot
-- both count the same outcome, and a retry after a crash counts what was left uncounted.
--
-- KEYS[1]  PREFIX {ACCOUNT}:seen:QID  hash  the message's seen marks (event_record.lua)
-- KEYS[2...] reputation_record.lua's KEYS
-- ARGV[1]  the mark's field: "counted:KIND:RECIPIENT" (event_record.lua's seen field)
-- ARGV[2...] reputation_record.lua's ARGV
--
-- Returns  reputation_record.lua's reply, or an empty list when the outcome was counted before

-- #include reputation_record

if redis.call('HGET', KEYS[1], ARGV[1]) == '1' then
  return {}
end
local keys, args = {}, {}
for i = 2, #KEYS do keys[#keys + 1] = KEYS[i] end
for i = 2, #ARGV do args[#args + 1] = ARGV[i] end
local reply = reputation_record(keys, args)
redis.call('HSET', KEYS[1], ARGV[1], '1')
return reply
