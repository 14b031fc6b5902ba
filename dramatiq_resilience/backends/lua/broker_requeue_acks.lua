-- broker_requeue_acks: put a dead RedisBroker worker's unacked messages of one queue back.
--
-- Runs on the *broker's* Redis (not the state backend), on Dramatiq's keys
-- (see dramatiq/brokers/redis/dispatch.lua), all passed in by the caller:
-- KEYS[1]: heartbeats (sorted set <ns>:__heartbeats__).
-- KEYS[2]: the worker's ack set for one queue (set <ns>:__acks__.<worker>.<queue>), optional.
-- KEYS[3]: that queue (list <ns>:<queue>), with KEYS[2].
-- KEYS[4]: that queue's messages (hash <ns>:<queue>.msgs), with KEYS[2].
-- ARGV[1]: now in milliseconds, or "" for the server clock (see _prelude.lua).
-- ARGV[2]: the worker id.
-- ARGV[3]: the broker's heartbeat timeout in milliseconds.
-- ARGV[4]: "1" to also forget the worker's heartbeat (its last ack set, or none).
-- Returns: -1 if the worker is alive after all; else how many messages went back to the queue.
--
-- Race closed: the worker may have sent a command (a heartbeat) since the
-- caller listed it as dead; the heartbeat is checked again in the same step
-- that moves its messages, so a live worker's messages are never requeued
-- (which would run them twice).  Messages whose data is gone (already acked
-- through another path) are dropped from the ack set, as Dramatiq does.
local score = redis.call("zscore", KEYS[1], ARGV[2])
if score and tonumber(score) > now_ms() - tonumber(ARGV[3]) then
    return -1
end
local moved = 0
if KEYS[2] then
    local ids = redis.call("smembers", KEYS[2])
    for _, id in ipairs(ids) do
        if redis.call("hexists", KEYS[4], id) == 1 then
            redis.call("rpush", KEYS[3], id)
            moved = moved + 1
        end
    end
    redis.call("del", KEYS[2])
end
if ARGV[4] == "1" then
    redis.call("zrem", KEYS[1], ARGV[2])
end
return moved
