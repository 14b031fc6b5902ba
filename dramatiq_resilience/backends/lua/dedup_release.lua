-- dedup_release: give a key back after a failed or skipped attempt.
--
-- KEYS[1]: the key's record.
-- ARGV[1]: now in milliseconds, or "" for the server clock.
-- ARGV[2]: the claim token, or "" to release a pending reservation.
-- ARGV[3]: the message id releasing it.
-- ARGV[4]: "1" to delete the record (the message was dead-lettered: a new
--   send must be able to run), "0" to make it pending again (a retry or a
--   deferred copy of the message is on its way and may claim it).
-- ARGV[5]: milliseconds to keep a pending record (dedup_ttl).
-- Returns: 1 if the record changed, 0 if there was nothing of ours to release.
--
-- The race it closes: a failed attempt releasing a key that a duplicate has
-- meanwhile taken over (after the lease ran out) or completed.  Only the
-- current token releases an in_progress key, and only the owner releases a
-- pending reservation, so a late release never frees someone else's claim.
local record = KEYS[1]
local now = now_ms()
local token, message_id, forget = ARGV[2], ARGV[3], ARGV[4] == "1"
local state, held_token, owner, expires_at = unpack(
    redis.call("HMGET", record, "state", "token", "owner", "expires_at"))
if not state or not ((tonumber(expires_at) or 0) > now) then
    return 0
end
if token ~= "" then
    if state ~= "in_progress" or held_token ~= token then
        return 0
    end
    if forget then
        redis.call("DEL", record)
        return 1
    end
    local expires = now + tonumber(ARGV[5])
    redis.call("HSET", record, "state", "pending", "owner", message_id, "confirmed", "1", "expires_at", expires)
    redis.call("HDEL", record, "token", "lease_until")
    redis.call("PEXPIRE", record, expires - now)
    return 1
end
if forget and state == "pending" and owner == message_id then
    redis.call("DEL", record)
    return 1
end
return 0
