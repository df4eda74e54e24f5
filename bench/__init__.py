"""Benchmarks (``make bench``): plain scripts that print figures, no pytest."""
