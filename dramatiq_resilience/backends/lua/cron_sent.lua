-- cron_sent: confirm that a run's message was enqueued.
--
-- KEYS[1]: the job's record (hash cron:{job}:job).
-- KEYS[2]: the job's unconfirmed sends (hash cron:{job}:sending).
-- ARGV[1]: now in milliseconds, or "" for the server clock (see _prelude.lua).
-- ARGV[2]: the message id.
-- ARGV[3]: the occurrence whose unconfirmed send this confirms, or "" (a run-now).
-- ARGV[4]: "" or, for a run-now, the pending lease in milliseconds.
-- Returns: nothing.
--
-- Race closed: a fast worker may start (or finish) the run before the
-- scheduler confirms the send.  If the worker already reported this message,
-- its status is kept rather than set back to "queued".
local job, sending = KEYS[1], KEYS[2]
local now = now_ms()
local message_id = ARGV[2]
if ARGV[3] ~= "" then
    redis.call("hdel", sending, ARGV[3])
end
if redis.call("exists", job) == 0 then
    return
end
redis.call("hset", job, "last_run", now)
if redis.call("hget", job, "last_message_id") ~= message_id then
    redis.call("hset", job, "last_message_id", message_id, "last_status", "queued")
    if ARGV[4] ~= "" then
        redis.call("hset", job, "pending_id", message_id, "pending_until", now + tonumber(ARGV[4]))
    end
end
