"""The `adaptok` command line: a thin layer over the library, one module per subcommand.

Each command module defines `add_arguments(parser)` and `run(args) -> int`, and imports the heavy
parts of the library (torch, timm, the models) only inside `run`. `adaptok --help` imports no
command module at all; `adaptok CMD ...` imports only CMD's.

Ordinary mistakes (`AdaptokError`, a missing file, bad JSON, a GPU that is not there) end with
one line on stderr and exit code 2; a traceback means a bug (or `--debug` was given).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# subcommand -> (module under adaptok.cli, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("demo", "tokenize the bundled sample photo with every method and vectorize it"),
    "tokenize": ("tokenize", "draw the tokens of one or more images"),
    "vectorize": ("vectorize", "convert images to SVG through their tokens"),
    "train": ("train", "train an adaptive ViT (classification or dense prediction)"),
    "eval": ("evaluate", "evaluate a trained checkpoint"),
    "bench": ("bench", "time the tokenizers on this machine"),
}

EXIT_USAGE = 2


def _show_defaults(parser: argparse.ArgumentParser) -> None:
    """End every option's help with its default (argparse's own ArgumentDefaultsHelpFormatter
    skips options without help text and prints "default: None" for unset ones)."""
    for action in parser._actions:
        if not action.option_strings or action.default in (None, False, argparse.SUPPRESS):
            continue
        if "default" not in (action.help or ""):  # a help may name its default in its words
            action.help = f"{action.help or ''} (default: %(default)s)".strip()


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only `command`'s module is imported (none for the top-level help)."""
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="adaptok", description="Adaptive visual tokenizers for Vision Transformers."
    )
    parser.add_argument("--version", action="version", version=f"adaptok {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show the full traceback of every error"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        sub = subparsers.add_parser(
            name,
            help=help_text,
            description=help_text,
        )
        if name == command:
            module = importlib.import_module(f"adaptok.cli.{module_name}")
            module.add_arguments(sub)
            _show_defaults(sub)
            sub.set_defaults(run=module.run)
    return parser


def _command(argv: Sequence[str]) -> str | None:
    """The subcommand named in argv (the first word that is one), if any."""
    return next((word for word in argv if word in COMMANDS), None)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `adaptok` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_command(argv))
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print("adaptok: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        message = _ordinary_error(error)
        if message is None or args.debug:
            raise
        print(f"adaptok {args.command}: error: {message}", file=sys.stderr)
        return EXIT_USAGE


def _ordinary_error(error: Exception) -> str | None:
    """The one-line message of a mistake the user can fix; None for a bug."""
    import json

    from ..errors import AdaptokError

    if isinstance(error, AdaptokError):
        return str(error)
    if isinstance(error, json.JSONDecodeError):
        return f"not valid JSON ({error.msg} at line {error.lineno}, column {error.colno})"
    if isinstance(error, (FileNotFoundError, IsADirectoryError, PermissionError)):
        return f"{error.filename}: {error.strerror}"
    return None


if __name__ == "__main__":
    sys.exit(main())
