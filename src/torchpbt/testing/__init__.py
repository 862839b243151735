"""Helpers for testing and benchmarking torchpbt itself (not needed to use it)."""
