-- forward_count.lua: count one forward of returned mail to a message's envelope sender, within
-- a cap, so whoever holds the message's bounce address cannot relay more mail to the client.
--
-- KEYS[1]  PREFIX {ACCOUNT}:message:QID   hash  the message record (field `forwarded`)
-- ARGV[1]  most forwards per message (bounce_pipe.forwards_per_message)
-- ARGV[2]  "1": count a forward; "-1": give one back (Postfix did not take the mail)
--
-- Returns the forwards counted after this call when a forward was counted or given back; 0 when
-- the message has its cap already or no record any more (nothing written: a record that
-- expired is never made again without its TTL).

if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
if ARGV[2] == '-1' then
  local left = redis.call('HINCRBY', KEYS[1], 'forwarded', -1)
  if left < 0 then
    redis.call('HSET', KEYS[1], 'forwarded', 0)
    return 0
  end
  return left
end
local done = tonumber(redis.call('HGET', KEYS[1], 'forwarded') or '0')
if done >= tonumber(ARGV[1]) then
  return 0
end
return redis.call('HINCRBY', KEYS[1], 'forwarded', 1)
