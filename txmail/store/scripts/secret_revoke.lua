-- secret_revoke.lua: give one of the installation's HMAC keys a new value and drop the one it
-- replaces at once (after a leak): tokens signed before no longer verify anywhere.
--
-- KEYS[1]  PREFIX secret:NAME   hash  current, previous, rotated_at
-- ARGV[1]  the new key (text)
-- ARGV[2]  now (unix seconds)
--
-- Returns: 1 when there was a key to replace, else 0 (the new one is then the first).

local old = redis.call('HGET', KEYS[1], 'current')
redis.call('HDEL', KEYS[1], 'previous')
redis.call('HSET', KEYS[1], 'current', ARGV[1], 'rotated_at', ARGV[2])
if old then
  return 1
end
return 0
