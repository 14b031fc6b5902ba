-- dedup_confirm: confirm a reservation once its message is enqueued.
--
-- KEYS[1]: the key's record.
-- ARGV[1]: now in milliseconds, or "" for the server clock.
-- ARGV[2]: the message id that reserved the key.
-- ARGV[3]: milliseconds to keep the reservation from now (dedup_ttl, plus the
--   message's delay).
-- Returns: 1 if an unconfirmed reservation of this message was confirmed,
--   0 otherwise (a worker already claimed it, or it timed out).
--
-- The race it closes: a worker may claim the message before the producer's
-- confirmation arrives.  Confirming only an unconfirmed pending reservation of
-- this very message means a late confirmation never turns a claim, or
-- somebody else's reservation, back into a pending one.
local record = KEYS[1]
local now = now_ms()
local state, owner, confirmed, expires_at = unpack(
    redis.call("HMGET", record, "state", "owner", "confirmed", "expires_at"))
if state ~= "pending" or owner ~= ARGV[2] or confirmed ~= "0" or not ((tonumber(expires_at) or 0) > now) then
    return 0
end
local expires = now + tonumber(ARGV[3])
redis.call("HSET", record, "confirmed", "1", "expires_at", expires)
redis.call("PEXPIRE", record, expires - now)
return 1
