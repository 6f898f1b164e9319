"""Scorer implementations, one file each. ``LocalScorer`` (local.py) is the default."""
