-- broker_requeue_acks: put a dead RedisBroker worker's unacked messages of one queue back.
--
-- Runs on the *broker's* Redis (not the state backend), on Dramatiq's keys
-- (see dramatiq/brokers/redis/dispatch.lua), all passed in by the caller:
-- KEYS[1]: heartbeats (sorted set <ns>:__heartbeats__, worker id scored by the worker's own clock).
-- KEYS[2]: the worker's ack set for one queue (set <ns>:__acks__.<worker>.<queue>), optional.
-- KEYS[3]: that queue (list <ns>:<queue>), with KEYS[2].
-- KEYS[4]: that queue's messages (hash <ns>:<queue>.msgs), with KEYS[2].
-- ARGV[1]: unused: the time argument of every script (see _prelude.lua).  No clock is read
--   here: the caller judged the worker dead on the state backend's clock
--   (broker_heartbeats_observe), from scores that did not change for the heartbeat timeout.
-- ARGV[2]: the worker id.
-- ARGV[3]: the heartbeat score judged silent (a number, as text).
-- ARGV[4]: "1" to also forget the worker's heartbeat (its last ack set, or none).
-- Returns: -1 if the worker is alive after all; else how many messages went back to the queue.
--
-- Race closed: the worker may have sent a command (a heartbeat) since the
-- caller judged it dead; its score is checked again in the same step that
-- moves its messages, and any other score than the silent one means alive, so
-- a live worker's messages are never requeued (which would run them twice).
-- Scores are compared with each other only, never with a time: the worker's
-- clock may be far from any other.  A worker already forgotten (no score: a
-- concurrent scan or Dramatiq's maintenance requeued it) has its leftovers moved.
-- Messages whose data is gone (already acked through another path) are
-- dropped from the ack set, as Dramatiq does.
local score = redis.call("zscore", KEYS[1], ARGV[2])
if score and tonumber(score) ~= tonumber(ARGV[3]) then
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
