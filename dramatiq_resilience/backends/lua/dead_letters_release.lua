-- dead_letters_release: give back claims whose message could not be enqueued.
--
-- KEYS: see _dead_letters_lib.lua.
-- ARGV[1]: now in milliseconds, or "" for the server clock.
-- ARGV[2]: the claim token.
-- ARGV[3..]: record ids.
-- Returns: how many records went back to "dead".
--
-- Race closed: only the claim's owner releases it; a record claimed by
-- another operation since (after a stale-claim release) is not touched.
local now = now_ms()
local status = "c:" .. ARGV[2]
local released = 0
for i = 3, #ARGV do
    local id = ARGV[i]
    local entry = parse(redis.call("HGET", KEYS[2], id))
    if entry and entry.status == status then
        move(id, entry, "d", now)
        released = released + 1
    end
end
return released
