-- cron_inflight: read every live snapshot, deleting expired ones.
--
-- KEYS[1]: snapshots (hash cron:{inflight}:snapshots).
-- KEYS[2]: expiries (sorted set cron:{inflight}:expiry).
-- ARGV[1]: now in milliseconds, or "" for the server clock (see _prelude.lua).
-- Returns: {process, "published_ms:msgpack", ...} for live snapshots.
--
-- Race closed: a process that died stops publishing; its snapshot expires and
-- is removed here, in the same step that reads the others, so a dead
-- process's messages are never reported as stalled.
local expired = redis.call("zrangebyscore", KEYS[2], "-inf", now_ms())
for _, process in ipairs(expired) do
    redis.call("hdel", KEYS[1], process)
    redis.call("zrem", KEYS[2], process)
end
return redis.call("hgetall", KEYS[1])
