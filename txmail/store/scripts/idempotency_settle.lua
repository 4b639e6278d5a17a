-- idempotency_settle.lua: keep the answer to a request that claimed an Idempotency-Key, or
-- free the key when there is nothing to keep.
--
-- KEYS[1]  PREFIX {ACCOUNT}:idempotency:HASH  string
-- ARGV[1]  the pending marker the request set (idempotency_claim.lua)
-- ARGV[2]  the answer to keep (JSON), or "" to free the key
-- ARGV[3]  how long the answer is kept, seconds
--
-- Only while the key still holds this request's own marker: if the marker lapsed and another
-- request claimed the key, that request's marker or answer stays. Returns 1 if settled, else 0.

if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
end
return 1
