-- dead_letters_delete: remove records (purge), leaving tombstones.
--
-- KEYS: see _dead_letters_lib.lua.
-- ARGV[1]: now in milliseconds, or "" for the server clock.
-- ARGV[2]: the status letters that may be removed: "d" (dead), "r" (requeued)
--          or both; claimed records are never removed here.
-- ARGV[3..]: record ids.
-- Returns: 2 values per removed record: id, its index entry line ("" when
--          only an orphan payload was found).
--
-- Race closed: a record claimed by a requeue in flight is not removed under
-- it; a purged record is not revived by a later import (tombstone).
local now = now_ms()
local allowed = ARGV[2]
local out = {}
for i = 3, #ARGV do
    local id = ARGV[i]
    local entry = parse(redis.call("HGET", KEYS[2], id))
    local removable
    if entry then
        removable = string.find(allowed, string.sub(entry.status, 1, 1), 1, true) ~= nil
    else
        removable = redis.call("HEXISTS", KEYS[1], id) == 1
    end
    if removable then
        out[#out + 1] = id
        out[#out + 1] = remove(id, now)
    end
end
return out
