-- unparsed_summaries.lua: the newest kept unparsed bounces without their raw text, so a
-- listing moves a few hundred bytes per entry out of Redis, not the mail itself (up to
-- bounce_pipe.unparsed_max_bytes each).
--
-- KEYS[1]  PREFIX bounces:unparsed   stream  (fields reason, sender, ..., raw)
-- ARGV[1]  how many, newest first
--
-- Returns the entries as XREVRANGE does, each without its field raw.

local rows = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', tonumber(ARGV[1]))
local out = {}
for i = 1, #rows do
  local fields = rows[i][2]
  local kept = {}
  for j = 1, #fields, 2 do
    if fields[j] ~= 'raw' then
      kept[#kept + 1] = fields[j]
      kept[#kept + 1] = fields[j + 1]
    end
  end
  out[i] = {rows[i][1], kept}
end
return out
