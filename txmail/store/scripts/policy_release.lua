-- policy_release.lua: give back the hold of a message that passed policyd at end of data but
-- was not counted (the milter or Postfix refused it afterwards). policyd calls it when the same
-- Postfix process sends its next request or closes the connection: by then the message's fate
-- is sealed, and an accepted message has already turned its hold into counted usage.
--
-- KEYS[1]  PREFIX {ACCOUNT}:holds            hash QID -> "m r b", and the sums *m *r *b
-- KEYS[2]  PREFIX {ACCOUNT}:holds:expiry     zset QID by the time its hold lapses
--
-- ARGV[1]  queue id
--
-- Returns  1 if a hold was given back, 0 if there was none (counted, lapsed or never taken)

redis.set_repl(redis.REPL_NONE)  -- holds live in memory only (policy_check.lua)
local share = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
if not share then return 0 end
local m, r, b = string.match(share, '^(%d+) (%d+) (%d+)$')
redis.call('HINCRBY', KEYS[1], '*m', -tonumber(m))
redis.call('HINCRBY', KEYS[1], '*r', -tonumber(r))
redis.call('HINCRBY', KEYS[1], '*b', -tonumber(b))
redis.call('HDEL', KEYS[1], ARGV[1])
return 1
