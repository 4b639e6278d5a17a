-- maillog_batch.lua: everything one batch of maillog lines writes, and the follower's position
-- after it, in one atomic call: a crash of the machine under appendfsync everysec loses both
-- or neither, so the follower reads again the lines whose writes were lost, as long as the log
-- still holds them: a log that lost more than Redis is read from its start (the follower's
-- fingerprint of the bytes before its offset, txmail/maillog/follower.py; server.py). A single
-- Redis only: the items touch several accounts' slots.
--
-- KEYS[1]  PREFIX maillog:position:NODE:SOURCE  string  the follower's position (JSON)
-- KEYS[2...] the items' keys, in item order
-- ARGV[1]  the position after the batch's last line; "" leaves KEYS[1] alone (a batch cut in
--          parts: only the last part says where the follower is)
-- ARGV[2]  the number of items
-- ARGV[3...] the items, each: its op, how many KEYS it takes, how many ARGV, then its ARGV.
--
--   attempt     KEYS: the seen hash of the message. ARGV: recipient, the line's delay= (total
--               seconds since the message arrived; "" when the line has none), TTL.
--               Counts one failed delivery attempt in "attempts:RECIPIENT" unless a line with
--               this delay or a later one was counted already ("attempt-delay:RECIPIENT"):
--               every attempt of a message is later than the one before, so a line read again
--               is not counted twice. The count is put into the next item's event JSON, in
--               place of "attempts":null. Returns the count.
--   event       KEYS and ARGV: event_record.lua's. Returns its reply.
--   reputation  KEYS: the seen hash, then reputation_record.lua's. ARGV: the "counted:" field,
--               then reputation_record.lua's. Runs after an event item when that event was
--               recorded or was a duplicate (not capped) and the reputation counters do not
--               have it yet; marks it counted in the same call. Returns reputation_record's
--               reply, or an empty list when it did not count.
--   suppress    KEYS and ARGV: suppression_add.lua's. Runs unless the event before it was
--               capped, or was a duplicate whose entry is on the list already (a line read
--               again keeps the entry as it was; a duplicate without one, a crash's between
--               the event and the entry, gets it). Returns its reply (1 when the entry was
--               there), or -1.
--
-- Returns the items' replies in order.

-- #include event_record
-- #include reputation_record
-- #include suppression_add

local function slice(list, from, count)
  local out = {}
  for i = 1, count do
    out[i] = list[from + i - 1]
  end
  return out
end

local replies = {}
local k, a = 2, 3
local attempts = nil
local last = nil -- the reply of the last event item
for item = 1, tonumber(ARGV[2]) do
  local op, nkeys, nargs = ARGV[a], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local keys, args = slice(KEYS, k, nkeys), slice(ARGV, a + 3, nargs)
  k, a = k + nkeys, a + 3 + nargs
  local reply
  if op == 'attempt' then
    local field, mark = 'attempts:' .. args[1], 'attempt-delay:' .. args[1]
    local seen = redis.call('HGET', keys[1], mark)
    if args[2] == '' or not seen or tonumber(args[2]) > tonumber(seen) then
      redis.call('HINCRBY', keys[1], field, 1)
      if args[2] ~= '' then
        redis.call('HSET', keys[1], mark, args[2])
      end
    end
    redis.call('EXPIRE', keys[1], args[3])
    attempts = tonumber(redis.call('HGET', keys[1], field) or '0')
    reply = attempts
  elseif op == 'event' then
    if attempts then
      args[3] = string.gsub(args[3], '"attempts":null', '"attempts":' .. attempts, 1)
      attempts = nil
    end
    last = event_record(keys, args)
    reply = last
  elseif op == 'reputation' then
    reply = {}
    if last and tonumber(last[1]) ~= 3 and tonumber(last[3]) == 0 then
      reply = reputation_record(slice(keys, 2, nkeys - 1), slice(args, 2, nargs - 1))
      redis.call('HSET', keys[1], args[1], '1')
    end
  elseif op == 'suppress' then
    reply = -1
    if last and tonumber(last[1]) == 0 and redis.call('HEXISTS', keys[1], args[1]) == 1 then
      reply = 1 -- a line read again: its entry is there, created when the event was recorded
    elseif not last or tonumber(last[1]) ~= 3 then
      reply = suppression_add(keys, args)
    end
  else
    return redis.error_reply('maillog_batch: unknown item ' .. tostring(op))
  end
  replies[item] = reply
end
if ARGV[1] ~= '' then
  redis.call('SET', KEYS[1], ARGV[1])
end
return replies
