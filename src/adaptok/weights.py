"""The one reader of weight files: scorer backbones, timm checkpoints, training checkpoints and
dHT tokenizers all come through here, so every file problem reads the same way.

Files are read without executing code: `.safetensors` with safetensors, anything else with
`torch.load(weights_only=True)`. Nothing is ever downloaded: callers pass a local path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .errors import AdaptokError

__all__ = ["read_file", "read_state_dict"]

# Keys under which checkpoints commonly nest their state dict (ours use "model").
WRAPPERS = ("model", "state_dict", "model_state_dict")


def read_file(
    path: str | Path, *, what: str = "weights file", map_location: str | torch.device = "cpu"
) -> Any:
    """Read a weights file as stored (a dict for every format we write).

    Args:
        path: a local `.safetensors` file or a file saved with `torch.save`.
        what: how the file is named in error messages ("checkpoint", "dHT weights", ...).
        map_location: where tensors are loaded.

    Raises:
        AdaptokError: the file is missing, is a folder, or cannot be read without running code.
    """
    path = Path(path)
    if not path.exists():
        raise AdaptokError(f"{what} {path}: no such file; check the path")
    if not path.is_file():
        raise AdaptokError(f"{what} {path} is a folder, not a file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device=str(map_location))
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch and safetensors raise many types for bad files
        raise AdaptokError(
            f"{what} {path} cannot be read as weights-only tensors "
            f"({type(error).__name__}: {_first_line(error)}); save it with "
            "torch.save(model.state_dict(), path) or as .safetensors"
        ) from error


def read_state_dict(path: str | Path, *, what: str = "weights file") -> dict[str, Tensor]:
    """Read a state dict of tensors, unwrapping {"model": ...} / {"state_dict": ...} nesting.

    Raises:
        AdaptokError: as `read_file`, or the file does not hold a state dict of tensors.
    """
    state = read_file(path, what=what)
    for key in WRAPPERS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        kind = type(state).__name__
        raise AdaptokError(f"{what} {path} does not hold a state dict of tensors (got a {kind})")
    return state


def _first_line(error: Exception) -> str:
    """torch's unpickling errors run over many lines; the first says what went wrong."""
    return (str(error).strip().splitlines() or [""])[0]
