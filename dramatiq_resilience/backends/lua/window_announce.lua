-- window_announce: record the limit definitions a process uses, and return
-- the other live definitions of the same limits.
--
-- KEYS: one definitions hash per limit (<ns>:window:{limits}:d:<kind>:<limit>),
--   sharing the {limits} tag.
-- ARGV[1]: now in milliseconds, or "" for Redis TIME (see _prelude.lua).
-- ARGV[2]: how long an announcement lasts, in milliseconds.
-- ARGV[3..]: per key, this process's definition text ("100 per 60000 ms").
-- Returns: per key, an array of the other definition texts whose
--   announcement has not expired, sorted.
--
-- Hash: definition text -> the moment (ms) its last announcement expires.
-- Expired definitions are removed here, and the hash expires with its
-- latest announcement.  Race closed: recording and reading happen in one
-- script, so of two processes announcing different definitions at once the
-- second always sees the first.

local now = now_ms()
local ttl = tonumber(ARGV[2])
local out = {}
for i, key in ipairs(KEYS) do
    local mine = ARGV[2 + i]
    redis.call("HSET", key, mine, string.format("%d", now + ttl))
    local all = redis.call("HGETALL", key)
    local others = {}
    local latest = now + ttl
    for j = 1, #all, 2 do
        local expires = tonumber(all[j + 1])
        if expires <= now then
            redis.call("HDEL", key, all[j])
        else
            if all[j] ~= mine then
                others[#others + 1] = all[j]
            end
            latest = math.max(latest, expires)
        end
    end
    table.sort(others)
    redis.call("PEXPIRE", key, string.format("%d", latest - now))
    out[i] = others
end
return out
