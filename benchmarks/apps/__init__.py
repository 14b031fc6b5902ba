"""Modules that the benchmark's ``dramatiq`` CLI workers load."""
