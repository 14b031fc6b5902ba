-- window_acquire: take one start in every rate window and one slot of every
-- concurrency pool of a message, all or nothing.
--
-- KEYS: R rate-window hashes, then C pairs (lease sorted set, pool meta hash).
--   All share the {limits} hash tag, so any combination fits one script.
--   A window's name ends with its layout (...:r:<limit>:<key>:<per>:<width>),
--   so two definitions of one limit never share a window.
-- ARGV[1]: now in milliseconds, or "" for Redis TIME (see _prelude.lua).
-- ARGV[2]: the token naming leases (the message id).
-- ARGV[3]: R.  ARGV[4]: C.
-- ARGV[5..]: per rate window: count, per (ms), bucket width (ms);
--   then per pool: n, lease (ms), hold estimate before any release (ms).
-- Returns: now (an integer, ms) when everything was taken; when refused, one
--   string "now retry_at blocked_by spacing" (ms, ms, 0-based index with rates
--   first, ms).  One value either way: a reply array costs the client more to
--   read than this script costs the server to run.
--
-- Rate window hash: numeric fields are bucket index -> starts in that bucket
-- (bucket = floor(time / width)); "n" total starts stored, "o" lowest bucket
-- that may be stored, "t" newest bucket, "w"/"p"/"c" the definition, "q" the
-- waiter horizon (ms, fractional), "e" the cached moment a slot frees.
-- A window admits at `now` while buckets >= floor((now - per + 1) / width)
-- hold fewer than `count`: every start in (now - per, now] is in them, so no
-- window of `per` ms can exceed `count` (the oldest bucket counts whole).
-- Memory: buckets below that floor are dropped before anything is added, so a
-- hash holds at most per / width + 1 <= 101 buckets and 8 other fields (109).
-- Pool: sorted set token -> lease expiry (ms); meta "h" average hold (ms),
-- "q" waiter horizon, "n"/"l" the definition.
--
-- Race closed: checking and taking happen in one script, so two workers can
-- never both take the last start of a window or the last slot of a pool, and
-- a message refused by one limit takes nothing from the others.  Processes
-- that disagree on a limit (a rolling deploy) cannot reset each other's
-- window: another `per` is another key, and another `count` shares the
-- window's starts (each admits below its own count), so admission stays
-- bounded by the sum (or the larger) of their counts.

local now = now_ms()
local token = ARGV[2]
local R = tonumber(ARGV[3])
local C = tonumber(ARGV[4])

local function int(x)
    return string.format("%d", x)
end

local function num(x)
    return string.format("%.17g", x)
end

-- Fast path: one rate window, no pool, in its steady state (defined as
-- asked, nothing to drop).  It does exactly what the general path below does
-- in that state, before the general path's closures are even built (they
-- cost more than this path's three commands): most decisions are this one.
if R == 1 and C == 0 then
    local key = KEYS[1]
    local count, per, width = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
    local f = redis.call("HMGET", key, "w", "p", "c", "n", "o", "t", "q", "e")
    local o = tonumber(f[5])
    if tonumber(f[1]) == width and tonumber(f[2]) == per and tonumber(f[3]) == count
        and o and o >= math.floor((now - per + 1) / width) then
        local n = tonumber(f[4]) or 0
        local q = tonumber(f[7])
        local e = tonumber(f[8])
        if n < count then
            local b = math.floor(now / width)
            redis.call("HINCRBY", key, int(b), 1)
            local t = tonumber(f[6])
            if not t or b > t then
                t = b
            end
            if b < o then
                o = b
            end
            redis.call("HSET", key, "n", int(n + 1), "o", int(o), "t", int(t))
            if f[8] then
                redis.call("HDEL", key, "e")
            end
            local ttl = per + width
            if q and q - now + per > ttl then
                ttl = math.ceil(q - now) + per
            end
            redis.call("PEXPIRE", key, int(ttl))
            return now
        end
        if e and e > now then
            local at = math.max(q or 0, e)
            local spacing = per / count
            q = at + spacing
            redis.call("HSET", key, "q", num(q))
            local ttl = per + width
            if q - now + per > ttl then
                ttl = math.ceil(q - now) + per
            end
            redis.call("PEXPIRE", key, int(ttl))
            return string.format("%d %d 0 %d", now, math.ceil(at), math.ceil(spacing))
        end
    end
