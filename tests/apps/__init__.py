"""Modules that real ``dramatiq`` CLI workers load in tests; configured by environment."""
