-- cron_take_requests: take the run-now requests of the jobs a scheduler knows.
--
-- KEYS[1]: the set of requested job names (cron:{index}:requests).
-- ARGV[1]: now in milliseconds, or "" for the server clock (see _prelude.lua).
-- ARGV[2..]: the job names this scheduler can run.
-- Returns: the names taken.
--
-- Race closed: N schedulers poll at once; SREM succeeds for one of them per
-- request, so a run-now is sent once.  A scheduler never takes a request for
-- a job it does not have (another application may share the namespace).
local taken = {}
for i = 2, #ARGV do
    if redis.call("srem", KEYS[1], ARGV[i]) == 1 then
        table.insert(taken, ARGV[i])
    end
end
return taken
