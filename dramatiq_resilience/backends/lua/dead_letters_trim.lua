-- dead_letters_trim: one retention step.
--
-- KEYS: see _dead_letters_lib.lua.
-- ARGV[1]: now in milliseconds, or "" for the server clock.
-- ARGV[2]: max_age in milliseconds: records that failed before now - max_age go.
-- ARGV[3]: max_count: the oldest records beyond this many go.
-- ARGV[4]: claim_timeout in milliseconds: older claims go back to "dead".
-- ARGV[5]: tombstone_ttl in milliseconds: older tombstones go.
-- ARGV[6]: max_tombstones: the oldest tombstones beyond this many go.
-- ARGV[7]: limit: at most this many records of each kind per step.
-- Returns: {released, {id, line, ...} removed by age, {id, line, ...} removed
--          by count, tombstones dropped, 1 if more work is left else 0}.
--
-- Race closed: retention and captures run concurrently; each record is
-- removed whole (payload, index entry, every index) in one step, and the
-- caller is told exactly what went, so nothing is dropped silently.  Work is
-- bounded per step so a large backlog never blocks Redis.
local now = now_ms()
local cutoff = now - tonumber(ARGV[2])
local max_count = tonumber(ARGV[3])
local limit = tonumber(ARGV[7])

local released = 0
local stale = redis.call("ZRANGEBYSCORE", KEYS[6], "-inf", now - tonumber(ARGV[4]), "LIMIT", 0, limit)
for _, id in ipairs(stale) do
    local entry = parse(redis.call("HGET", KEYS[2], id))
    if entry and string.sub(entry.status, 1, 1) == "c" then
        move(id, entry, "d", now)
        released = released + 1
    else
        redis.call("ZREM", KEYS[6], id)
    end
end

local by_age = {}
local old = redis.call("ZRANGEBYSCORE", KEYS[3], "-inf", "(" .. cutoff, "LIMIT", 0, limit)
for _, id in ipairs(old) do
    by_age[#by_age + 1] = id
    by_age[#by_age + 1] = remove(id, now)
end

local by_count = {}
local excess = redis.call("ZCARD", KEYS[3]) - max_count
if excess > 0 then
    local oldest = redis.call("ZRANGE", KEYS[3], 0, math.min(excess, limit) - 1)
    for _, id in ipairs(oldest) do
        by_count[#by_count + 1] = id
        by_count[#by_count + 1] = remove(id, now)
    end
end

local dropped = redis.call("ZREMRANGEBYSCORE", KEYS[7], "-inf", "(" .. (now - tonumber(ARGV[5])))
local over = redis.call("ZCARD", KEYS[7]) - tonumber(ARGV[6])
if over > 0 then
    dropped = dropped + redis.call("ZREMRANGEBYRANK", KEYS[7], 0, over - 1)
end

local more = 0
if #stale == limit or #old == limit or redis.call("ZCARD", KEYS[3]) > max_count then
    more = 1
end
return {released, by_age, by_count, dropped, more}
