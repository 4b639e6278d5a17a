-- messages_get.lua: the message records of several queue ids in one call, for a single Redis
-- (the maillog follower's batches). The record's key is built here from the account that the
-- queue-id pointer names, so it is not among KEYS and may lie in any slot: on a Redis Cluster
-- store/messages.py reads the same in two pipelines instead.
--
-- KEYS[i]    PREFIX queue:QID                string  the account of queue id i
-- ARGV[1]    PREFIX
-- ARGV[1+i]  queue id i
--
-- Returns one entry per queue id: its record PREFIX {ACCOUNT}:message:QID as HGETALL gives it
-- (a flat list of fields and values), empty when there is none.

local found = {}
for i = 1, #KEYS do
  local account = redis.call('GET', KEYS[i])
  if account then
    found[i] = redis.call('HGETALL', ARGV[1] .. '{' .. account .. '}:message:' .. ARGV[i + 1])
  else
    found[i] = {}
  end
end
return found
