-- broker_heartbeats_observe: how long each RedisBroker worker's heartbeat score has stayed the same.
--
-- Runs on the state backend, and measures on its clock.  Dramatiq scores each
-- heartbeat with the worker's own clock, so a score is never compared with a
-- time here: only with the score seen before.
-- KEYS[1]: the tracking hash of one broker (broker_heartbeats:{<broker id>}: its
--   Redis server, database and namespace), worker id -> "<score> <first seen ms>".
-- ARGV[1]: now in milliseconds, or "" for the server clock (see _prelude.lua).
-- ARGV[2...]: pairs of worker id and heartbeat score (text, as the caller formats it):
--   every worker of the broker's heartbeat set.
-- Returns: {worker id, silent ms, ...}: every worker whose score is the one
--   recorded, with the milliseconds since that score was first seen (the caller
--   compares them with the heartbeat timeout).  New and changed scores are
--   recorded with now and not returned.
--
-- Race closed: several scans observing at once (their runs may overlap).
-- Comparing a score, restarting a silence and forgetting workers that left the
-- heartbeat set happen in one step, so no scan judges a worker on an entry
-- that another is replacing; a scan that read an older score than the one
-- recorded can only restart a silence (a later recovery), never shorten one.
-- The requeue on the broker (broker_requeue_acks) re-checks that the score is
-- still the one judged silent, so a worker that spoke since keeps its messages.
local now = now_ms()
local given = {}
local silent = {}
for i = 2, #ARGV, 2 do
    local worker, score = ARGV[i], ARGV[i + 1]
    given[worker] = true
    local seen = redis.call("hget", KEYS[1], worker)
    local sep = seen and string.find(seen, " ", 1, true)
    if sep and string.sub(seen, 1, sep - 1) == score then
        table.insert(silent, worker)
        table.insert(silent, now - tonumber(string.sub(seen, sep + 1)))
    else
        redis.call("hset", KEYS[1], worker, score .. " " .. now)
    end
end
for _, worker in ipairs(redis.call("hkeys", KEYS[1])) do
    if not given[worker] then
        redis.call("hdel", KEYS[1], worker)
    end
end
return silent
