-- health_snapshot: the published health report, unless it expired.
--
-- KEYS[1]: the snapshot (hash health:{health}:snapshot: at, until, status, payload).
-- ARGV[1]: now in milliseconds, or "" for the server clock (see _prelude.lua).
-- Returns: {at, status, payload}, or false.
--
-- Race closed: none (a read); expiry is judged on the same clock as health_publish.
local now = now_ms()
local snapshot = redis.call("hmget", KEYS[1], "at", "until", "status", "payload")
if not snapshot[1] or tonumber(snapshot[2]) <= now then
    return false
end
return {snapshot[1], snapshot[3], snapshot[4]}
