"""Minimal Django app of the benchmark: the table the ORM baselines write to."""
