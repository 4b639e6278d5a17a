-- _commit.lua: the count of one accepted message against its account's limits, as a function
-- that policy_commit.lua and message_accept.lua include (scripts.text() puts it in place of
-- their "-- include: _commit" line). The message's hold (taken by policy_check.lua at end of
-- data) becomes counted usage; without a hold (it lapsed) the milter's own figures are
-- counted. On the first message of a UTC day the account's warm-up moves on by one sending day.
--
-- commit(k, qid, today, recipients, bytes, ttls, warm_default)
--   k             the 7 keys: PREFIX {ACCOUNT}:usage:m:MINUTE, :usage:h:HOUR, :usage:d:DAY
--                 (hashes m r b), :holds (hash QID -> "m r b", and the sums *m *r *b),
--                 :holds:expiry (zset QID by the time its hold lapses), :warmup (hash days,
--                 last, created), :account (hash the account: set.warmup, created_at)
--   today         UTC days since 1970; recipients, bytes: as the milter saw them (used when
--                 there is no hold); ttls: TTLs of the minute, hour and day buckets;
--                 warm_default: "1" when accounts warm up unless set.warmup says otherwise
--   returns       {m, r, b, held}: what was counted, and 1 if it came from the hold, else 0
-- It leaves replication on (REPL_ALL) for what the caller writes after it.
local function commit(k, qid, today, recipients, bytes, ttls, warm_default)
  local m, r, b, held = 1, tonumber(recipients), tonumber(bytes), 0
  redis.set_repl(redis.REPL_NONE)  -- holds live in memory only (policy_check.lua)
  local share = redis.call('HGET', k[4], qid)
  if share then
    local hm, hr, hb = string.match(share, '^(%d+) (%d+) (%d+)$')
    m, r, b, held = tonumber(hm), tonumber(hr), tonumber(hb), 1
    redis.call('HINCRBY', k[4], '*m', -m)
    redis.call('HINCRBY', k[4], '*r', -r)
    redis.call('HINCRBY', k[4], '*b', -b)
    redis.call('HDEL', k[4], qid)
  end
  redis.call('ZREM', k[5], qid)
  redis.set_repl(redis.REPL_ALL)  -- what is counted goes to the AOF and the replicas

  -- A bucket's TTL is set when the bucket is made (its m was 0: every count writes m, r and
  -- b together, in this script, and nothing else writes a bucket) and not again on each
  -- count: a bucket is only read in its own window, which its TTL outlives from the first
  -- count on, so an EXPIRE (and its line in the AOF) per bucket and message buys nothing.
  for i = 1, 3 do
    local made = redis.call('HINCRBY', k[i], 'm', m) == m
    redis.call('HINCRBY', k[i], 'r', r)
    redis.call('HINCRBY', k[i], 'b', b)
    if made then redis.call('EXPIRE', k[i], tonumber(ttls[i])) end
  end

  local account = redis.call('HMGET', k[7], 'set.warmup', 'created_at')
  local warming = account[1]
  if warming then warming = (warming == 'true') else warming = (warm_default == '1') end
  if warming then
    local state = redis.call('HMGET', k[6], 'days', 'last', 'created')
    local days, last = tonumber(state[1]) or 0, state[2]
    if state[3] ~= account[2] then days, last = 0, nil end
    if last ~= today then
      redis.call('HSET', k[6], 'days', days + 1, 'last', today, 'created', account[2] or '')
    end
  end
  return {m, r, b, held}
end
