-- cron_finished: a delivery of a run ended.
--
-- KEYS[1]: the job's record (hash cron:{job}:job).
-- ARGV[1]: now in milliseconds, or "" for the server clock (see _prelude.lua).
-- ARGV[2]: the message id of the run.
-- ARGV[3]: the status ("succeeded", "failed", "retrying", "deferred", "skipped", "rejected").
-- ARGV[4]: the error text, or "" for none.
-- ARGV[5]: "1" if the message was re-enqueued (a retry or a deferral): the run stays pending.
-- Returns: nothing.
--
-- Race closed: the run that finishes may no longer be the pending one (its
-- lease expired and a later occurrence was sent); only the pending run's own
-- message clears the pending mark.
local job = KEYS[1]
if redis.call("exists", job) == 0 then
    return
end
local now = now_ms()
redis.call("hset", job, "last_status", ARGV[3], "last_message_id", ARGV[2], "last_finished", now)
if ARGV[4] ~= "" then
    redis.call("hset", job, "last_error", ARGV[4], "last_error_ms", now)
end
if ARGV[5] ~= "1" and redis.call("hget", job, "pending_id") == ARGV[2] then
    redis.call("hdel", job, "pending_id", "pending_until")
end
