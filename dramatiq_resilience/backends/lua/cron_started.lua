-- cron_started: a worker started a run; tells a second send of the same run apart.
--
-- KEYS[1]: the job's record (hash cron:{job}:job).
-- KEYS[2]: the job's started runs (hash cron:{job}:runs, message id -> send id).
-- KEYS[3]: the same runs by start time (sorted set cron:{job}:started, message id scored by ms).
-- ARGV[1]: now in milliseconds, or "" for the server clock (see _prelude.lua).
-- ARGV[2]: the message id of the run.
-- ARGV[3]: the pending lease in milliseconds, renewed from now.
-- ARGV[4]: the send id of this delivery's enqueue (message option cron_send_id), or "".
-- ARGV[5]: milliseconds a started run is remembered (both sets expire that long
--   after the job's last start).
-- ARGV[6]: how many started runs of the job are remembered at most.
-- Returns: 1 to run the delivery, 0 to skip it (another send of this message id started).
--
-- Races closed: a run that waited long in its queue must not lose its pending
-- lease just as it starts (overlap="skip" would then let the next occurrence
-- run beside it); starting renews it, only if this run is still the pending one.
-- A scheduler whose confirmation (cron_sent) was lost, or whose enqueue blocked
-- past the send lease, leaves the send to another scheduler, which enqueues the
-- same message id again: two workers may start the two copies at the same
-- moment.  The first send id recorded here wins; a delivery with another send
-- id is skipped.  Redeliveries, retries and deferrals keep their send id, so
-- they run.
local job, runs, started = KEYS[1], KEYS[2], KEYS[3]
if redis.call("exists", job) == 0 then
    return 1
end
local now = now_ms()
local message_id, send_id = ARGV[2], ARGV[4]
if send_id ~= "" then
    local first = redis.call("hget", runs, message_id)
    if first and first ~= send_id then
        return 0
    end
    if not first then
        redis.call("hset", runs, message_id, send_id)
        redis.call("zadd", started, now, message_id)
        local forget = redis.call("zrangebyscore", started, "-inf", now - tonumber(ARGV[5]), "LIMIT", 0, 100)
        local extra = redis.call("zcard", started) - #forget - tonumber(ARGV[6])
        if extra > 0 then
            for _, id in ipairs(redis.call("zrange", started, #forget, #forget + extra - 1)) do
                table.insert(forget, id)
            end
        end
        if #forget > 0 then
            redis.call("zrem", started, unpack(forget))
            redis.call("hdel", runs, unpack(forget))
        end
        -- Both go with the job's last start: a removed job leaves nothing behind.
        redis.call("pexpire", runs, ARGV[5])
        redis.call("pexpire", started, ARGV[5])
    end
end
redis.call("hset", job, "last_status", "running", "last_message_id", message_id)
if redis.call("hget", job, "pending_id") == message_id then
    redis.call("hset", job, "pending_until", now + tonumber(ARGV[3]))
end
return 1
