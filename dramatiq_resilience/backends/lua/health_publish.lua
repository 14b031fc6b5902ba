-- health_publish: replace the published health report; return the previous one's status.
--
-- KEYS[1]: the snapshot (hash health:{health}:snapshot: at, until, status, payload).
-- ARGV[1]: now in milliseconds, or "" for the server clock (see _prelude.lua).
-- ARGV[2]: the report (JSON).
-- ARGV[3]: its overall status.
-- ARGV[4]: time to live in milliseconds.
-- Returns: the previous status (unless it had expired), or false.
--
-- Race closed: two health scans finishing together each learn the status the
-- other replaced, so a change of status is announced by exactly one of them.
-- Expiry is judged on the clock of ARGV[1] ("until"); PEXPIRE only collects garbage.
local now = now_ms()
local previous = redis.call("hmget", KEYS[1], "status", "until")
local status = false
if previous[1] and tonumber(previous[2]) > now then
    status = previous[1]
end
local ttl = tonumber(ARGV[4])
redis.call("hset", KEYS[1], "at", now, "until", now + ttl, "status", ARGV[3], "payload", ARGV[2])
redis.call("pexpire", KEYS[1], ttl)
return status
