"""Chaos tests: fault injection (FaultProxy), crashes, migrations; each asserts recovery."""
