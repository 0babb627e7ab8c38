"""`build_model` (a model from a config) and `load_model` (a model from a training checkpoint)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from ..errors import AdaptokError
from ..weights import read_file
from .builders import assemble_model
from .config import ModelConfig
from .encoder import MaskedEncoder
from .vit import AdaptiveViT

__all__ = ["build_model", "load_model", "model_from_checkpoint"]


def build_model(config: ModelConfig) -> AdaptiveViT:
    """Assemble an AdaptiveViT from a config: a fresh trunk, or the timm backbone it names
    retrofitted (built with pretrained=False, its local weights file loaded when given)."""
    if config.backbone is not None:
        from .retrofitting import retrofit_from_config

        return retrofit_from_config(config)
    return assemble_model(config, encoder=MaskedEncoder(config.encoder))


def model_from_checkpoint(state: dict[str, Any], *, source: str = "checkpoint") -> AdaptiveViT:
    """The trained model of a checkpoint dict written by `adaptok train`, in eval mode.

    Raises:
        AdaptokError: the dict is not an adaptok training checkpoint.
    """
    if "model_config" not in state or "model" not in state:
        raise AdaptokError(
            f"{source} is not an adaptok training checkpoint (no model_config); for timm weights "
            "use adaptok.retrofit(timm_model) or `adaptok train --backbone NAME --weights FILE`"
        )
    config = ModelConfig.from_dict(state["model_config"])
    # The trained weights include the backbone's: its original file is not read again.
    model = build_model(dataclasses.replace(config, backbone_weights=None))
    model.load_state_dict(state["model"], strict=True)
    return model.eval()


def load_model(path: str | Path, *, device: torch.device | str = "cpu") -> AdaptiveViT:
    """Load a model trained by `adaptok train` (its last.pt or best.pt), in eval mode.

    It takes images as the training datasets gave them, ImageNet-normalised:
    `model(adaptok.ops.normalize(images))` for images in [0, 1].

    Args:
        path: the checkpoint file.
        device: where to put the model.
    """
    state = read_file(path, what="checkpoint")
    return model_from_checkpoint(state, source=str(path)).to(device)
