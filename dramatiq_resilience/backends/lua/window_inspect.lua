-- window_inspect: read the current use of rate windows and concurrency pools.
--
-- KEYS: rate-window hashes and (lease sorted set, pool meta hash) pairs, in
--   the order ARGV[2] describes, sharing the {limits} tag.
-- ARGV[1]: now in milliseconds, or "" for Redis TIME (see _prelude.lua).
-- ARGV[2]: one letter per item: "r" (one key) or "c" (two keys).
-- Returns: now, then per item {used, capacity, window (ms), next free (ms),
--   resets at (ms), waiting until (ms)}, -1 where a moment does not apply.
--
-- Read-only: it computes what window_acquire would see at `now` without
-- pruning anything, so inspecting never changes a decision.

local now = now_ms()
local out = {now}
local k = 1
for letter in string.gmatch(ARGV[2], ".") do
    if letter == "r" then
        local key = KEYS[k]
        k = k + 1
        local all = redis.call("HGETALL", key)
        local meta, list = {}, {}
        for i = 1, #all, 2 do
            local b = tonumber(all[i])
            if b then
                list[#list + 1] = {b, tonumber(all[i + 1])}
            else
                meta[all[i]] = tonumber(all[i + 1])
            end
        end
        table.sort(list, function(x, y) return x[1] < y[1] end)
        local per, width, count = meta.p or 0, meta.w or 1, meta.c or 0
        local cut = math.floor((now - per + 1) / width)
        local used, newest = 0, nil
        for _, item in ipairs(list) do
            if item[1] >= cut then
                used = used + item[2]
                newest = item[1]
            end
        end
        local next_free, resets = -1, -1
        if newest then
            resets = (newest + 1) * width + per - 1
        end
        if count > 0 and used >= count then
            local need, acc = used - count + 1, 0
            for _, item in ipairs(list) do
                if item[1] >= cut then
                    acc = acc + item[2]
                    if acc >= need then
                        next_free = (item[1] + 1) * width + per - 1
                        break
                    end
                end
            end
        end
        local waiting = -1
        if meta.q and meta.q > now then
            waiting = math.ceil(meta.q)
        end
        out[#out + 1] = {used, count, per, next_free, resets, waiting}
    else
        local zkey, mkey = KEYS[k], KEYS[k + 1]
        k = k + 2
        local m = redis.call("HMGET", mkey, "n", "l", "q")
        local n, lease, q = tonumber(m[1]) or 0, tonumber(m[2]) or 0, tonumber(m[3])
        local live = redis.call("ZRANGEBYSCORE", zkey, "(" .. string.format("%d", now), "+inf", "WITHSCORES")
        local used = #live / 2
        local next_free, resets = -1, -1
        if used > 0 then
            resets = tonumber(live[#live])
            if n > 0 and used >= n then
                next_free = tonumber(live[2])
            end
        end
        local waiting = -1
        if q and q > now then
            waiting = math.ceil(q)
        end
        out[#out + 1] = {used, n, lease, next_free, resets, waiting}
    end
end
return out
