"""The contract suite: the same tests on every backend (see conftest.py)."""
