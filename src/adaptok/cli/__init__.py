"""The `adaptok` command line: `main()` plus one module per subcommand."""

from .main import main

__all__ = ["main"]
