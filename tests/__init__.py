"""The test suite, in tiers by what a test needs (tests/conftest.py says which folder is which)."""
