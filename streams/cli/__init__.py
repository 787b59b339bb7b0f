"""The ``modwatch`` command: ``main(argv=None) -> int``, one module per command group."""

from streams.cli.main import main

__all__ = ["main"]
