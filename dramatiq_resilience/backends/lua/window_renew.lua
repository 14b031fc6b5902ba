-- window_renew: extend concurrency leases that are still held.
--
-- KEYS: pairs (lease sorted set, pool meta hash), sharing the {limits} tag.
-- ARGV[1]: now in milliseconds, or "" for Redis TIME (see _prelude.lua).
-- ARGV[2..]: per pair: the token (message id), the lease in milliseconds.
-- Returns: one integer per pair: 1 renewed (now + lease), 0 no longer held.
--
-- A lease is still held while its token is in the set, even past its expiry:
-- every acquisition prunes expired leases before counting, so a lease that
-- is still there was never counted as free.  ZADD XX never re-creates a
-- lease that an acquisition already pruned and gave away.

local now = now_ms()
local result = {}
for i = 1, #KEYS, 2 do
    local arg = i + 1
    local token, lease = ARGV[arg], tonumber(ARGV[arg + 1])
    if redis.call("ZSCORE", KEYS[i], token) then
        redis.call("ZADD", KEYS[i], "XX", string.format("%d", now + lease), token)
        redis.call("PEXPIRE", KEYS[i], string.format("%d", lease))
        if redis.call("PTTL", KEYS[i + 1]) < lease then
            redis.call("PEXPIRE", KEYS[i + 1], string.format("%d", 2 * lease))
        end
        result[#result + 1] = 1
    else
        result[#result + 1] = 0
    end
end
return result
