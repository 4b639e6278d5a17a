-- auth_check.lua: before Dovecot checks a password, what is known of the attempt; count it.
--
-- KEYS[1]  PREFIX {LOGIN}:auth:failures  hash  score (recent failures), at (time of score) (TTL)
-- KEYS[2]  PREFIX {LOGIN}:auth:known     zset  fingerprint -> time of its last login
-- ARGV[1]  now, seconds since 1970
-- ARGV[2]  the attempt's fingerprint (login, client network, password hash; keyed)
-- ARGV[3]  forgive_seconds: one failure is forgotten per this many seconds
-- ARGV[4]  reject_failures: from this score on, unknown attempts are refused and not counted
-- ARGV[5]  remember_seconds: how long a fingerprint stays known after its last login
--
-- Returns {known, score} where known is 1 when the fingerprint logged in within
-- remember_seconds, and score is the login's recent failures before this attempt, as a string.
-- A failure counts whole until it is wholly forgiven: the recent failures are the score rounded
-- up (decide.recent()), so a partly forgiven one gives no extra attempt.
-- An unknown attempt below reject_failures is counted now, as a failure, before its password
-- is checked: parallel guesses each see the ones before them. auth_report.lua gives it back
-- when the login succeeds. A known or refused attempt changes nothing.

local now = tonumber(ARGV[1])
local forgive = tonumber(ARGV[3])

local state = redis.call('HMGET', KEYS[1], 'score', 'at')
local score = tonumber(state[1]) or 0
local at = tonumber(state[2]) or now
if now > at then
  score = math.max(0, score - (now - at) / forgive)
end

local seen = tonumber(redis.call('ZSCORE', KEYS[2], ARGV[2]))
if seen and now - seen <= tonumber(ARGV[5]) then
  return {1, string.format('%.6f', score)}
end
if math.ceil(score - 1e-6) >= tonumber(ARGV[4]) then
  return {0, string.format('%.6f', score)}
end

local counted = score + 1
redis.call('HSET', KEYS[1], 'score', string.format('%.6f', counted), 'at', ARGV[1])
redis.call('EXPIRE', KEYS[1], math.ceil(counted * forgive) + 1)
return {0, string.format('%.6f', score)}
