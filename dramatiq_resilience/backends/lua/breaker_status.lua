-- breaker_status: read a breaker for operators, without changing it.
--
-- KEYS, shared ARGV: see _breaker.lua (only the window setting is used).
-- Returns: {exists (0/1), state, epoch, now, retry_after_ms, half_open_at,
--           cooldown, rounds, calls, failures, slow, consecutive,
--           probes_in_flight, probe_successes, opened_at, changed_at, reason,
--           trip_failures, trip_calls}.  Times and durations in milliseconds.
--
-- Race closed: none needed; it is read-only, and one script reads the state,
-- the window and the permits at one instant.
local now = now_ms()
local st, created = load_state(now)
if created then
    return {0, "closed", 0, now, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, "", 0, 0}
end
local totals = window_totals(now, false)
local opened = st.state == "open"
local in_flight = redis.call("ZCOUNT", KEYS[3], "(" .. now, "+inf")
return {
    1, st.state, st.epoch, now,
    opened and math.max(0, st.half_open_at - now) or 0,
    opened and st.half_open_at or 0,
    st.cooldown, st.rounds, totals.calls, totals.failures, totals.slow, streak_length(st),
    in_flight, st.probe_successes, st.opened_at, st.changed_at, st.reason,
    st.trip_failures, st.trip_calls,
}
