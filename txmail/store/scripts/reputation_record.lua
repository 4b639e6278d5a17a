-- reputation_record.lua: count one delivery outcome for the reputation guard and return the
-- account's totals over its window, atomically. If the guard had suspended the account and the
-- operator has resumed it since, the window starts afresh first, so a resumed account is judged
-- on what it sends after the resume.
--
-- KEYS[1]  PREFIX {ACCOUNT}:account          hash the account (status)
-- KEYS[2]  PREFIX {ACCOUNT}:reputation       hash guard state: suspended, warned.bounce,
--                                            warned.complaint
-- KEYS[3..2+N] PREFIX {ACCOUNT}:outcomes:d:DAY  hash delivered bounced complained, one per UTC
--                                            day of the window, today first
--
-- ARGV[1]  field to count in today's bucket: delivered, bounced or complained
-- ARGV[2]  TTL of a day bucket in seconds (longer than the longest window)
--
-- Returns  {delivered, bounced, complained, status, suspended, warned_bounce,
--           warned_complaint, restarted} with the totals over the window after counting;
--           status is the account's status ("" if it is gone), the others the guard state
--           ("" when unset) and restarted 1 when the window started afresh

local status = redis.call('HGET', KEYS[1], 'status') or ''
local state = redis.call('HMGET', KEYS[2], 'suspended', 'warned.bounce', 'warned.complaint')
local restarted = 0
if state[1] and status ~= 'suspended' then
  for i = 3, #KEYS do redis.call('DEL', KEYS[i]) end
  redis.call('DEL', KEYS[2])
  state = {false, false, false}
  restarted = 1
end

redis.call('HINCRBY', KEYS[3], ARGV[1], 1)
redis.call('EXPIRE', KEYS[3], tonumber(ARGV[2]))

local delivered, bounced, complained = 0, 0, 0
for i = 3, #KEYS do
  local row = redis.call('HMGET', KEYS[i], 'delivered', 'bounced', 'complained')
  delivered = delivered + (tonumber(row[1]) or 0)
  bounced = bounced + (tonumber(row[2]) or 0)
  complained = complained + (tonumber(row[3]) or 0)
end
return {delivered, bounced, complained, status, state[1] or '', state[2] or '', state[3] or '',
        restarted}
