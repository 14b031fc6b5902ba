-- health_record: add one worker process's outcome counts to the current bucket; mark it seen.
--
-- KEYS[1]: counts (hash health:{health}:counts, "<bucket>\x1f<queue>\x1f<actor>\x1f<kind>" -> count).
-- KEYS[2]: fields (sorted set health:{health}:fields, field name scored by its bucket start).
-- KEYS[3]: processes (sorted set health:{health}:processes, process id scored by last seen).
-- KEYS[4]: process info (hash health:{health}:process_info, process id -> JSON).
-- ARGV[1]: now in milliseconds, or "" for the server clock (see _prelude.lua).
-- ARGV[2]: bucket length in milliseconds.
-- ARGV[3]: retention in milliseconds (older buckets are deleted).
-- ARGV[4]: forget-after in milliseconds (processes unseen for longer are deleted).
-- ARGV[5]: the process id.
-- ARGV[6]: the process's info as JSON, or "" to keep what it said before.
-- ARGV[7...]: pairs of field suffix ("<queue>\x1f<actor>\x1f<kind>") and increment.
-- Returns: now (ms).
--
-- Race closed: many processes flush at once; HINCRBY adds each increment
-- exactly once, and the index and the counts change together, so a reader
-- never sees a count that trimming cannot find (which would then live forever).
local now = now_ms()
local bucket_ms = tonumber(ARGV[2])
local bucket = now - (now % bucket_ms)
for i = 7, #ARGV, 2 do
    local name = bucket .. "\031" .. ARGV[i]
    redis.call("hincrby", KEYS[1], name, ARGV[i + 1])
    redis.call("zadd", KEYS[2], bucket, name)
end
local oldest = now - tonumber(ARGV[3])
local old = redis.call("zrangebyscore", KEYS[2], "-inf", "(" .. oldest)
for i = 1, #old, 1000 do
    redis.call("hdel", KEYS[1], unpack(old, i, math.min(i + 999, #old)))
end
redis.call("zremrangebyscore", KEYS[2], "-inf", "(" .. oldest)
redis.call("zadd", KEYS[3], now, ARGV[5])
if ARGV[6] ~= "" then
    redis.call("hset", KEYS[4], ARGV[5], ARGV[6])
end
local forget = now - tonumber(ARGV[4])
local gone = redis.call("zrangebyscore", KEYS[3], "-inf", "(" .. forget)
for _, process in ipairs(gone) do
    redis.call("hdel", KEYS[4], process)
end
redis.call("zremrangebyscore", KEYS[3], "-inf", "(" .. forget)
return now
