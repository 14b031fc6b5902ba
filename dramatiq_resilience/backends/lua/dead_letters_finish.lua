-- dead_letters_finish: mark claimed records requeued, with their new payloads.
--
-- KEYS: see _dead_letters_lib.lua.
-- ARGV[1]: now in milliseconds, or "" for the server clock.
-- ARGV[2]: the claim token.
-- ARGV[3..]: 2 values per record: id, updated payload (with the redrive added
--          to its history).
-- Returns: the ids finished.  A missing id lost its claim midway (released as
--          stale, or removed by retention or purge).
--
-- Race closed: a requeue that outlived its claim does not overwrite a record
-- that another operation claimed since.
local now = now_ms()
local status = "c:" .. ARGV[2]
local done = {}
for i = 3, #ARGV, 2 do
    local id = ARGV[i]
    local entry = parse(redis.call("HGET", KEYS[2], id))
    if entry and entry.status == status then
        move(id, entry, "r", now)
        redis.call("HSET", KEYS[1], id, ARGV[i + 1])
        done[#done + 1] = id
    end
end
return done
