"""Benchmarks: commands that print figures, run on demand (never in the test run)."""
