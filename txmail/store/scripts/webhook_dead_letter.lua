-- webhook_dead_letter.lua: move events the webhook could not take to the account's dead
-- letters, and acknowledge them in the event stream, in one step (neither lost nor doubled).
--
-- KEYS[1]  PREFIX {ACCOUNT}:events         stream  the account's events
-- KEYS[2]  PREFIX {ACCOUNT}:webhook:dead   stream  dead letters (fields event, error, failed_at,
--                                                   stream_id)
-- ARGV[1]  the consumer group ("webhooks")
-- ARGV[2]  cap of the dead letters (webhooks.dead_letter_max)
-- ARGV[3]  why (the last HTTP status or error)
-- ARGV[4]  now (unix seconds)
-- ARGV[5], ARGV[6], ...  pairs of (stream id in KEYS[1], the event's JSON)
--
-- Returns how many old dead letters the cap removed (the caller logs a warning when not 0).

local moved = 0
for i = 5, #ARGV, 2 do
  redis.call('XADD', KEYS[2], '*', 'event', ARGV[i + 1], 'error', ARGV[3],
             'failed_at', ARGV[4], 'stream_id', ARGV[i])
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[i])
  moved = moved + 1
end
local over = redis.call('XLEN', KEYS[2]) - tonumber(ARGV[2])
if over > 0 then
  redis.call('XTRIM', KEYS[2], 'MAXLEN', ARGV[2])
  return over
end
return 0
