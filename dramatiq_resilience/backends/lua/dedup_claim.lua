-- dedup_claim: claim a deduplication key in_progress for one message, with a lease.
--
-- KEYS[1]: the key's record (a hash; see backends/dedup.py for its fields).
-- ARGV[1]: now in milliseconds, or "" for the server clock (see _prelude.lua).
-- ARGV[2]: the claiming message id.
-- ARGV[3]: the actor name (stored when the record is created).
-- ARGV[4]: the new claim token (random; only the claimer knows it).
-- ARGV[5]: the lease in milliseconds.
-- ARGV[6]: milliseconds to keep the record after the lease ends (dedup_ttl).
-- ARGV[7]: the payload fingerprint, or "" for no payload check.
-- Returns: {outcome, owner, token, takeover (0/1), retry_after_ms, state, claims}
--   outcome "claimed": token is ARGV[4]; owner is the previous holder on a takeover.
--   outcome "completed" | "busy" | "conflict": owner holds the key in state;
--   retry_after_ms (busy) is the time left on the holder's lease.
--
-- The race it closes: two workers pick up two copies of one key (or a crashed
-- worker's redelivered message and a duplicate) at the same moment.  Reading
-- the record and writing the claim happen in one script, so exactly one of
-- them gets "claimed"; the other sees "busy" and is deferred.  A lease that
-- ran out (its worker died) is taken over by the next claimer, whoever it is;
-- a live lease is never taken, not even by a redelivery of the holder itself.
local record = KEYS[1]
local now = now_ms()
local message_id, actor, token = ARGV[2], ARGV[3], ARGV[4]
local lease_ms, ttl_ms, payload = tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7]

local state, owner, stored_payload, lease_until, claims, expires_at, confirmed, takeovers = unpack(
    redis.call("HMGET", record, "state", "owner", "payload", "lease_until", "claims", "expires_at",
        "confirmed", "takeovers"))
claims = tonumber(claims) or 0
if state and not (tonumber(expires_at) and tonumber(expires_at) > now) then
    redis.call("DEL", record)  -- logically expired: as good as absent
    state, stored_payload, confirmed, claims, takeovers = false, false, false, 0, false
end

local until_ms = now + lease_ms
local expires = until_ms + ttl_ms
-- One HSET for everything a claim writes; the fields it adds to a new record come first.
local fields = {"state", "in_progress", "owner", message_id, "token", token, "lease_until", until_ms,
    "claimed_at", now, "expires_at", expires, "claims", claims + 1}
local takeover, previous = 0, ""
if state then
    if payload ~= "" and stored_payload and stored_payload ~= "" and stored_payload ~= payload then
        return {"conflict", owner, "", 0, 0, state, claims}
    end
    if state == "completed" then
        return {"completed", owner, "", 0, 0, state, claims}
    end
    if state == "in_progress" then
        local left = (tonumber(lease_until) or 0) - now
        if left > 0 then
            return {"busy", owner, "", 0, left, state, claims}
        end
        takeover, previous = 1, owner
        table.insert(fields, "takeovers")
        table.insert(fields, (tonumber(takeovers) or 0) + 1)
    end
    if (not stored_payload or stored_payload == "") and payload ~= "" then
        table.insert(fields, "payload")
        table.insert(fields, payload)
    end
    if confirmed then
        redis.call("HDEL", record, "confirmed")
    end
else
    state = ""
    for _, value in ipairs({"actor", actor, "payload", payload, "created_at", now}) do
        table.insert(fields, value)
    end
end

redis.call("HSET", record, unpack(fields))
redis.call("PEXPIRE", record, expires - now)
return {"claimed", previous, token, takeover, 0, state, claims + 1}
