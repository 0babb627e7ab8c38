"""Output file names for commands that write one file per input image."""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import AdaptokError
from ..io import display_name

__all__ = ["add_progress_option", "file_error", "output_paths", "progress_bar"]

NAME_MAX = 255


def output_paths(
    images: list[Path], output: Path | None, *, suffix: str, reserve: int = 0
) -> list[Path]:
    """Where each image's output goes: `output` itself for one image when it names a file of
    the suffix's extension (another extension is refused), else a folder (`output`, or the
    current folder) of
    NAME + suffix (e.g. NAME.svg, NAME_grid.png); `reserve` bytes of name are kept free for
    files written beside it (e.g. ".preview").

    Names are the inputs' base names (never their folders, so '..' cannot escape the output
    folder), shortened to fit the file system, and numbered when two inputs share a name. The
    output folder is created when missing.
    """
    extension = Path("name" + suffix).suffix.lower()  # Path(".svg").suffix is empty
    if output is not None and len(images) == 1 and output.suffix and not output.is_dir():
        if output.suffix.lower() != extension:
            raise AdaptokError(
                f"this command writes {extension[1:].upper()}, not {output.suffix}: name the "
                f"output NAME{extension}, or give a folder"
            )
        return [output]
    folder = Path(".") if output is None else output
    if output is not None and output.suffix.lower() == extension and len(images) > 1:
        raise AdaptokError(
            f"{len(images)} images cannot all be written to {display_name(output)}; "
            "give a folder with -o"
        )
    if output is not None:
        output.mkdir(parents=True, exist_ok=True)
    taken: dict[str, int] = {}
    paths = []
    for image in images:  # one name per file: a loop over files, not pixels
        stem = _fit_name(image.stem or "image", reserve=len(suffix) + reserve + 8)
        count = taken.get(stem, 0)
        taken[stem] = count + 1
        paths.append(folder / (f"{stem}-{count + 1}{suffix}" if count else f"{stem}{suffix}"))
    return paths


def _fit_name(stem: str, reserve: int) -> str:
    """Cut a file name stem so that it and `reserve` more bytes fit in NAME_MAX bytes."""
    raw = os.fsencode(stem)
    if len(raw) + reserve <= NAME_MAX:
        return stem
    return os.fsdecode(raw[: NAME_MAX - reserve].decode("utf-8", "ignore").encode("utf-8"))


def file_error(source: Path, error: Exception) -> str:
    """The line reporting that one input file failed, naming the file once (the library's
    messages about a file already start with its name)."""
    name, message = display_name(source), display_name(str(error))
    return f"error: {message}" if name in message else f"error: {name}: {message}"


def add_progress_option(parser: argparse.ArgumentParser) -> None:
    """`--no-progress`, for commands that show a progress bar over their input files."""
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar (there is none for one file, nor when stderr is not a terminal)",
    )


def progress_bar(items: Iterable[Any], count: int, args: argparse.Namespace) -> Any:
    """A tqdm bar over `count` input files, shown only where it helps: not for one file, not
    with --no-progress, and not when stderr is not a terminal (a log file or a pipe would get
    every refresh as a line of carriage returns; tqdm's `disable=None`)."""
    from tqdm import tqdm

    off = args.no_progress or count < 2
    return tqdm(items, total=count, unit="image", disable=True if off else None)
