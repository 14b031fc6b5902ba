-- dedup_forget: delete a key's record whatever its state (an operator's tool).
--
-- KEYS[1]: the key's record.
-- ARGV[1]: now in milliseconds, or "" for the server clock.
-- Returns: the deleted record's fields as a flat list (HGETALL), or an empty
--   list if there was none (or it had expired on the backend's clock, or it
--   was not a hash: a corrupt record is deleted too, so the key can run again).
--
-- Reading and deleting in one step means the caller is told exactly what it
-- removed, even if a worker was writing the record at the same moment.
local record = KEYS[1]
local now = now_ms()
if redis.call("TYPE", record)["ok"] ~= "hash" then
    redis.call("DEL", record)
    return {}
end
local expires_at = tonumber(redis.call("HGET", record, "expires_at"))
local fields = {}
if expires_at and expires_at > now then
    fields = redis.call("HGETALL", record)
end
redis.call("DEL", record)
return fields
