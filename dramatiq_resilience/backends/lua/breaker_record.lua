-- breaker_record: record call outcomes, and trip or settle the breaker.
--
-- KEYS, shared ARGV: see _breaker.lua.
-- ARGV[15]: epoch in which the calls were admitted.
-- ARGV[16], ARGV[17], ARGV[18]: calls, failures, slow calls of a batch
--           (for a probe, ARGV[18] > 0 says it was slow).
-- ARGV[19]: time (ms) of the batch's latest success, or 0.
-- ARGV[20]: probe member ("" for a batch); ARGV[21]: probe outcome
--           ("success", "failure" or "release").
-- Returns: {state, epoch, now, retry_after_ms, created (0/1), consecutive,
--           window calls, window failures, window slow calls, applied (0/1),
--           transition JSON or ""}.
--
-- A batch is applied only if the breaker is still closed (or forced closed)
-- in the epoch its calls were admitted in: outcomes of calls admitted before
-- a trip never count against the next closed period.  Failures are stamped
-- with now; the batch's latest success drops the failures stamped before it
-- from the consecutive streak (a success flushed late does not erase the
-- failures that came after it).
-- A probe outcome counts only while its permit is held: a success adds to the
-- round's successes (enough of them close the breaker), a failure reopens it
-- with the cooldown doubled (capped), a release frees the permit.  With slow
-- calls counted (ARGV[9] > 0), a slow success is a failed probe (reason
-- "probe_slow"): a breaker opened by the slow-call rate must not close on a
-- call that was slow again (resilience4j judges half-open calls the same way).
--
-- Race closed: two processes recording the failure that reaches a threshold.
-- Counting and the decision happen in one step, so the breaker opens exactly
-- once and later batches of the old epoch are dropped.
local now = now_ms()
local epoch = tonumber(ARGV[15])
local calls, failures, slow = tonumber(ARGV[16]), tonumber(ARGV[17]), tonumber(ARGV[18])
local last_success = math.min(tonumber(ARGV[19]), now)
local member, outcome = ARGV[20], ARGV[21]
local st, created = load_state(now)
if created then
    save_state(st)
end
local notice, applied = "", 0
local totals = {calls = 0, failures = 0, slow = 0}
if member ~= "" then
    if st.state == "half_open" and redis.call("ZREM", KEYS[3], member) == 1 then
        applied = 1
        local reason = "probe_failed"
        if outcome == "success" and slow > 0 and S.slow_rate > 0 then
            outcome, reason = "failure", "probe_slow"
        end
        if outcome == "success" then
            st.probe_successes = st.probe_successes + 1
            if st.probe_successes >= S.successes then
                local successes = st.probe_successes
                st.rounds = 0
                st.cooldown = S.cooldown
                notice = transition(st, "closed", "probes_succeeded", now, 0, successes)
            else
                save_state(st)
            end
        elseif outcome == "failure" then
            st.rounds = st.rounds + 1
            st.cooldown = math.floor(math.min(S.cooldown * 2 ^ st.rounds, S.cooldown_max))
            notice = transition(st, "open", reason, now, 1, st.probe_successes + 1)
        end
    end
elseif (st.state == "closed" or st.state == "forced_closed") and st.epoch == epoch then
    applied = 1
    totals = window_totals(now, true)
    local head = totals.head
    totals.calls = totals.calls + calls
    totals.failures = totals.failures + failures
    totals.slow = totals.slow + slow
    redis.call("HSET", KEYS[2], "w", totals.width, "head", head,
        "calls", totals.calls, "failures", totals.failures, "slow", totals.slow)
    redis.call("HINCRBY", KEYS[2], "c:" .. head, calls)
    redis.call("HINCRBY", KEYS[2], "f:" .. head, failures)
    redis.call("HINCRBY", KEYS[2], "s:" .. head, slow)
    local streak = split_streak(st.streak)
    if last_success > st.last_success then
        st.last_success = last_success
        local kept = {}
        for _, t in ipairs(streak) do
            if t > last_success then
                kept[#kept + 1] = t
            end
        end
        streak = kept
    end
    for _ = 1, failures do
        streak[#streak + 1] = now
    end
    local cap = S.consecutive > 0 and S.consecutive or STREAK_CAP
    while #streak > cap do
        table.remove(streak, 1)
    end
    st.streak = table.concat(streak, ",")
    local reason, tripped_failures, tripped_calls = "", 0, 0
    if st.state == "closed" then
        reason, tripped_failures, tripped_calls = trip_reason(#streak, totals)
    end
    if reason ~= "" then
        st.rounds = 0
        st.cooldown = S.cooldown
        notice = transition(st, "open", reason, now, tripped_failures, tripped_calls)
        totals = {calls = 0, failures = 0, slow = 0}
    else
        save_state(st)
    end
end
return {
    st.state, st.epoch, now, retry_after(st, now), created and 1 or 0, streak_length(st),
    totals.calls, totals.failures, totals.slow, applied, notice,
}
