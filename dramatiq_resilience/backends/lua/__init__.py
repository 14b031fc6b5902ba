"""Lua scripts of RedisBackend, one per atomic operation.

Each opens with a header naming KEYS, ARGV, the return value and the race it closes.
"""
