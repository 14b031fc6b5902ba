-- health_read: the counts of the buckets overlapping a window, and the processes seen.
--
-- KEYS[1]: counts (hash health:{health}:counts).
-- KEYS[2]: fields (sorted set health:{health}:fields).
-- KEYS[3]: processes (sorted set health:{health}:processes).
-- KEYS[4]: process info (hash health:{health}:process_info).
-- ARGV[1]: now in milliseconds, or "" for the server clock (see _prelude.lua).
-- ARGV[2]: the window in milliseconds.
-- ARGV[3]: bucket length in milliseconds.
-- ARGV[4]: forget-after in milliseconds.
-- Returns: {now, {field, count, ...}, {process, last seen, info, ...}}.
--
-- Race closed: the counts of every process and the liveness of every process
-- are read at one instant, so a failure rate never mixes two moments.
local now = now_ms()
local since = now - tonumber(ARGV[2]) - tonumber(ARGV[3])
local fields = redis.call("zrangebyscore", KEYS[2], "(" .. since, "+inf")
local counts = {}
if #fields > 0 then
    local values = redis.call("hmget", KEYS[1], unpack(fields))
    for i, name in ipairs(fields) do
        if values[i] then
            counts[#counts + 1] = name
            counts[#counts + 1] = values[i]
        end
    end
end
local seen = redis.call("zrangebyscore", KEYS[3], now - tonumber(ARGV[4]), "+inf", "WITHSCORES")
local processes = {}
for i = 1, #seen, 2 do
    processes[#processes + 1] = seen[i]
    processes[#processes + 1] = seen[i + 1]
    processes[#processes + 1] = redis.call("hget", KEYS[4], seen[i]) or ""
end
return {now, counts, processes}
