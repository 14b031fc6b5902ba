-- cron_request_run: ask any scheduler to run a job now.
--
-- KEYS[1]: the set of known job names (cron:{index}:jobs).
-- KEYS[2]: the set of requested job names (cron:{index}:requests).
-- ARGV[1]: now in milliseconds, or "" for the server clock (see _prelude.lua).
-- ARGV[2]: the job name.
-- Returns: 1 if requested, 0 if the job is unknown.
--
-- Race closed: a request for an unknown job would never be taken; checking
-- and adding in one step keeps typos out of the request set.
if redis.call("sismember", KEYS[1], ARGV[2]) == 0 then
    return 0
end
redis.call("sadd", KEYS[2], ARGV[2])
return 1