end

-- Numeric bucket fields of a window hash, sorted: {{bucket, count}, ...}.
local function buckets_of(key)
    local all = redis.call("HGETALL", key)
    local list = {}
    for i = 1, #all, 2 do
        local b = tonumber(all[i])
        if b then
            list[#list + 1] = {b, tonumber(all[i + 1])}
        end
    end
    table.sort(list, function(x, y) return x[1] < y[1] end)
    return list
end

local function load_rate(i)
    local base = 4 + (i - 1) * 3
    -- Every field named in the constructor: growing a Lua table rehashes it.
    local s = {
        key = KEYS[i],
        count = tonumber(ARGV[base + 1]),
        per = tonumber(ARGV[base + 2]),
        width = tonumber(ARGV[base + 3]),
        n = 0, o = false, t = false, q = false, e = false,
        fresh = false, had_e = false, moved = false, dropped = false, ok = false, new_e = false,
    }
    local f = redis.call("HMGET", s.key, "w", "p", "c", "n", "o", "t", "q", "e")
    if tonumber(f[1]) ~= s.width or tonumber(f[2]) ~= s.per then
        -- New (the layout is part of the key, so no other definition wrote
        -- here); anything without the layout's fields is debris: start afresh.
        if f[1] or f[4] then
            redis.call("DEL", s.key)
        end
        s.n = 0
        s.fresh = true
    else
        s.n = tonumber(f[4]) or 0
        s.o = tonumber(f[5]) or false
        s.t = tonumber(f[6]) or false
        s.q = tonumber(f[7]) or false
        s.had_e = f[8] ~= false
        if tonumber(f[3]) == s.count then
            s.e = tonumber(f[8]) or false
        else
            -- Another count (changed, or another process's definition): the
            -- starts still count; only the cached slot-free moment is stale.
            s.fresh = true
        end
    end
    local n_before = s.n
    -- Drop buckets that left the window.
    local cut = math.floor((now - s.per + 1) / s.width)
    if s.n > 0 and s.o < cut then
        local last = math.min(cut - 1, s.t)
        if last - s.o > 4 * 100 then
            for _, item in ipairs(buckets_of(s.key)) do
                if item[1] < cut then
                    s.n = s.n - item[2]
                    redis.call("HDEL", s.key, int(item[1]))
                end
            end
        else
            for b = s.o, last do
                local field = int(b)
                local v = tonumber(redis.call("HGET", s.key, field))
                if v then
                    s.n = s.n - v
                    redis.call("HDEL", s.key, field)
                end
            end
        end
    end
    if not s.o or s.o < cut then
        s.o = cut
        s.moved = true
    end
    s.dropped = s.n ~= n_before
    s.ok = s.n < s.count
    return s
end

-- The moment enough old buckets have left for one start: (b + 1) * width + per - 1.
local function rate_free_at(s)
    if s.e and s.e > now then
        return s.e
    end
    local need = s.n - s.count + 1
    local acc = 0
    for _, item in ipairs(buckets_of(s.key)) do
        if item[1] >= s.o then
            acc = acc + item[2]
            if acc >= need then
                s.e = (item[1] + 1) * s.width + s.per - 1
                s.new_e = true
                return s.e
            end
        end
    end
    s.e = now + s.per
    s.new_e = true
    return s.e
end

local function expire_rate(s)
    local ttl = s.per + s.width
    if s.q and s.q - now + s.per > ttl then
        ttl = math.ceil(s.q - now) + s.per
    end
    redis.call("PEXPIRE", s.key, int(ttl))
end

-- After a start: the new totals (and the definition when it is new).
local function save_admitted(s)
    local fields = {"n", int(s.n), "o", int(s.o), "t", int(s.t)}
    if s.fresh then
        for _, v in ipairs({"w", int(s.width), "p", int(s.per), "c", int(s.count)}) do
            fields[#fields + 1] = v
        end
    end
    redis.call("HSET", s.key, unpack(fields))
    if s.had_e then
        redis.call("HDEL", s.key, "e")
    end
    expire_rate(s)
end

-- After a refusal: only what changed (dropped buckets, a new slot-free
-- moment, the horizon), so that the common refusal writes one field.
local function save_refused(s, horizon_moved)
    if s.n == 0 and not s.q then
        -- Nothing in the window and nobody waiting: no state to keep.
        if not s.fresh then
            redis.call("DEL", s.key)
        end
        return
    end
    local fields = {}
    if s.dropped or s.moved then
        fields = {"n", int(s.n), "o", int(s.o)}
    end
    if s.fresh then
        for _, v in ipairs({"w", int(s.width), "p", int(s.per), "c", int(s.count)}) do
            fields[#fields + 1] = v
        end
    end
    if s.new_e then
        fields[#fields + 1] = "e"
        fields[#fields + 1] = int(s.e)
    end
    if horizon_moved then
        fields[#fields + 1] = "q"
        fields[#fields + 1] = num(s.q)
    end
    if #fields > 0 then
        redis.call("HSET", s.key, unpack(fields))
    end
    if horizon_moved then
        expire_rate(s)
    end
end

local function load_pool(j)
    local base = 4 + R * 3 + (j - 1) * 3
    local p = {
        zkey = KEYS[R + 2 * j - 1],
        mkey = KEYS[R + 2 * j],
        n = tonumber(ARGV[base + 1]),
        lease = tonumber(ARGV[base + 2]),
        hold = tonumber(ARGV[base + 3]),
        h = false, q = false, ok = false,
    }
    redis.call("ZREMRANGEBYSCORE", p.zkey, "-inf", int(now))
    local m = redis.call("HMGET", p.mkey, "h", "q")
    p.h = tonumber(m[1]) or false
    p.q = tonumber(m[2]) or false
    local mine = redis.call("ZSCORE", p.zkey, token)
    p.ok = mine ~= false or redis.call("ZCARD", p.zkey) < p.n
    return p
end

local function save_pool_meta(p)
    redis.call("HSET", p.mkey, "n", int(p.n), "l", int(p.lease))
    if p.q then
        redis.call("HSET", p.mkey, "q", num(p.q))
    end
    local ttl = p.lease
    if p.q and p.q - now > ttl then
        ttl = math.ceil(p.q - now)
    end
    redis.call("PEXPIRE", p.mkey, int(ttl + p.lease))
end

local rates, pools = {}, {}
local ok = true
for i = 1, R do
    rates[i] = load_rate(i)
    ok = ok and rates[i].ok
end
for j = 1, C do
    pools[j] = load_pool(j)
    ok = ok and pools[j].ok
end

if ok then
    for _, s in ipairs(rates) do
        local b = math.floor(now / s.width)
        redis.call("HINCRBY", s.key, int(b), 1)
        s.n = s.n + 1
        if not s.t or b > s.t then
            s.t = b
        end
        if b < s.o then
            s.o = b
        end
        s.e = false
        save_admitted(s)
    end
    for _, p in ipairs(pools) do
        redis.call("ZADD", p.zkey, int(now + p.lease), token)
        redis.call("PEXPIRE", p.zkey, int(p.lease))
        save_pool_meta(p)
    end
    return now
end

-- Refused: find when each refusing limit could admit the next waiter; the
-- latest one decides, and only its horizon moves on.
local best, best_at, best_spacing, best_kind = nil, nil, 0, nil
for i, s in ipairs(rates) do
    if not s.ok then
        local at = math.max(s.q or 0, rate_free_at(s))
        if best_at == nil or at > best_at then
            best, best_at, best_spacing, best_kind = i, at, s.per / s.count, "rate"
        end
    end
end
for j, p in ipairs(pools) do
    if not p.ok then
        local hold = p.h or p.hold
        local first = redis.call("ZRANGE", p.zkey, 0, 0, "WITHSCORES")
        local free_at = math.min(tonumber(first[2]), now + hold)
        local at = math.max(p.q or 0, free_at)
        if best_at == nil or at > best_at then
            best, best_at, best_spacing, best_kind = j, at, hold / p.n, "pool"
        end
    end
end

for i, s in ipairs(rates) do
    local moved = best_kind == "rate" and i == best
    if moved then
        s.q = best_at + best_spacing
    end
    save_refused(s, moved)
end
for j, p in ipairs(pools) do
    if best_kind == "pool" and j == best then
        p.q = best_at + best_spacing
        save_pool_meta(p)
    end
end

local index = best - 1
if best_kind == "pool" then
    index = index + R
end
return string.format("%d %d %d %d", now, math.ceil(best_at), index, math.ceil(best_spacing))
