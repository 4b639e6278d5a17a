-- auth_report.lua: a login succeeded: remember its client and give back what the check counted.
--
-- KEYS[1]  PREFIX {LOGIN}:auth:failures  hash  score (recent failures), at (time of score) (TTL)
-- KEYS[2]  PREFIX {LOGIN}:auth:known     zset  fingerprint -> time of its last login (TTL)
-- ARGV[1]  now, seconds since 1970
-- ARGV[2]  the attempt's fingerprint (login, client network, password hash; keyed)
-- ARGV[3]  forgive_seconds: one failure is forgotten per this many seconds
-- ARGV[4]  remember_seconds: how long a fingerprint stays known after its last login
-- ARGV[5]  remember_max: most fingerprints kept per login (the least recent go first)
--
-- Returns 1 when the fingerprint was new (its client just became known), else 0.
-- Only successes are reported here: a failure was already counted by auth_check.lua.

local now = tonumber(ARGV[1])
local forgive = tonumber(ARGV[3])
local remember = tonumber(ARGV[4])

local seen = tonumber(redis.call('ZSCORE', KEYS[2], ARGV[2]))
local new = 0
if not (seen and now - seen <= remember) then
  -- auth_check.lua counted this attempt as a possible failure: it was not one.
  new = 1
  local state = redis.call('HMGET', KEYS[1], 'score', 'at')
  local score = tonumber(state[1])
  if score then
    local at = tonumber(state[2]) or now
    if now > at then
      score = math.max(0, score - (now - at) / forgive)
    end
    score = math.max(0, score - 1)
    redis.call('HSET', KEYS[1], 'score', string.format('%.6f', score), 'at', ARGV[1])
    redis.call('EXPIRE', KEYS[1], math.ceil(score * forgive) + 1)
  end
end

redis.call('ZADD', KEYS[2], now, ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. tostring(now - remember))
redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -(tonumber(ARGV[5]) + 1))
redis.call('EXPIRE', KEYS[2], math.ceil(remember))
return new
