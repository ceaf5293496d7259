"""The command line and what it runs: the digits demo, the bench command, the bundled data
set and the runnable examples (``python -m fastopt.cli.examples.<name>``).
"""

from . import datasets
from .main import main

__all__ = ["datasets", "main"]
