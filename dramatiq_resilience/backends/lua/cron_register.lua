-- cron_register: record (or refresh) a job's definition; a new job starts enabled.
--
-- KEYS[1]: the job's record (hash cron:{job}:job).
-- ARGV[1]: now in milliseconds, or "" for the server clock (see _prelude.lua).
-- ARGV[2]: the job's next occurrence in milliseconds, or "".
-- ARGV[3..]: field, value pairs of the definition (actor_name, queue_name, schedule...).
-- Returns: the job's last_fired (milliseconds), or nil if it never fired.
--
-- Race closed: every scheduler registers its jobs at start while others may
-- be disabling one; HSETNX keeps an operator's "enabled" choice and the run
-- state, and only the definition fields are overwritten.
local job = KEYS[1]
for i = 3, #ARGV, 2 do
    redis.call("hset", job, ARGV[i], ARGV[i + 1])
end
redis.call("hset", job, "registered", now_ms())
redis.call("hsetnx", job, "enabled", "1")
if ARGV[2] ~= "" then
    redis.call("hset", job, "next_run", ARGV[2])
end
return redis.call("hget", job, "last_fired")
