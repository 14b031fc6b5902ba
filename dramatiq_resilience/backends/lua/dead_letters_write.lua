-- dead_letters_write: store records as "dead", indexed by time and facets.
--
-- KEYS: see _dead_letters_lib.lua.
-- ARGV[1]: now in milliseconds, or "" for the server clock.
-- ARGV[2]: "replace" (capture: overwrite an existing record, ignore a
--          tombstone) or "insert" (import: skip an existing or removed id).
-- ARGV[3..]: 7 values per record: id, payload, failed_at (ms), actor, queue,
--          error_type, category.
-- Returns: one integer per record: 1 new, 2 replaced, 0 skipped.
--
-- Race closed: a record captured by the middleware and the same message
-- imported from the broker's dead-letter queue at the same moment are one
-- record (the id is deterministic and the check-and-write is one step); an
-- import never revives a record that was purged, trimmed or requeued.  An
-- import's skipped entry is not yet final: if the stored record cannot be
-- read (only Python can tell), the importer replaces it with the broker's
-- copy through dead_letters_repair.lua before it removes that copy.
local now = now_ms()
local replace = ARGV[2] == "replace"
local results = {}
for i = 3, #ARGV, 7 do
    local id = ARGV[i]
    local existing = parse(redis.call("HGET", KEYS[2], id))
    local outcome = 1
    if existing then
        outcome = replace and 2 or 0
    elseif not replace and redis.call("ZSCORE", KEYS[7], id) then
        outcome = 0
    end
    if outcome ~= 0 then
        if existing then
            unindex(id, existing)
        end
        redis.call("HSET", KEYS[1], id, ARGV[i + 1])
        redis.call("ZREM", KEYS[7], id)
        index(id, "d", ARGV[i + 2], {ARGV[i + 3], ARGV[i + 4], ARGV[i + 5], ARGV[i + 6]}, now)
    end
    results[#results + 1] = outcome
end
return results
