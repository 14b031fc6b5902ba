-- window_release: give back a message's concurrency leases.
--
-- KEYS: pairs (lease sorted set, pool meta hash), sharing the {limits} tag.
-- ARGV[1]: now in milliseconds, or "" for Redis TIME (see _prelude.lua).
-- ARGV[2]: the token (message id) that holds the leases.
-- ARGV[3]: how long the message held them in milliseconds, or "" if unknown.
-- ARGV[4..]: per pair, the pool's lease in milliseconds (to expire a new meta).
-- Returns: how many of the leases the token still held (integer).
--
-- The hold time feeds the pool's moving average "h" (weight 0.2 for the new
-- sample), which spaces out refused waiters.  Releasing a lease that already
-- expired (and may have been given to another message) removes nothing, so a
-- late release can never free someone else's slot.

local held_ms = tonumber(ARGV[3])
local released = 0
for i = 1, #KEYS, 2 do
    if redis.call("ZREM", KEYS[i], ARGV[2]) == 1 then
        released = released + 1
        if held_ms then
            local h = tonumber(redis.call("HGET", KEYS[i + 1], "h"))
            if h then
                h = h * 0.8 + held_ms * 0.2
            else
                h = held_ms
            end
            redis.call("HSET", KEYS[i + 1], "h", string.format("%.17g", h))
            if redis.call("PTTL", KEYS[i + 1]) < 0 then
                redis.call("PEXPIRE", KEYS[i + 1], string.format("%d", 2 * tonumber(ARGV[3 + (i + 1) / 2])))
            end
        end
    end
end
return released
