-- dead_letters_list: one step of a filtered, cursor-paged listing.
--
-- KEYS: see _dead_letters_lib.lua.
-- ARGV[1]: now (unused).
-- ARGV[2]: status: "dead", "requeued" or "any".
-- ARGV[3]: "desc" (newest first) or "asc".
-- ARGV[4]: limit: at most this many entries are returned.
-- ARGV[5], ARGV[6]: the cursor: failed_at (ms) and record id of the last
--          entry of the previous step, or "" and "".
-- ARGV[7]: since (ms, inclusive) or "".
-- ARGV[8]: until (ms, exclusive) or "".
-- ARGV[9]: budget: at most this many index entries are examined.
-- ARGV[10]: "1" to return payloads, "0" for index entries only.
-- ARGV[11..]: facet filters, each as: facet name, n, then n accepted values.
-- Returns: {entries, cursor failed_at or false, cursor id or false, entries
--          examined}, where entries is one msgpack-encoded array of 3 values
--          per entry: id, index line, payload or false (a bulk requeue lists
--          thousands, which the client decodes far faster in one piece).
--
-- Order: failed_at, then record id (Redis orders equal scores by member).
-- The smallest of the candidate sets (the status set and every facet with
-- one value) is walked by rank; the others are checked with ZSCORE.  A cursor
-- is resumed by rank when its entry is still there, else by counting what
-- sorts before it, so paging is stable while records come and go.
-- Race closed: none (read-only); each step sees one instant.
local status = ARGV[2]
local desc = ARGV[3] == "desc"
local limit = tonumber(ARGV[4])
local budget = tonumber(ARGV[9])
local with_payload = ARGV[10] == "1"
local since = tonumber(ARGV[7])
local till = tonumber(ARGV[8])

local status_key = KEYS[3]
if status == "dead" then
    status_key = KEYS[4]
elseif status == "requeued" then
    status_key = KEYS[5]
end

-- Candidate sets: {key, cardinality}; checks: lists of keys (any may hold it).
local candidates = {{status_key, redis.call("ZCARD", status_key)}}
local groups = {}
local i = 11
while i <= #ARGV do
    local facet = ARGV[i]
    local n = tonumber(ARGV[i + 1])
    local keys = {}
    for j = 1, n do
        keys[j] = KEYS[12] .. facet .. ":" .. ARGV[i + 1 + j]
    end
    if n == 0 then
        return {cmsgpack.pack({}), false, false, 0}
    elseif n == 1 then
        candidates[#candidates + 1] = {keys[1], redis.call("ZCARD", keys[1])}
    else
        groups[#groups + 1] = keys
    end
    i = i + 2 + n
end
local best = 1
for c = 2, #candidates do
    if candidates[c][2] < candidates[best][2] then
        best = c
    end
end
local primary = candidates[best][1]
for c = 1, #candidates do
    if c ~= best and candidates[c][1] ~= KEYS[3] then
        groups[#groups + 1] = {candidates[c][1]}
    end
end

local function passes(id)
    for _, keys in ipairs(groups) do
        local found = false
        for _, key in ipairs(keys) do
            if redis.call("ZSCORE", key, id) then
                found = true
                break
            end
        end
        if not found then
            return false
        end
    end
    return true
end

-- The rank (in walking order) of the first entry to examine.
local start = 0
if desc and till then
    start = redis.call("ZCOUNT", primary, till, "+inf")
elseif not desc and since then
    start = redis.call("ZCOUNT", primary, "-inf", "(" .. since)
end
if ARGV[5] ~= "" then
    local cscore, cid = ARGV[5], ARGV[6]
    local rank
    if desc then
        rank = redis.call("ZREVRANK", primary, cid)
    else
        rank = redis.call("ZRANK", primary, cid)
    end
    local score = redis.call("ZSCORE", primary, cid)
    local after
    if rank and tonumber(score) == tonumber(cscore) then
        after = rank + 1
    else
        local ties = redis.call("ZRANGEBYSCORE", primary, cscore, cscore)
        if desc then
            after = redis.call("ZCOUNT", primary, "(" .. cscore, "+inf")
            for _, tie in ipairs(ties) do
                if tie > cid then
                    after = after + 1
                end
            end
        else
            after = redis.call("ZCOUNT", primary, "-inf", "(" .. cscore)
            for _, tie in ipairs(ties) do
                if tie < cid then
                    after = after + 1
                end
            end
        end
    end
    if after > start then
        start = after
    end
end

local function walk(from, to)
    if desc then
        return redis.call("ZREVRANGE", primary, from, to, "WITHSCORES")
    end
    return redis.call("ZRANGE", primary, from, to, "WITHSCORES")
end

local function out_of_range(score)
    return (desc and since and score < since) or (not desc and till and score >= till)
end

local out = {}
local found = 0
local scanned = 0
local last_id, last_score = false, false
local finished = false
local pos = start
local chunk = math.min(math.max(limit * 2, 64), budget)
while found < limit and scanned < budget and not finished do
    local items = walk(pos, pos + chunk - 1)
    if #items == 0 then
        finished = true
    end
    for j = 1, #items, 2 do
        local id = items[j]
        if out_of_range(tonumber(items[j + 1])) then
            finished = true
            break
        end
        pos = pos + 1
        scanned = scanned + 1
        last_id, last_score = id, items[j + 1]
        if passes(id) then
            found = found + 1
            out[#out + 1] = id
            out[#out + 1] = redis.call("HGET", KEYS[2], id) or false
            out[#out + 1] = with_payload and redis.call("HGET", KEYS[1], id) or false
            if found >= limit then
                break
            end
        end
        if scanned >= budget then
            break
        end
    end
end
if not finished then
    -- Is anything left in range after the last entry examined?
    local peek = walk(pos, pos)
    finished = #peek == 0 or out_of_range(tonumber(peek[2]))
end
if finished or not last_id then
    return {cmsgpack.pack(out), false, false, scanned}
end
return {cmsgpack.pack(out), last_score, last_id, scanned}
