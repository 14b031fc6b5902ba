-- dead_letters_claim: claim dead records for one requeue operation.
--
-- KEYS: see _dead_letters_lib.lua.
-- ARGV[1]: now in milliseconds, or "" for the server clock.
-- ARGV[2]: the claim token of this requeue operation.
-- ARGV[3..]: record ids.
-- Returns: one msgpack-encoded array (a batch is thousands of values, which
--          the client decodes far faster in one piece) of 3 values per
--          claimed record: id, index entry line, payload (false if missing).
--          Records that are not dead (claimed by another token, requeued,
--          unknown) are left out; records this token claimed already are
--          returned again (their claim time unchanged), so a claim whose reply
--          was lost can be retried.
--
-- Race closed: two processes requeueing the same record at once.  Only the
-- one whose claim moves the record out of "dead" enqueues it; the other gets
-- nothing back for that id.  A claim older than the claim timeout is put back
-- by dead_letters_trim (its requeue died midway).
local now = now_ms()
local status = "c:" .. ARGV[2]
local out = {}
for i = 3, #ARGV do
    local id = ARGV[i]
    local line = redis.call("HGET", KEYS[2], id)
    local entry = parse(line)
    if entry and (entry.status == "d" or entry.status == status) then
        if entry.status == "d" then
            move(id, entry, status, now)
        end
        out[#out + 1] = id
        out[#out + 1] = format(status, entry.score, entry.values)
        out[#out + 1] = redis.call("HGET", KEYS[1], id) or false
    end
end
return cmsgpack.pack(out)
