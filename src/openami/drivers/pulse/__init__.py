"""Pulse inputs: counters of a meter's pulse output turned into register readings."""
