-- cron_started: a worker started a run.
--
-- KEYS[1]: the job's record (hash cron:{job}:job).
-- ARGV[1]: now in milliseconds, or "" for the server clock (see _prelude.lua).
-- ARGV[2]: the message id of the run.
-- ARGV[3]: the pending lease in milliseconds, renewed from now.
-- Returns: nothing.
--
-- Race closed: a run that waited long in its queue must not lose its pending
-- lease just as it starts (overlap="skip" would then let the next occurrence
-- run beside it); starting renews it, only if this run is still the pending one.
local job = KEYS[1]
if redis.call("exists", job) == 0 then
    return
end
redis.call("hset", job, "last_status", "running", "last_message_id", ARGV[2])
if redis.call("hget", job, "pending_id") == ARGV[2] then
    redis.call("hset", job, "pending_until", now_ms() + tonumber(ARGV[3]))
end
