"""The `fastmnist` command: parser.py declares it, main.py runs a subcommand and prints what it returns."""

from fastmnist.cli.main import main

__all__ = ["main"]
