-- policy_commit.lua: count one accepted message against its account's limits. The milter calls
-- it at end of message, after every rule has passed, so only accepted messages count. The
-- message's hold (taken by policy_check.lua at end of data) becomes counted usage; without a
-- hold (it lapsed) the milter's own figures are counted. On the first message of a UTC day the
-- account's warm-up moves on by one sending day.
--
-- KEYS[1]  PREFIX {ACCOUNT}:usage:m:MINUTE   hash m r b
-- KEYS[2]  PREFIX {ACCOUNT}:usage:h:HOUR     hash m r b
-- KEYS[3]  PREFIX {ACCOUNT}:usage:d:DAY      hash m r b
-- KEYS[4]  PREFIX {ACCOUNT}:holds            hash QID -> "m r b", and the sums *m *r *b
-- KEYS[5]  PREFIX {ACCOUNT}:holds:expiry     zset QID by the time its hold lapses
-- KEYS[6]  PREFIX {ACCOUNT}:warmup           hash days, last, created
-- KEYS[7]  PREFIX {ACCOUNT}:account          hash the account (set.warmup, created_at)
--
-- ARGV[1]  queue id
-- ARGV[2]  today (UTC days since 1970)
-- ARGV[3]  recipients, ARGV[4] bytes as the milter saw them (used when there is no hold)
-- ARGV[5]  TTL of the minute bucket, ARGV[6] of the hour bucket, ARGV[7] of the day bucket
-- ARGV[8]  "1" when accounts warm up unless set.warmup says otherwise, else "0"
--
-- Returns  {m, r, b, held}: what was counted, and 1 if it came from the hold, else 0

local qid = ARGV[1]
local m, r, b, held = 1, tonumber(ARGV[3]), tonumber(ARGV[4]), 0
redis.set_repl(redis.REPL_NONE)  -- holds live in memory only (policy_check.lua)
local share = redis.call('HGET', KEYS[4], qid)
if share then
  local hm, hr, hb = string.match(share, '^(%d+) (%d+) (%d+)$')
  m, r, b, held = tonumber(hm), tonumber(hr), tonumber(hb), 1
  redis.call('HINCRBY', KEYS[4], '*m', -m)
  redis.call('HINCRBY', KEYS[4], '*r', -r)
  redis.call('HINCRBY', KEYS[4], '*b', -b)
  redis.call('HDEL', KEYS[4], qid)
end
redis.call('ZREM', KEYS[5], qid)
redis.set_repl(redis.REPL_ALL)  -- what is counted goes to the AOF and the replicas

for i = 1, 3 do
  redis.call('HINCRBY', KEYS[i], 'm', m)
  redis.call('HINCRBY', KEYS[i], 'r', r)
  redis.call('HINCRBY', KEYS[i], 'b', b)
  redis.call('EXPIRE', KEYS[i], tonumber(ARGV[4 + i]))
end

local account = redis.call('HMGET', KEYS[7], 'set.warmup', 'created_at')
local warming = account[1]
if warming then warming = (warming == 'true') else warming = (ARGV[8] == '1') end
if warming then
  local state = redis.call('HMGET', KEYS[6], 'days', 'last', 'created')
  local days, last = tonumber(state[1]) or 0, state[2]
  if state[3] ~= account[2] then days, last = 0, nil end
  if last ~= ARGV[2] then
    redis.call('HSET', KEYS[6], 'days', days + 1, 'last', ARGV[2], 'created', account[2] or '')
  end
end
return {m, r, b, held}
