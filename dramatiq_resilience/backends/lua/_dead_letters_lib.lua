-- Shared by every dead_letters_*.lua script; RedisDeadLetterOps prepends it
-- (after _prelude.lua) when it registers them.  (Not by
-- dead_letters_broker_enqueue.lua, which runs on the broker's Redis.)
--
-- KEYS, the same for every dead_letters_* script (all share the hash tag {dlq},
-- so they live in one Redis Cluster slot):
--   KEYS[1]  rec       hash  record id -> msgpack record
--   KEYS[2]  idx       hash  record id -> index entry (see below)
--   KEYS[3]  all       zset  every record, by failure time (ms)
--   KEYS[4]  dead      zset  status dead, by failure time
--   KEYS[5]  requeued  zset  status requeued, by failure time
--   KEYS[6]  claimed   zset  status claimed, by claim time
--   KEYS[7]  tomb      zset  removed record ids, by removal time
--   KEYS[8..11]        hashes n:actor, n:queue, n:error_type, n:category:
--                      facet value -> number of dead records
--   KEYS[12] by:       the prefix of the per-value facet zsets
--                      (KEYS[12] .. facet .. ":" .. value), every record by
--                      failure time.  These keys cannot be listed in KEYS
--                      ahead of time (their names come from the index
--                      entries), so the scripts derive them from this prefix,
--                      as BullMQ does; the prefix carries the same hash tag,
--                      so every derived key is in the same slot.
--
-- Index entry: "status\nfailed_at\nactor\nqueue\nerror_type\ncategory", with
-- status "d" (dead), "c:<token>" (claimed by the requeue operation <token>),
-- "r:<token>" (requeued by it; the token lets a retried finish recognise its
-- own work) or "r" (requeued, written by earlier versions).  Only the first
-- letter decides which status set a record is in.

local FACETS = {"actor", "queue", "error_type", "category"}

local function parse(line)
    if not line then
        return nil
    end
    local f = {}
    for part in string.gmatch(line .. "\n", "([^\n]*)\n") do
        f[#f + 1] = part
    end
    return {status = f[1], score = f[2], values = {f[3], f[4], f[5], f[6]}}
end

local function format(status, score, values)
    return table.concat({status, score, values[1], values[2], values[3], values[4]}, "\n")
end

local function facet_key(i, value)
    return KEYS[12] .. FACETS[i] .. ":" .. value
end

local function count(values, delta)
    for i = 1, 4 do
        if redis.call("HINCRBY", KEYS[7 + i], values[i], delta) <= 0 then
            redis.call("HDEL", KEYS[7 + i], values[i])
        end
    end
end

local function status_key(status)
    local letter = string.sub(status, 1, 1)
    if letter == "d" then
        return KEYS[4]
    elseif letter == "r" then
        return KEYS[5]
    end
    return KEYS[6]
end

-- Add a record's index entry and every index it belongs to ("now" is the
-- claim time of a claimed record).
local function index(id, status, score, values, now)
    redis.call("HSET", KEYS[2], id, format(status, score, values))
    redis.call("ZADD", KEYS[3], score, id)
    for i = 1, 4 do
        redis.call("ZADD", facet_key(i, values[i]), score, id)
    end
    local letter = string.sub(status, 1, 1)
    if letter == "d" then
        redis.call("ZADD", KEYS[4], score, id)
        count(values, 1)
    elseif letter == "r" then
        redis.call("ZADD", KEYS[5], score, id)
    else
        redis.call("ZADD", KEYS[6], now, id)
    end
end

-- Remove a record's index entry and every index it belongs to.
local function unindex(id, entry)
    redis.call("HDEL", KEYS[2], id)
    redis.call("ZREM", KEYS[3], id)
    for i = 1, 4 do
        redis.call("ZREM", facet_key(i, entry.values[i]), id)
    end
    redis.call("ZREM", status_key(entry.status), id)
    if entry.status == "d" then
        count(entry.values, -1)
    end
end

-- Change the status of an indexed record (facets and "all" stay).
local function move(id, entry, status, now)
    redis.call("ZREM", status_key(entry.status), id)
    if entry.status == "d" then
        count(entry.values, -1)
    end
    local letter = string.sub(status, 1, 1)
    if letter == "d" then
        redis.call("ZADD", KEYS[4], entry.score, id)
        count(entry.values, 1)
    elseif letter == "r" then
        redis.call("ZADD", KEYS[5], entry.score, id)
    else
        redis.call("ZADD", KEYS[6], now, id)
    end
    redis.call("HSET", KEYS[2], id, format(status, entry.score, entry.values))
end

-- Remove a record entirely and leave a tombstone.  Returns its index entry
-- line (or "" when only the payload was left).
local function remove(id, now)
    local line = redis.call("HGET", KEYS[2], id)
    local entry = parse(line)
    if entry then
        unindex(id, entry)
    end
    redis.call("HDEL", KEYS[1], id)
    redis.call("ZADD", KEYS[7], now, id)
    return line or ""
end
