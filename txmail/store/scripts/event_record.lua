-- event_record.lua: record one event of an account, once per message, recipient and kind.
--
-- KEYS[1]  PREFIX {ACCOUNT}:events        stream  the account's events (field `event`: JSON)
-- KEYS[2]  PREFIX {ACCOUNT}:seen:QID      hash    "KIND:recipient" -> event id (TTL)
-- KEYS[3]  PREFIX {ACCOUNT}:counts:DAY    hash    KIND and "tag:TAG:KIND" -> count (TTL);
--                                                  "distinct:TAG" and "distinct": the day's
--                                                  tags with counters of their own, how many
-- KEYS[4]  PREFIX {ACCOUNT}:message:QID:events  list  the message's events as JSON (TTL)
-- KEYS[5]  PREFIX {ACCOUNT}:message:QID   hash    the message record (only its TTL is read)
-- KEYS[6]  PREFIX {ACCOUNT}:counts:all    hash    KIND -> count since the account began (no
--                                                  TTL): /metrics' txmail_events_total
-- ARGV[1]  field, "KIND:recipient" ("untrusted:KIND:recipient" for an untrusted event)
-- ARGV[2]  the event id
-- ARGV[3]  the event as JSON
-- ARGV[4]  TTL of the seen hash, seconds (as long as the message record lives)
-- ARGV[5]  TTL of the counters, seconds
-- ARGV[6]  "1": one event per message, recipient and kind (delivery, bounce, ...);
--          "0": every occurrence is counted, only the first goes to the stream (open, click)
-- ARGV[7]  the kind
-- ARGV[8]  for an untrusted event: the field of the trusted one ("KIND:recipient"); once that
--          is recorded the untrusted one is a duplicate. "" for a trusted event.
-- ARGV[9]  for an untrusted event: most untrusted events per message (field "untrusted" of the
--          seen hash counts them); "0": no cap
-- ARGV[10] most events the message's list keeps ("0": none)
-- ARGV[11...] the message's tags, then (the last ARGV) most distinct tags counted per account
--          and day (events.tags_per_day); tags of the day beyond that many are counted once
--          per event as "(other, folded)"
--
-- Returns {state, event id, counted} where state is 1 (recorded), 0 (a duplicate: nothing
-- written, the id is the one recorded first), 2 (a repeat of open/click: counted only) or 3
-- (untrusted, and the message has its cap of untrusted events: nothing written), and counted
-- is 1 when the reputation counters already have this outcome ("counted:" field).
--
-- A recorded event (state 1) is also appended to the message's list, which GET /v1/messages
-- reads whatever the event's age: the stream is trimmed, the list lives exactly as long as the
-- message record (its remaining TTL; none is written for a message without a record, such as
-- an event without a queue id). Once the list holds ARGV[10] events, later ones go to the
-- stream only and field "unlisted" of the seen hash counts them.
--
-- The stream is never trimmed here: only the webhooks dispatcher trims, and only what its
-- consumer group has acknowledged (events_trim.lua), so no event is lost before delivery.

local existing = redis.call('HGET', KEYS[2], ARGV[1])
local counted = redis.call('HEXISTS', KEYS[2], 'counted:' .. ARGV[1])
if existing and ARGV[6] == '1' then
  return {0, existing, counted}
end
if ARGV[8] ~= '' then
  local genuine = redis.call('HGET', KEYS[2], ARGV[8])
  if genuine then
    return {0, genuine, counted}
  end
  local cap = tonumber(ARGV[9])
  if cap > 0 and tonumber(redis.call('HGET', KEYS[2], 'untrusted') or '0') >= cap then
    return {3, '', counted}
  end
  redis.call('HINCRBY', KEYS[2], 'untrusted', 1)
end

local kind = ARGV[7]
redis.call('HINCRBY', KEYS[3], kind, 1)

-- all-time count by kind, monotonic (the day's hash above expires): txmail_events_total
if KEYS[6] then
  redis.call('HINCRBY', KEYS[6], kind, 1)
end

-- per tag and kind, within the day's cap of distinct tags (the same block as tags_count.lua)
local tags_cap = tonumber(ARGV[#ARGV])
local other = false
for i = 11, #ARGV - 1 do
  local tag = ARGV[i]
  if redis.call('HEXISTS', KEYS[3], 'distinct:' .. tag) == 0 then
    if tonumber(redis.call('HGET', KEYS[3], 'distinct') or '0') < tags_cap then
      redis.call('HSET', KEYS[3], 'distinct:' .. tag, 1)
      redis.call('HINCRBY', KEYS[3], 'distinct', 1)
    else
      tag = nil
    end
  end
  if tag then
    redis.call('HINCRBY', KEYS[3], 'tag:' .. tag .. ':' .. kind, 1)
  else
    other = true
  end
end
if other then
  redis.call('HINCRBY', KEYS[3], 'tag:(other, folded):' .. kind, 1)
end
-- end of the per-tag block

redis.call('EXPIRE', KEYS[3], ARGV[5])

if existing then
  return {2, existing, counted}
end

redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[4])
redis.call('XADD', KEYS[1], '*', 'event', ARGV[3])
local lives = redis.call('PTTL', KEYS[5])
if lives ~= -2 and tonumber(ARGV[10]) > 0 then
  if redis.call('LLEN', KEYS[4]) < tonumber(ARGV[10]) then
    redis.call('RPUSH', KEYS[4], ARGV[3])
    if lives > 0 then
      redis.call('PEXPIRE', KEYS[4], lives)
    else
      redis.call('EXPIRE', KEYS[4], ARGV[4])
    end
  else
    redis.call('HINCRBY', KEYS[2], 'unlisted', 1)
  end
end
return {1, ARGV[2], counted}
