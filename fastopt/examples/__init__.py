"""Runnable examples: ``python -m fastopt.examples.<name>``."""
