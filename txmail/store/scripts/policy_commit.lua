-- policy_commit.lua: count one accepted message against its account's limits. The milter calls
-- it at end of message, after every rule has passed, so only accepted messages count. The
-- message's hold (taken by policy_check.lua at end of data) becomes counted usage; without a
-- hold (it lapsed) the milter's own figures are counted. On the first message of a UTC day the
-- account's warm-up moves on by one sending day.
--
-- KEYS[1]  PREFIX {ACCOUNT}:usage:m:MINUTE   hash m r b
-- KEYS[2]  PREFIX {ACCOUNT}:usage:h:HOUR     hash m r b
-- KEYS[3]  PREFIX {ACCOUNT}:usage:d:DAY      hash m r b
-- KEYS[4]  PREFIX {ACCOUNT}:holds            hash QID -> "m r b", and the sums *m *r *b
-- KEYS[5]  PREFIX {ACCOUNT}:holds:expiry     zset QID by the time its hold lapses
-- KEYS[6]  PREFIX {ACCOUNT}:warmup           hash days, last, created
-- KEYS[7]  PREFIX {ACCOUNT}:account          hash the account (set.warmup, created_at)
--
-- ARGV[1]  queue id
-- ARGV[2]  today (UTC days since 1970)
-- ARGV[3]  recipients, ARGV[4] bytes as the milter saw them (used when there is no hold)
-- ARGV[5]  TTL of the minute bucket, ARGV[6] of the hour bucket, ARGV[7] of the day bucket
-- ARGV[8]  "1" when accounts warm up unless set.warmup says otherwise, else "0"
--
-- Returns  {m, r, b, held}: what was counted, and 1 if it came from the hold, else 0

-- The count is _commit.lua's.

-- include: _commit

return commit(KEYS, ARGV[1], ARGV[2], ARGV[3], ARGV[4], {ARGV[5], ARGV[6], ARGV[7]}, ARGV[8])
