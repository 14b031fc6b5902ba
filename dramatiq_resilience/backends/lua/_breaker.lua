-- Shared by every breaker_*.lua script; RedisBreakerOps prepends it (after
-- _prelude.lua), so each script stays one atomic step with one copy of the
-- rules.  The Python twin is backends/stub_breaker.py; the contract suite
-- (tests/contract/test_breaker.py) holds both to the same results.
--
-- KEYS (all hash-tagged by the breaker name, so one script may touch them all):
--   KEYS[1] state   hash: state, epoch, half_open_at, cooldown, rounds, opened_at,
--                   changed_at, reason, trip_failures, trip_calls, probe_successes,
--                   streak (comma-separated failure times), last_success
--   KEYS[2] window  hash: w (bucket width ms), head (newest bucket index), calls,
--                   failures, slow (totals), and per bucket i: c:i, f:i, s:i
--   KEYS[3] probes  sorted set of probe permits: member = message id,
--                   score = lease deadline (ms)
--   KEYS[4] history list of the latest transitions (JSON), newest first
-- ARGV shared by every breaker script:
--   ARGV[1] now (see _prelude.lua)      ARGV[2] breaker name
--   ARGV[3] notice channel               ARGV[4] origin (caller's token)
--   ARGV[5] failure rate, parts per million (0 = off)
--   ARGV[6] min calls                    ARGV[7] window (ms)
--   ARGV[8] consecutive failures (0 = off)
--   ARGV[9] slow-call rate, parts per million (0 = off)
--   ARGV[10] cooldown (ms)               ARGV[11] cooldown max (ms)
--   ARGV[12] probes                      ARGV[13] successes to close
--   ARGV[14] history length
-- Each script's own arguments start at ARGV[15].
--
-- Every transition increments the epoch, clears the window, the streak and
-- the probe permits, is pushed on the history and published on the channel,
-- all inside the script that decided it: no process can act on a state that
-- another has already left.

local NAME, CHANNEL, ORIGIN = ARGV[2], ARGV[3], ARGV[4]
local S = {
    rate = tonumber(ARGV[5]),
    min_calls = tonumber(ARGV[6]),
    window = tonumber(ARGV[7]),
    consecutive = tonumber(ARGV[8]),
    slow_rate = tonumber(ARGV[9]),
    cooldown = tonumber(ARGV[10]),
    cooldown_max = tonumber(ARGV[11]),
    probes = tonumber(ARGV[12]),
    successes = tonumber(ARGV[13]),
    history = tonumber(ARGV[14]),
}
local STREAK_CAP = 100
local FIELDS = {
    "state", "epoch", "half_open_at", "cooldown", "rounds", "opened_at", "changed_at", "reason",
    "trip_failures", "trip_calls", "probe_successes", "streak", "last_success",
}
local TEXT = {state = true, reason = true, streak = true}

-- The state hash as a table, and whether it had to be created.
local function load_state(now)
    local values = redis.call("HMGET", KEYS[1], unpack(FIELDS))
    if not values[1] then
        return {
            state = "closed", epoch = 0, half_open_at = 0, cooldown = S.cooldown, rounds = 0,
            opened_at = 0, changed_at = now, reason = "created", trip_failures = 0, trip_calls = 0,
            probe_successes = 0, streak = "", last_success = 0,
        }, true
    end
    local st = {}
    for i, field in ipairs(FIELDS) do
        if TEXT[field] then
            st[field] = values[i] or ""
        else
            st[field] = tonumber(values[i]) or 0
        end
    end
    return st, false
end

local function save_state(st)
    local args = {}
    for _, field in ipairs(FIELDS) do
        args[#args + 1] = field
        args[#args + 1] = st[field]
    end
    redis.call("HSET", KEYS[1], unpack(args))
end

local function split_streak(text)
    local times = {}
    for t in string.gmatch(text, "[^,]+") do
        times[#times + 1] = tonumber(t)
    end
    return times
end

local function streak_length(st)
    if st.streak == "" then
        return 0
    end
    local _, commas = string.gsub(st.streak, ",", "")
    return commas + 1
end

-- The window's geometry: see backends/breaker.py window_geometry().
local function geometry()
    local width = math.max(1, math.floor(S.window / 60))
    return width, math.floor(S.window / width)
end

-- The window's totals at now.  With write, buckets that left the window are
-- deleted and the totals stored; the table also carries head and width.
local function window_totals(now, write)
    local width, count = geometry()
    local index = math.floor(now / width)
    local raw = redis.call("HMGET", KEYS[2], "w", "head", "calls", "failures", "slow")
    local head = tonumber(raw[2])
    if tonumber(raw[1]) ~= width or not head or index - head >= count then
        if write then
            redis.call("DEL", KEYS[2])
        end
        return {calls = 0, failures = 0, slow = 0, head = index, width = width}
    end
    local totals = {
        calls = tonumber(raw[3]) or 0, failures = tonumber(raw[4]) or 0, slow = tonumber(raw[5]) or 0,
        head = head, width = width,
    }
    if index > head then
        local fields = {}
        for i = head - count + 1, index - count do
            fields[#fields + 1] = "c:" .. i
            fields[#fields + 1] = "f:" .. i
            fields[#fields + 1] = "s:" .. i
        end
        if #fields > 0 then
            local values = redis.call("HMGET", KEYS[2], unpack(fields))
            for j = 1, #fields, 3 do
                totals.calls = totals.calls - (tonumber(values[j]) or 0)
                totals.failures = totals.failures - (tonumber(values[j + 1]) or 0)
                totals.slow = totals.slow - (tonumber(values[j + 2]) or 0)
            end
            if write then
                redis.call("HDEL", KEYS[2], unpack(fields))
            end
        end
        totals.head = index
    end
    return totals
end

-- Why a closed breaker opens now ("" if not), with the failures and calls that tripped it.
-- Rates compare in parts per million so that Lua and Python agree exactly.
local function trip_reason(streak, totals)
    if S.consecutive > 0 and streak >= S.consecutive then
        return "consecutive_failures", streak, streak
    end
    if totals.calls > 0 and totals.calls >= S.min_calls then
        if S.rate > 0 and totals.failures * 1000000 >= S.rate * totals.calls then
            return "failure_rate", totals.failures, totals.calls
        end
        if S.slow_rate > 0 and totals.slow * 1000000 >= S.slow_rate * totals.calls then
            return "slow_call_rate", totals.slow, totals.calls
        end
    end
    return "", 0, 0
end

-- What a message should wait when it may not run.
local function retry_after(st, now)
    if st.state == "open" then
        return math.max(0, st.half_open_at - now)
    elseif st.state == "forced_open" or st.state == "half_open" then
        return S.cooldown
    end
    return 0
end

-- Move to state `to` for `reason`; returns the transition as JSON.
local function transition(st, to, reason, now, failures, calls)
    local from = st.state
    st.state = to
    st.epoch = st.epoch + 1
    st.changed_at = now
    st.reason = reason
    st.probe_successes = 0
    st.streak = ""
    redis.call("DEL", KEYS[2], KEYS[3])
    local cooldown, half_open_at = 0, 0
    if to == "open" then
        cooldown = st.cooldown
        st.opened_at = now
        st.half_open_at = now + cooldown
        st.trip_failures = failures
        st.trip_calls = calls
        half_open_at = st.half_open_at
    end
    save_state(st)
    local notice = cjson.encode({
        breaker = NAME, from_state = from, to_state = to, reason = reason, cooldown_ms = cooldown,
        failures = failures, calls = calls, epoch = st.epoch, at_ms = now,
        half_open_at_ms = half_open_at, origin = ORIGIN,
    })
    redis.call("LPUSH", KEYS[4], notice)
    redis.call("LTRIM", KEYS[4], 0, S.history - 1)
    redis.call("PUBLISH", CHANNEL, notice)
    return notice
end
