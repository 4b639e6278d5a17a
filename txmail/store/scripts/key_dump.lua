-- key_dump.lua: one key as `txmail backup` keeps it: its serialized value and its time to live,
-- read together so that neither changes in between.
--
-- KEYS[1]  any key of the installation (under its prefix)
--
-- Returns: {DUMP's payload (nil when the key is gone), PTTL in milliseconds (-1: none,
-- -2: gone)}.

return {redis.call('DUMP', KEYS[1]), redis.call('PTTL', KEYS[1])}
