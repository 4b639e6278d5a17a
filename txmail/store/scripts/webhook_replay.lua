-- webhook_replay.lua: send dead letters again: each back into the account's event stream, and
-- off the dead letters, in one step, so that two replays at once post nothing twice (the one
-- that comes second finds the entry gone and moves nothing).
--
-- KEYS[1]  PREFIX {ACCOUNT}:webhook:dead   stream  dead letters (field event)
-- KEYS[2]  PREFIX {ACCOUNT}:events         stream  the account's events
-- KEYS[3]  PREFIX {ACCOUNT}:webhook        hash    the endpoint's state (disabled, disabled_by)
-- ARGV[1], ARGV[2], ...  ids of dead letters in KEYS[1]
--
-- Returns how many dead letters this call moved. The endpoint is turned back on.

local moved = 0
for i = 1, #ARGV do
  local rows = redis.call('XRANGE', KEYS[1], ARGV[i], ARGV[i])
  if #rows == 1 then
    local fields = rows[1][2]
    local event = nil
    for j = 1, #fields, 2 do
      if fields[j] == 'event' then
        event = fields[j + 1]
      end
    end
    if redis.call('XDEL', KEYS[1], ARGV[i]) == 1 and event then
      redis.call('XADD', KEYS[2], '*', 'event', event, 'replay', '1')
      moved = moved + 1
    end
  end
end
redis.call('HDEL', KEYS[3], 'disabled', 'disabled_by')
return moved
