-- dead_letters_broker_enqueue: enqueue one batch of requeued dead letters on a RedisBroker, at most once.
--
-- Runs on the *broker's* Redis (not the state backend), writing what
-- Dramatiq's dispatch.lua "enqueue" writes (the message in <ns>:<queue>.msgs
-- under its redis_message_id, that id pushed on <ns>:<queue>).  Every key is
-- passed in by the caller:
-- KEYS[1]: the batch's fence (string <ns>:__dlq_requeue__.<token>.<n>, one per batch).
-- KEYS[2..]: 2 per queue the batch uses: the queue (list <ns>:<queue>), then
--          its messages (hash <ns>:<queue>.msgs).
-- ARGV[1]: now (unused; the convention of _prelude.lua).
-- ARGV[2]: the fence's lifetime in milliseconds.
-- ARGV[3]: a msgpack-encoded array of 3 values per message: the position in
--          KEYS of its queue (its messages hash is the next key), its
--          redis_message_id, its encoded bytes.
-- Returns: "enqueued" when this call enqueued the batch; else the fence's value
--          (nothing is written): "done" (an earlier call enqueued it),
--          "fenced" (the caller gave up on the batch: it is never enqueued),
--          "started" (an earlier call failed midway: only some were enqueued).
--
-- Race closed: an enqueue whose reply is lost (a timeout, a dropped
-- connection) may or may not have run, and redis-py may send it again by
-- itself.  The fence makes the batch run at most once: the script writes only
-- after it creates the fence, and a caller that cannot tell what happened
-- settles it by creating the fence as "fenced" (SET NX): if that succeeds the
-- batch has not run and never will, so its records can go back to "dead";
-- if not, the fence says whether the batch ran.
if not redis.call("SET", KEYS[1], "started", "NX", "PX", ARGV[2]) then
    return redis.call("GET", KEYS[1])
end
local items = cmsgpack.unpack(ARGV[3])
for i = 1, #items, 3 do
    local queue = items[i]
    redis.call("HSET", KEYS[queue + 1], items[i + 1], items[i + 2])
    redis.call("RPUSH", KEYS[queue], items[i + 1])
end
redis.call("SET", KEYS[1], "done", "PX", ARGV[2])
return "enqueued"
