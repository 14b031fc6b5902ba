-- dedup_reserve: reserve a free key for a message being enqueued (unique enqueue).
--
-- KEYS[1]: the key's record.
-- ARGV[1]: now in milliseconds, or "" for the server clock.
-- ARGV[2]: the message id being enqueued.
-- ARGV[3]: the actor name.
-- ARGV[4]: milliseconds the reservation lasts unless confirmed (the enqueue
--   may fail after this script ran; dedup_confirm makes it last dedup_ttl).
-- ARGV[5]: the payload fingerprint, or "" for no payload check.
-- ARGV[6]: the message (msgpack of Message.asdict()), or "".
-- Returns: {1} when reserved (state pending, unconfirmed), else
--   {0, owner, state, conflict (0/1), stored message or ""}.
--
-- The race it closes: ten producers send the same key at the same moment.
-- Checking for a record and writing the reservation happen in one script, so
-- exactly one of them reserves the key and the other nine are refused with
-- the first one's message id.
local record = KEYS[1]
local now = now_ms()
local state, owner, stored_payload, expires_at, stored_message = unpack(
    redis.call("HMGET", record, "state", "owner", "payload", "expires_at", "message"))
if state and tonumber(expires_at) and tonumber(expires_at) > now then
    local payload = ARGV[5]
    local conflict = 0
    if payload ~= "" and stored_payload and stored_payload ~= "" and stored_payload ~= payload then
        conflict = 1
    end
    return {0, owner, state, conflict, stored_message or ""}
end
redis.call("DEL", record)
local expires = now + tonumber(ARGV[4])
redis.call("HSET", record, "state", "pending", "owner", ARGV[2], "actor", ARGV[3], "payload", ARGV[5],
    "created_at", now, "confirmed", "0", "claims", 0, "expires_at", expires)
if ARGV[6] ~= "" then
    redis.call("HSET", record, "message", ARGV[6])
end
redis.call("PEXPIRE", record, expires - now)
return {1}
