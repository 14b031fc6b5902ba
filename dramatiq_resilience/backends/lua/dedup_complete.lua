-- dedup_complete: mark a claimed key completed.
--
-- KEYS[1]: the key's record.
-- ARGV[1]: now in milliseconds, or "" for the server clock.
-- ARGV[2]: the claim token.
-- ARGV[3]: milliseconds to remember the completed key (dedup_ttl).
-- ARGV[4]: "1" to store ARGV[5] as the result, "0" for none.
-- ARGV[5]: the result (msgpack bytes).
-- Returns: 1 if recorded, 0 if the key is no longer in_progress with this
--   token (the claim was lost to a takeover, or the key was forgotten).
--
-- The race it closes: a worker whose lease ran out finishes while another
-- worker has taken the key over.  Only the current token completes the key,
-- so a stale holder cannot mark the newer attempt's key completed.
-- RedisBackend.dedup_commit also runs it (by EVAL, so that it cannot fail
-- with NOSCRIPT) inside its MULTI, after the caller's writes, with ARGV[1]
-- the time its WATCHed check of the claim read: the check and this script
-- then agree on expiry, and WATCH makes them agree on the rest.
local record = KEYS[1]
local now = now_ms()
local state, token, expires_at = unpack(redis.call("HMGET", record, "state", "token", "expires_at"))
if state ~= "in_progress" or token ~= ARGV[2] or not ((tonumber(expires_at) or 0) > now) then
    return 0
end
local expires = now + tonumber(ARGV[3])
redis.call("HSET", record, "state", "completed", "completed_at", now, "expires_at", expires)
redis.call("HDEL", record, "token", "lease_until")
if ARGV[4] == "1" then
    redis.call("HSET", record, "result", ARGV[5])
end
redis.call("PEXPIRE", record, expires - now)
return 1
