-- cron_set_enabled: enable or disable a job.
--
-- KEYS[1]: the job's record (hash cron:{job}:job).
-- ARGV[1]: now in milliseconds, or "" for the server clock (see _prelude.lua).
-- ARGV[2]: "1" to enable, "0" to disable.
-- Returns: 1 if the job is known, 0 if no scheduler ever registered it.
--
-- Race closed: a disable must not create a record for a job that does not
-- exist (a typo would then show up as a job); the existence check and the
-- write happen in one step.
if redis.call("exists", KEYS[1]) == 0 then
    return 0
end
redis.call("hset", KEYS[1], "enabled", ARGV[2])
return 1
