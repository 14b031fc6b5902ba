-- cron_inflight_publish: replace a worker process's snapshot of running messages.
--
-- KEYS[1]: snapshots (hash cron:{inflight}:snapshots, process -> "published_ms:msgpack").
-- KEYS[2]: expiries (sorted set cron:{inflight}:expiry, process scored by expiry).
-- ARGV[1]: now in milliseconds, or "" for the server clock (see _prelude.lua).
-- ARGV[2]: the process id.
-- ARGV[3]: the msgpack-encoded messages, or "" to delete the snapshot.
-- ARGV[4]: the snapshot's time to live in milliseconds.
-- Returns: nothing.
--
-- Race closed: a reader must never see a snapshot without its expiry (it
-- would live forever after its process died); both are written together.
local now = now_ms()
if ARGV[3] == "" then
    redis.call("hdel", KEYS[1], ARGV[2])
    redis.call("zrem", KEYS[2], ARGV[2])
    return
end
redis.call("hset", KEYS[1], ARGV[2], now .. ":" .. ARGV[3])
redis.call("zadd", KEYS[2], now + tonumber(ARGV[4]), ARGV[2])
