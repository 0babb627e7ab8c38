"""The bundled default weights (assets/dht_default.pt, made by scripts/pretrain_dht.py)."""

from __future__ import annotations

from importlib import resources

import torch

from ...errors import AdaptokError
from ...weights import read_file
from .tokenizer import DHTTokenizer

__all__ = [
    "DEFAULT_WEIGHTS",
    "describe_default_weights",
    "load_default_tokenizer",
    "load_tokenizer",
    "save_tokenizer",
]

DEFAULT_WEIGHTS = "dht_default.pt"


def save_tokenizer(tokenizer: DHTTokenizer, path: str, *, info: str = "") -> None:
    """Save config + fp32 state_dict + a note on how it was trained (loadable with weights_only)."""
    state = {name: value.detach().float().cpu() for name, value in tokenizer.state_dict().items()}
    torch.save({"config": tokenizer.config(), "state_dict": state, "info": info}, path)


def load_tokenizer(path: str, *, input_space: str = "unit", device=None) -> DHTTokenizer:
    """Load a tokenizer saved by `save_tokenizer`, in eval mode."""
    saved = read_file(path, what="dHT weights")
    if not isinstance(saved, dict) or not {"config", "state_dict"} <= set(saved):
        raise AdaptokError(
            f"dHT weights {path} were not saved by save_tokenizer (no config and state_dict)"
        )
    tokenizer = DHTTokenizer(**saved["config"], input_space=input_space)
    tokenizer.load_state_dict(saved["state_dict"], strict=True)
    return tokenizer.to(device).eval()


def load_default_tokenizer(*, input_space: str = "unit", device=None) -> DHTTokenizer:
    """The tokenizer with the weights bundled in the package, in eval mode.

    Args:
        input_space: "unit" for images in [0, 1], "imagenet" for ImageNet-normalised images.
        device: where to put it.
    """
    with resources.as_file(resources.files("adaptok") / "assets" / DEFAULT_WEIGHTS) as path:
        if not path.is_file():
            raise AdaptokError(
                f"bundled dHT weights {path} are missing; run scripts/pretrain_dht.py"
            )
        return load_tokenizer(str(path), input_space=input_space, device=device)


def describe_default_weights() -> str:
    """How the bundled weights were trained (the note saved with them)."""
    with resources.as_file(resources.files("adaptok") / "assets" / DEFAULT_WEIGHTS) as path:
        return str(read_file(path, what="dHT weights").get("info", ""))
