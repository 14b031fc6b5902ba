-- now: the backend's current time.
--
-- KEYS: none.
-- ARGV[1]: now in milliseconds, or "" for the server clock (see _prelude.lua).
-- Returns: the current time in milliseconds since the epoch (integer).
--
-- Used by RedisBackend.now_ms() and by the contract suite to prove that the
-- prelude honours an injected clock and otherwise reads Redis TIME.
return now_ms()
