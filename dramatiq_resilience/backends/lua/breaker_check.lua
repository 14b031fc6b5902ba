-- breaker_check: may a message run through this breaker now?
--
-- KEYS, shared ARGV: see _breaker.lua.
-- ARGV[15]: member, the message id asking (a probe permit is leased to it).
-- ARGV[16]: lease in milliseconds of a probe permit.
-- Returns: {state, epoch, now, retry_after_ms, probe (0/1), created (0/1),
--           consecutive, transition JSON or ""}.
--   An open breaker whose cooldown elapsed becomes half-open here (the
--   transition is returned and published).  In half-open the caller gets a
--   permit if fewer than `probes` permits are held or were used successfully
--   this round; expired leases are dropped first, so a dead prober's permit
--   frees itself.
--
-- Race closed: N processes reaching the half-open moment together.  Exactly
-- one script makes the open -> half_open transition, and permits are counted
-- and taken in the same step, so no more than `probes` messages run in a
-- half-open round across every process and host.
local now = now_ms()
local member, lease = ARGV[15], tonumber(ARGV[16])
local st, created = load_state(now)
if created then
    save_state(st)
end
local notice = ""
if st.state == "open" and now >= st.half_open_at then
    notice = transition(st, "half_open", "cooldown_elapsed", now, 0, 0)
end
local probe = 0
if st.state == "half_open" then
    redis.call("ZREMRANGEBYSCORE", KEYS[3], "-inf", now)
    if redis.call("ZSCORE", KEYS[3], member)
        or redis.call("ZCARD", KEYS[3]) + st.probe_successes < S.probes then
        redis.call("ZADD", KEYS[3], now + lease, member)
        probe = 1
    end
end
local wait = 0
if probe == 0 then
    wait = retry_after(st, now)
end
return {st.state, st.epoch, now, wait, probe, created and 1 or 0, streak_length(st), notice}
