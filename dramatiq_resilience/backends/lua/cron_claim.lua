-- cron_claim: decide one occurrence of a cron job, once across every scheduler.
--
-- KEYS[1]: the job's record (hash cron:{job}:job).
-- KEYS[2]: the job's unconfirmed sends (hash cron:{job}:sending, occurrence -> "until:message_id").
-- ARGV[1]: now in milliseconds, or "" for the server clock (see _prelude.lua).
-- ARGV[2]: the occurrence in milliseconds since the epoch, or "" to only run recovery.
-- ARGV[3]: the message id derived from the job and the occurrence.
-- ARGV[4]: the job's next occurrence after this one (milliseconds), or "".
-- ARGV[5]: "1" to skip the occurrence while the previous run is pending (overlap="skip").
-- ARGV[6]: the pending run's lease in milliseconds.
-- ARGV[7]: the unconfirmed send's lease in milliseconds.
-- ARGV[8]: the misfire grace in milliseconds (older unconfirmed sends are dropped).
-- ARGV[9]: "1" to record the occurrence as missed (too late to send) instead of claiming it.
-- Returns: {status, previous last_fired or "", pending message id or "",
--           {occurrence, message_id, ...} recovered, {occurrence, message_id, ...} expired}
--   status: "claimed", "taken", "disabled", "overlap", "missed" or "none".
--
-- Race closed: N schedulers evaluate the same occurrence at about the same
-- time.  last_fired is a high-water mark moved only here, so exactly one of
-- them gets past the comparison; the others answer "taken".  The decision to
-- skip (disabled, overlap) or to report a miss is taken by that one caller
-- too, so it is reported once.  A claimer that dies before confirming its send leaves its
-- entry in KEYS[2]; once the send lease expires the next caller takes it over.  An entry
-- too old to send (beyond the grace) is dropped, and so is the pending run it set
-- (pending_id, pending_until in KEYS[1]) when it still is the pending one: that message
-- was never confirmed sent, so with overlap="skip" it must not block the next
-- occurrences until its overlap lease ends.
local now = now_ms()
local job, sending = KEYS[1], KEYS[2]
local occurrence = tonumber(ARGV[2])
local message_id = ARGV[3]

local recovered, expired = {}, {}
local entries = redis.call("hgetall", sending)
for i = 1, #entries, 2 do
    local occ = tonumber(entries[i])
    local sep = string.find(entries[i + 1], ":", 1, true)
    local until_ms = tonumber(string.sub(entries[i + 1], 1, sep - 1))
    local sent_id = string.sub(entries[i + 1], sep + 1)
    if until_ms <= now then
        if occ < now - tonumber(ARGV[8]) then
            redis.call("hdel", sending, entries[i])
            if redis.call("hget", job, "pending_id") == sent_id then
                redis.call("hdel", job, "pending_id", "pending_until")
            end
            table.insert(expired, entries[i])
            table.insert(expired, sent_id)
        else
            redis.call("hset", sending, entries[i], (now + tonumber(ARGV[7])) .. ":" .. sent_id)
            table.insert(recovered, entries[i])
            table.insert(recovered, sent_id)
        end
    end
end

local last = redis.call("hget", job, "last_fired")
local function answer(status, pending)
    return {status, last or "", pending or "", recovered, expired}
end
if not occurrence then
    return answer("none")
end
if last and occurrence <= tonumber(last) then
    return answer("taken")
end

redis.call("hset", job, "last_fired", ARGV[2])
if ARGV[4] ~= "" then
    redis.call("hset", job, "next_run", ARGV[4])
end
if ARGV[9] == "1" then
    return answer("missed")
end
if redis.call("hget", job, "enabled") == "0" then
    return answer("disabled")
end
local pending = redis.call("hget", job, "pending_id")
if ARGV[5] == "1" and pending and tonumber(redis.call("hget", job, "pending_until") or "0") > now then
    return answer("overlap", pending)
end
if not redis.call("hget", job, "enabled") then
    redis.call("hset", job, "enabled", "1")
end
redis.call("hset", job, "pending_id", message_id, "pending_until", now + tonumber(ARGV[6]))
redis.call("hset", sending, ARGV[2], (now + tonumber(ARGV[7])) .. ":" .. message_id)
return answer("claimed")
