-- dead_letters_repair: replace unreadable records with readable copies (imports).
--
-- KEYS: see _dead_letters_lib.lua.
-- ARGV[1]: now in milliseconds, or "" for the server clock.
-- ARGV[2..]: 8 values per record: id, payload, failed_at (ms), actor, queue,
--          error_type, category, and the SHA-1 (hex) of the stored payload
--          that the caller read and found unreadable ("" when it was missing).
-- Returns: one integer per record: 2 replaced, 0 left alone (the record is
--          gone, or its stored payload is no longer the one the caller read).
--
-- Only the caller can decode a record, so it decides what is unreadable; this
-- script replaces a record only if its payload is still the one the caller
-- read.  Race closed: a capture, a requeue's finish or another import that
-- wrote the record between that read and this step wrote a readable record,
-- which is kept (the caller then drops its copy as already stored); a purged
-- record stays purged.  The record keeps its status (a requeued record stays
-- requeued, a claimed one claimed since the same time) and takes the copy's
-- payload, failure time and facets.
local now = now_ms()
local results = {}
for i = 2, #ARGV, 8 do
    local id = ARGV[i]
    local existing = parse(redis.call("HGET", KEYS[2], id))
    local outcome = 0
    if existing then
        local current = redis.call("HGET", KEYS[1], id)
        local digest = current and redis.sha1hex(current) or ""
        if digest == ARGV[i + 7] then
            local claimed_at = redis.call("ZSCORE", KEYS[6], id)
            unindex(id, existing)
            redis.call("HSET", KEYS[1], id, ARGV[i + 1])
            local values = {ARGV[i + 3], ARGV[i + 4], ARGV[i + 5], ARGV[i + 6]}
            index(id, existing.status, ARGV[i + 2], values, claimed_at and tonumber(claimed_at) or now)
            outcome = 2
        end
    end
    results[#results + 1] = outcome
end
return results
