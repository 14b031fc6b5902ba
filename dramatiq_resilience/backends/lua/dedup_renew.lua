-- dedup_renew: extend the lease of a claim that is still held.
--
-- KEYS[1]: the key's record.
-- ARGV[1]: now in milliseconds, or "" for the server clock.
-- ARGV[2]: the claim token.
-- ARGV[3]: the new lease in milliseconds, from now.
-- ARGV[4]: milliseconds to keep the record after the lease ends (dedup_ttl).
-- Returns: 1 if the key is still in_progress with this token (the lease now
--   ends ARGV[3] from now), 0 if the claim was lost.
--
-- The race it closes: a long job's lease runs out while a duplicate is
-- claiming the key.  The renewal checks the token and moves lease_until in
-- one step, so either the renewal lands first (the duplicate sees "busy") or
-- the duplicate took the key over (the renewal answers 0 and the holder
-- learns that it lost the key).  A lease that ran out but was not taken over
-- is extended: nobody else ran the job.  RedisBackend pipelines one call per
-- held key, so renewing every claim of a process costs one round trip.
local record = KEYS[1]
local now = now_ms()
local state, token, expires_at = unpack(redis.call("HMGET", record, "state", "token", "expires_at"))
if state ~= "in_progress" or token ~= ARGV[2] or not ((tonumber(expires_at) or 0) > now) then
    return 0
end
local until_ms = now + tonumber(ARGV[3])
local expires = until_ms + tonumber(ARGV[4])
redis.call("HSET", record, "lease_until", until_ms, "expires_at", expires)
redis.call("PEXPIRE", record, expires - now)
return 1
