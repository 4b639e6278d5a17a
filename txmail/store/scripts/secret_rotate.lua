-- secret_rotate.lua: give one of the installation's HMAC keys a new value, keeping the one it
-- replaces as `previous` (tokens signed with it keep verifying until the next rotation).
--
-- KEYS[1]  PREFIX secret:NAME   hash  current, previous, rotated_at
-- ARGV[1]  the new key (text)
-- ARGV[2]  now (unix seconds)
--
-- Returns: 1 when there was a key to replace, else 0 (the new one is then the first).

local old = redis.call('HGET', KEYS[1], 'current')
if old then
  redis.call('HSET', KEYS[1], 'previous', old)
else
  redis.call('HDEL', KEYS[1], 'previous')
end
redis.call('HSET', KEYS[1], 'current', ARGV[1], 'rotated_at', ARGV[2])
if old then
  return 1
end
return 0
