"""Benchmarks that exercise the real code paths (``openami bench ...``), so the numbers are honest."""
