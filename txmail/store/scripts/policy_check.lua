-- policy_check.lua: one policyd decision, atomically. Are the account's limits still free for
-- this request (counted usage + the holds of messages in flight + this request), and if so and
-- asked to, hold the request's share until the milter counts it (policy_commit.lua) or it is
-- given back (policy_release.lua, or the hold lapses).
--
-- KEYS[1]  PREFIX {ACCOUNT}:usage:m:MINUTE   hash m r b: counted this minute
-- KEYS[2]  PREFIX {ACCOUNT}:usage:h:HOUR     hash m r b: counted this hour
-- KEYS[3]  PREFIX {ACCOUNT}:usage:d:DAY      hash m r b: counted this UTC day
-- KEYS[4]  PREFIX {ACCOUNT}:holds            hash QID -> "m r b", and the sums *m *r *b
-- KEYS[5]  PREFIX {ACCOUNT}:holds:expiry     zset QID by the time its hold lapses
-- KEYS[6]  PREFIX {ACCOUNT}:warmup           hash days, last, created
--
-- ARGV[1]  the request, ten words separated by spaces (one argument, because packing each
--          argument costs the caller more than splitting them here):
--            now (seconds since 1970), today (UTC days since 1970), messages, recipients and
--            bytes of this request, when a hold taken now lapses, most holds one account may
--            have in flight, the queue id to hold this request under ("-": check only), the
--            queue id whose hold to give back first ("-": none), the account's created_at
--            (a re-created account starts its warm-up again)
-- ARGV[2]  the limits, space-separated, each BUCKET FIELD VALUE run together: bucket 1 minute,
--          2 hour, 3 day; field m, r or b; e.g. "3b5368709120 3m50000 1m100"
-- ARGV[3]  recipient quotas of warm-up days 1, 2, ..., space-separated; "" when the account is
--          not warming up
--
-- Returns  {0, m, r, b}           everything fits (and the hold was taken); m, r and b are the
--                                 room left in messages, recipients and bytes (counted + held
--                                 + this request against the tightest limit of each; -1 when
--                                 nothing limits it), which lets policyd answer the next
--                                 RCPT requests of a busy account without asking again
--          {1, i, used}           limit i (1-based, in ARGV[2] order) is reached; used =
--                                 counted + held, without this request
--          {2, day, quota, used}  the warm-up quota of warm-up day `day` is reached
--          {3, holds}             the account has too many messages in flight

-- Holds live in memory only: they are not written to the append-only file or to replicas, so
-- a check costs Redis no fsync (appendfsync always). A Redis that restarts has forgotten the
-- messages in flight, and the milter counts those from its own figures (policy_commit.lua);
-- one restarted from an AOF rewrite may still hold messages counted since, until they lapse.
redis.set_repl(redis.REPL_NONE)

local word = {}
for w in string.gmatch(ARGV[1], '%S+') do word[#word + 1] = w end
local now, today = tonumber(word[1]), word[2]
local want = {m = tonumber(word[3]), r = tonumber(word[4]), b = tonumber(word[5])}
local hold_until, max_holds = tonumber(word[6]), tonumber(word[7])
local hold_id, release_id, created = word[8], word[9], word[10]
if hold_id == '-' then hold_id = '' end
if release_id == '-' then release_id = '' end

local function drop(qid)
  local share = redis.call('HGET', KEYS[4], qid)
  if share then
    local m, r, b = string.match(share, '^(%d+) (%d+) (%d+)$')
    redis.call('HINCRBY', KEYS[4], '*m', -tonumber(m))
    redis.call('HINCRBY', KEYS[4], '*r', -tonumber(r))
    redis.call('HINCRBY', KEYS[4], '*b', -tonumber(b))
    redis.call('HDEL', KEYS[4], qid)
  end
  redis.call('ZREM', KEYS[5], qid)
end

-- Holds of messages that never reached the milter's count lapse here.
local lapsed = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', now, 'LIMIT', 0, 100)
for _, qid in ipairs(lapsed) do drop(qid) end
if release_id ~= '' then drop(release_id) end
if hold_id ~= '' then drop(hold_id) end

local held = redis.call('HMGET', KEYS[4], '*m', '*r', '*b')
held = {m = tonumber(held[1]) or 0, r = tonumber(held[2]) or 0, b = tonumber(held[3]) or 0}
local buckets = {}
for i = 1, 3 do
  local row = redis.call('HMGET', KEYS[i], 'm', 'r', 'b')
  buckets[i] = {m = tonumber(row[1]) or 0, r = tonumber(row[2]) or 0, b = tonumber(row[3]) or 0}
end

local room = {m = -1, r = -1, b = -1}
local function narrow(field, left)
  if room[field] < 0 or left < room[field] then room[field] = left end
end

local i = 0
for bucket, field, value in string.gmatch(ARGV[2], '(%d)(%a)(%d+)') do
  i = i + 1
  local used = buckets[tonumber(bucket)][field] + held[field]
  if want[field] > 0 and used + want[field] > tonumber(value) then
    return {1, i, used}
  end
  narrow(field, tonumber(value) - used - want[field])
end

if ARGV[3] ~= '' then
  local quotas = {}
  for quota in string.gmatch(ARGV[3], '%d+') do quotas[#quotas + 1] = tonumber(quota) end
  local state = redis.call('HMGET', KEYS[6], 'days', 'last', 'created')
  local days, last = tonumber(state[1]) or 0, state[2]
  if state[3] ~= created then days, last = 0, nil end
  local day = days
  if last ~= today then day = days + 1 end
  if day <= #quotas then
    local used = buckets[3].r + held.r
    if want.r > 0 and used + want.r > quotas[day] then
      return {2, day, quotas[day], used}
    end
    narrow('r', quotas[day] - used - want.r)
  end
end

if hold_id ~= '' then
  local in_flight = redis.call('ZCARD', KEYS[5])
  if in_flight >= max_holds then
    return {3, in_flight}
  end
  redis.call('HSET', KEYS[4], hold_id, want.m .. ' ' .. want.r .. ' ' .. want.b)
  redis.call('HINCRBY', KEYS[4], '*m', want.m)
  redis.call('HINCRBY', KEYS[4], '*r', want.r)
  redis.call('HINCRBY', KEYS[4], '*b', want.b)
  redis.call('ZADD', KEYS[5], hold_until, hold_id)
  local ttl = math.ceil(hold_until - now) + 60
  redis.call('EXPIRE', KEYS[4], ttl)
  redis.call('EXPIRE', KEYS[5], ttl)
end
return {0, room.m, room.r, room.b}
