-- dead_letters_finish: mark claimed records requeued, with their new payloads.
--
-- KEYS: see _dead_letters_lib.lua.
-- ARGV[1]: now in milliseconds, or "" for the server clock.
-- ARGV[2]: the claim token.
-- ARGV[3]: a msgpack-encoded array of 2 values per record: id, updated
--          payload (with the redrive added to its history).
-- Returns: a msgpack-encoded array of the ids finished by this token, now or by an earlier call (status
--          "r:<token>"; that payload is not written again).  A missing id lost
--          its claim midway (released as stale, or removed by retention or
--          purge).
--
-- Race closed: a requeue that outlived its claim does not overwrite a record
-- that another operation claimed since; and a finish whose reply was lost
-- (the caller cannot tell whether it ran) can be sent again with the same
-- result, so the caller retries it instead of leaving its records claimed
-- (trim would release them after the claim timeout and they would be
-- enqueued a second time).
local now = now_ms()
local claimed = "c:" .. ARGV[2]
local finished = "r:" .. ARGV[2]
local items = cmsgpack.unpack(ARGV[3])
local done = {}
for i = 1, #items, 2 do
    local id = items[i]
    local entry = parse(redis.call("HGET", KEYS[2], id))
    if entry and entry.status == claimed then
        move(id, entry, finished, now)
        redis.call("HSET", KEYS[1], id, items[i + 1])
        done[#done + 1] = id
    elseif entry and entry.status == finished then
        done[#done + 1] = id
    end
end
return cmsgpack.pack(done)
