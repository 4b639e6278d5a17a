-- suppression_add.lua: put one recipient on one of an account's suppression lists, atomically
-- dropping expired entries and, past the cap, the oldest ones.
--
-- KEYS[1]  PREFIX {ACCOUNT}:suppressions         hash  "LIST:recipient" -> JSON entry
-- KEYS[2]  PREFIX {ACCOUNT}:suppressions:order   zset  "LIST:recipient" by creation time
-- KEYS[3]  PREFIX {ACCOUNT}:suppressions:expiry  zset  "LIST:recipient" by expiry time
-- ARGV[1]  field, "LIST:recipient"
-- ARGV[2]  the entry as JSON
-- ARGV[3]  created_at (unix seconds)
-- ARGV[4]  expires_at (unix seconds), or "" for an entry that never expires
-- ARGV[5]  now (unix seconds): entries that expired before it are removed (at most 100 per call)
-- ARGV[6]  cap: most entries the account may hold; the oldest go first
--
-- Returns: 1 if the field existed already (the entry was replaced), else 0.

local expired = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', ARGV[5], 'LIMIT', 0, 100)
for _, field in ipairs(expired) do
  redis.call('HDEL', KEYS[1], field)
  redis.call('ZREM', KEYS[2], field)
  redis.call('ZREM', KEYS[3], field)
end

local existed = redis.call('HEXISTS', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
if ARGV[4] ~= '' then
  redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
else
  redis.call('ZREM', KEYS[3], ARGV[1])
end

local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[6])
if over > 0 then
  local oldest = redis.call('ZPOPMIN', KEYS[2], over)
  for i = 1, #oldest, 2 do
    redis.call('HDEL', KEYS[1], oldest[i])
    redis.call('ZREM', KEYS[3], oldest[i])
  end
end
return existed
