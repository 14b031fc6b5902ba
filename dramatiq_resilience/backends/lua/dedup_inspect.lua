-- dedup_inspect: read a key's record.
--
-- KEYS[1]: the key's record.
-- ARGV[1]: now in milliseconds, or "" for the server clock.
-- Returns: the record's fields as a flat list (HGETALL), or an empty list if
--   there is none or it has expired on the backend's clock.
--
-- A script rather than a bare HGETALL so that expiry is judged on the same
-- clock as every other operation (an injected clock in tests): a record past
-- its expires_at, which Redis may not have evicted yet, is never shown as
-- live, and the check and the read are one atomic step, so a worker's write
-- between them cannot be half-shown.
local record = KEYS[1]
local now = now_ms()
local expires_at = tonumber(redis.call("HGET", record, "expires_at"))
if not expires_at or expires_at <= now then
    return {}
end
return redis.call("HGETALL", record)
