"""The reliability suite: repetition, faults, sharing and bad input on every backend (see conftest.py)."""
