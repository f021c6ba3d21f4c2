"""The time bound of the fuzz tests."""

FUZZ_TIME_LIMIT_S = 0.5
"""Longest one decode of hostile input may take. Real decodes take microseconds, so only a hang or a
runaway (quadratic, exponential) decode trips this, not a CI machine busy with other tests."""
