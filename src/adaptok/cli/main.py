"""The `adaptok` command line: a thin layer over the library, one module per subcommand."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# subcommand -> (module under adaptok.cli, one-line help). Each module defines
# `add_arguments(parser)` and `run(args) -> int`; it is imported only when its command runs
# (or when --help needs its arguments), so `adaptok --help` stays fast.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("demo", "tokenize the bundled sample photo with every method and vectorize it"),
    "tokenize": ("tokenize", "draw the tokens of one or more images"),
    "vectorize": ("vectorize", "convert images to SVG through their tokens"),
    "train": ("train", "train an adaptive ViT (classification or dense prediction)"),
    "eval": ("evaluate", "evaluate a trained checkpoint"),
    "bench": ("bench", "time the tokenizers on this machine"),
}


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="adaptok", description="Adaptive visual tokenizers for Vision Transformers."
    )
    parser.add_argument("--version", action="version", version=f"adaptok {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(f"adaptok.cli.{module_name}")
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(sub)
        sub.set_defaults(run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `adaptok` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
