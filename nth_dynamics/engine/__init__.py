"""The finite-width engine: the networks, their kernel tower, the truncated
hierarchy and the real network's training (docs/theory.md §2–§5).

Everything here is a pure function of arrays and Equinox modules; nothing
reads a scenario or touches a file.
"""
