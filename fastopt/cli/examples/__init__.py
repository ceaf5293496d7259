"""Runnable examples: ``python -m fastopt.cli.examples.<name>``."""
