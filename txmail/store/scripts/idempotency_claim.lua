-- idempotency_claim.lua: claim an Idempotency-Key of POST /v1/send, or read what holds it.
--
-- KEYS[1]  PREFIX {ACCOUNT}:idempotency:HASH  string  a pending marker or the first answer (TTL)
-- ARGV[1]  the pending marker to set (JSON: pending token and the request body's hash)
-- ARGV[2]  its TTL, seconds (the longest a send can take; a crashed request frees the key then)
--
-- Returns false (nil) when the key was free and is now this request's, else the value that
-- holds it: another request's pending marker, or the answer kept for the first request.
-- Both in one step, so two requests with the same key can never both be sent.

local found = redis.call('GET', KEYS[1])
if found then
  return found
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return false
