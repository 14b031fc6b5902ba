-- Prepended to every script by RedisBackend when it registers them.
--
-- Convention: ARGV[1] of every script is the caller's notion of "now" in
-- milliseconds, or the empty string.  Empty means "use the Redis server's
-- clock" (TIME), which is what production does: windows, leases and
-- cooldowns are then measured on one clock shared by every host, so clock
-- skew between workers cannot break a limit.  Tests pass a fake clock's time.
-- Scripts are replicated by effects (Redis >= 5), so reading TIME before
-- writing is allowed.
local function now_ms()
    local given = tonumber(ARGV[1])
    if given then
        return given
    end
    local t = redis.call("TIME")
    return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
