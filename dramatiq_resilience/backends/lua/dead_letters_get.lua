-- dead_letters_get: read records with their index entries.
--
-- KEYS: see _dead_letters_lib.lua (only rec and idx are read).
-- ARGV[1]: now (unused).
-- ARGV[2..]: record ids.
-- Returns: 3 values per id: id, index entry line (or false), payload (or false).
--
-- One script so that a record and its status are read at one instant (a
-- requeue finishing in between cannot pair a new status with an old payload).
local out = {}
for i = 2, #ARGV do
    local id = ARGV[i]
    out[#out + 1] = id
    out[#out + 1] = redis.call("HGET", KEYS[2], id) or false
    out[#out + 1] = redis.call("HGET", KEYS[1], id) or false
end
return out
