-- webhook_secret_rotate.lua: a new signing secret for one account. The secret it replaces
-- keeps signing beside it until ARGV[4]; but while an earlier rotation's overlap still runs,
-- its old secret stays the one kept (only the current one changes), so a second rotation
-- within the overlap (a double click, a form sent again) never drops the secret receivers
-- still check.
--
-- KEYS[1]  PREFIX {ACCOUNT}:webhook:secret  hash  current, previous, previous_until
-- ARGV[1]  the new secret (base64)
-- ARGV[2]  the secret in use when none is stored (derived from the webhook key; base64)
-- ARGV[3]  now (unix seconds)
-- ARGV[4]  until when the replaced secret keeps signing (unix seconds)
--
-- Returns 1 when the replaced secret is kept for the overlap, 0 when the running overlap's
-- old secret was kept instead.

local previous = redis.call('HGET', KEYS[1], 'previous')
local until_ = tonumber(redis.call('HGET', KEYS[1], 'previous_until') or '0') or 0
if previous and previous ~= '' and until_ > tonumber(ARGV[3]) then
  redis.call('HSET', KEYS[1], 'current', ARGV[1])
  return 0
end
local current = redis.call('HGET', KEYS[1], 'current')
if not current or current == '' then
  current = ARGV[2]
end
redis.call('HSET', KEYS[1], 'current', ARGV[1], 'previous', current, 'previous_until', ARGV[4])
return 1
