-- breaker_force: an operator forces a breaker open or closed, or resets it.
--
-- KEYS, shared ARGV: see _breaker.lua.
-- ARGV[15]: "open" (forced_open: every message waits until closed or reset),
--           "closed" (forced_closed: every message runs, nothing trips it), or
--           "reset" (closed with empty counts, base cooldown, no failed rounds).
-- Returns: the transition as JSON.  A transition is made (and published) even
--   when the state does not change, so every process drops its cached state.
--
-- Race closed: a force landing between another process's check and record.
-- The epoch moves, so outcomes of calls admitted before it are dropped and
-- permits of an interrupted half-open round are void.
local now = now_ms()
local action = ARGV[15]
local st, created = load_state(now)
if action == "open" then
    return transition(st, "forced_open", "forced_open", now, 0, 0)
elseif action == "closed" then
    return transition(st, "forced_closed", "forced_closed", now, 0, 0)
elseif action == "reset" then
    st.rounds = 0
    st.cooldown = S.cooldown
    st.last_success = 0
    return transition(st, "closed", "reset", now, 0, 0)
end
return redis.error_reply("unknown breaker action " .. tostring(action))
