-- dead_letters_stats: counts for reports, health and metrics.
--
-- KEYS: see _dead_letters_lib.lua.
-- ARGV[1]: now in milliseconds, or "" for the server clock.
-- ARGV[2]: window in milliseconds for the recent-failure count.
-- Returns: {now, dead, claimed, requeued, total, tombstones, oldest (or
--          false), newest (or false), recent, n:actor, n:queue,
--          n:error_type, n:category (each a flat HGETALL list)}.
--
-- Race closed: every count is read at one instant, so the totals add up.
local now = now_ms()
local oldest = redis.call("ZRANGE", KEYS[4], 0, 0, "WITHSCORES")
local newest = redis.call("ZREVRANGE", KEYS[4], 0, 0, "WITHSCORES")
return {
    now,
    redis.call("ZCARD", KEYS[4]),
    redis.call("ZCARD", KEYS[6]),
    redis.call("ZCARD", KEYS[5]),
    redis.call("ZCARD", KEYS[3]),
    redis.call("ZCARD", KEYS[7]),
    oldest[2] or false,
    newest[2] or false,
    redis.call("ZCOUNT", KEYS[3], now - tonumber(ARGV[2]), "+inf"),
    redis.call("HGETALL", KEYS[8]),
    redis.call("HGETALL", KEYS[9]),
    redis.call("HGETALL", KEYS[10]),
    redis.call("HGETALL", KEYS[11]),
}
