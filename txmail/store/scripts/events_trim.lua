-- events_trim.lua: trim an account's event stream to its cap, but never past an event the
-- webhooks consumer group has not acknowledged.
--
-- KEYS[1]  PREFIX {ACCOUNT}:events   stream
-- ARGV[1]  the consumer group ("webhooks")
-- ARGV[2]  how many events to keep at least (events.stream_max)
--
-- Everything older than both the group's last-delivered id and its oldest pending entry has
-- been acknowledged (posted with a 2xx, or moved to the dead letters), so only that part may
-- go. Without the group nothing is trimmed: no dispatcher has seen those events yet.
-- At most 1000 entries go per call, so one call stays cheap; the dispatcher calls it after
-- every acknowledgement. Returns how many entries were removed.

local function older(a, b)
  local ams, aseq = string.match(a, '^(%d+)-(%d+)$')
  local bms, bseq = string.match(b, '^(%d+)-(%d+)$')
  ams, aseq, bms, bseq = tonumber(ams), tonumber(aseq), tonumber(bms), tonumber(bseq)
  return ams < bms or (ams == bms and aseq < bseq)
end

local excess = redis.call('XLEN', KEYS[1]) - tonumber(ARGV[2])
if excess <= 0 then
  return 0
end
local groups = redis.pcall('XINFO', 'GROUPS', KEYS[1])
if type(groups) ~= 'table' or groups.err then
  return 0
end
local safe = nil
for _, group in ipairs(groups) do
  local name, last = nil, nil
  for i = 1, #group, 2 do
    if group[i] == 'name' then name = group[i + 1] end
    if group[i] == 'last-delivered-id' then last = group[i + 1] end
  end
  if name == ARGV[1] then safe = last end
end
if not safe then
  return 0
end
local pending = redis.call('XPENDING', KEYS[1], ARGV[1])
if tonumber(pending[1]) > 0 and older(pending[2], safe) then
  safe = pending[2]
end
local batch = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', math.min(excess, 1000) + 1)
local keep_from = batch[#batch][1]
if older(safe, keep_from) then
  keep_from = safe
end
return redis.call('XTRIM', KEYS[1], 'MINID', keep_from)
