"""The `adaptok` command line: a thin layer over the library, one module per subcommand.

Each command module defines `add_arguments(parser)` and `run(args) -> int`, and imports the heavy
parts of the library (torch, timm, the models) only inside `run`. `adaptok --help` imports no
command module at all; `adaptok CMD ...` imports only CMD's.

Ordinary mistakes (`AdaptokError`, a missing file, bad JSON, a GPU that is not there) end with
one line on stderr and exit code 2; a traceback means a bug (or `--debug` was given). Warnings
print as one line too ("adaptok train: warning: ...").

Options every command takes (`COMMON_OPTIONS`: `--debug`, `--threads`) are declared once here and
accepted before or after the command's name; `--threads` is applied here, before any work.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

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


def _add_common_options(parser: argparse.ArgumentParser, *, top_level: bool) -> None:
    """`--debug` and `--threads`, for the top-level parser (with their defaults) and for every
    subcommand (without defaults, so that `adaptok --debug CMD` is not reset by CMD's parser)."""

    def default(value: object) -> object:
        return value if top_level else argparse.SUPPRESS

    parser.add_argument(
        "--debug",
        action="store_true",
        default=default(False),
        help="show the full traceback of every error (and warnings with their source line)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=default(None),
        metavar="N",
        help="torch CPU threads; default: $OMP_NUM_THREADS if set, else " + THREADS_POLICY_TEXT,
    )


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
    _add_common_options(parser, top_level=True)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        # "resolve": a command module that still declares a common option of its own gives way
        # to the one declared here (its later declaration would otherwise be a conflict)
        sub = subparsers.add_parser(
            name, help=help_text, description=help_text, conflict_handler="resolve"
        )
        if name == command:
            module = importlib.import_module(f"adaptok.cli.{module_name}")
            module.add_arguments(sub)
            _add_common_options(sub, top_level=False)
            _show_defaults(sub)
            sub.set_defaults(run=module.run)
    return parser


# --threads' default (the measurement behind it: benchmarks/results/threads.md)
THREADS_POLICY_TEXT = (
    "the CPUs this process may use, less one per busy one (the 1-minute load average, "
    "rounded up after 0.25): 1 on a shared machine"
)


def default_threads() -> int:
    """Torch CPU threads when neither --threads nor $OMP_NUM_THREADS says: the CPUs this process
    may use (`os.sched_getaffinity`, at most torch's own default) less the ones other work keeps
    busy (`ceil(load average - 0.25)`), at least 1.

    Why: torch's small multi-threaded ops wait on every thread, and a thread that shares its core
    with another busy process stalls them all; on 2 cores beside one busy process every command
    ran 1.2 to 6 times slower on 2 threads than on 1 (benchmarks/results/threads.md). The load
    average lags (a minute), hence the low threshold.
    """
    import math

    import torch

    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        available = os.cpu_count() or 1
    try:
        busy = max(0, math.ceil(os.getloadavg()[0] - 0.25))
    except (AttributeError, OSError):
        busy = 0
    return max(1, min(available, torch.get_num_threads()) - busy)


def _apply_threads(threads: int | None) -> None:
    """Set torch's CPU threads before any work: `threads` if given, else $OMP_NUM_THREADS if
    set (torch reads it itself), else `default_threads()`."""
    import torch

    from ..validate import check_int

    if threads is not None:
        torch.set_num_threads(check_int("--threads", threads))
    elif not os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(default_threads())


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
        with _one_line_warnings(args.command, enabled=not args.debug):
            _apply_threads(args.threads)
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


@contextmanager
def _one_line_warnings(command: str, *, enabled: bool) -> Iterator[None]:
    """Print warnings as "adaptok CMD: warning: MESSAGE" (the category named unless it is a plain
    UserWarning), not Python's two lines with a file name and a source line."""
    if not enabled:
        yield
        return

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        kind = "" if category is UserWarning else f" ({category.__name__})"
        print(f"adaptok {command}: warning: {message}{kind}", file=file or sys.stderr)

    previous = warnings.showwarning
    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = previous


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
