"""Start a model from a training checkpoint's weights, on the same or another tokenizer.

The retrofit protocol from the command line (`adaptok train --init-from runs/parent/best.pt`):
the parent is rebuilt from its checkpoint's model_config; its weights go into the new model

* directly, when the new model has the parent's parameters (same embedder family and position
  kind: only the partitioner changes, e.g. grid -> quadtree with the patch embedder), or
* through timm, otherwise: `export_timm` writes the parent into a timm ViT of its shape, and
  `retrofit` builds the new model around that ViT (e.g. a grid parent -> dHT tokens with the
  dHT embedder, whose position columns come from the parent's learned table).
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import torch
from torch import nn

from ..embed import PatchEmbedder
from ..errors import AdaptokError
from ..models import AdaptiveViT, ModelConfig, build_model, export_timm, model_from_checkpoint
from ..models.retrofitting import retrofit, retrofit_defaults
from ..ops import sincos_2d
from .checkpoint import load_checkpoint

__all__ = [
    "init_from_checkpoint",
    "init_from_model",
    "parent_config",
    "timm_vit_for",
    "with_learned_positions",
]

TORCH_ACTIVATIONS = {
    "gelu": nn.GELU,
    "gelu_tanh": functools.partial(nn.GELU, approximate="tanh"),
}


def parent_config(path: str | Path) -> ModelConfig:
    """The model_config of a checkpoint written by `adaptok train` / `fit`.

    Raises:
        AdaptokError: the file is not such a checkpoint.
    """
    state = load_checkpoint(path, map_location="cpu")
    if "model_config" not in state:
        raise AdaptokError(
            f"{path} is not an adaptok training checkpoint (no model_config); --init-from takes "
            "the last.pt or best.pt of an `adaptok train` run (timm weights: --backbone NAME "
            "--weights FILE)"
        )
    return ModelConfig.from_dict(state["model_config"])


def timm_vit_for(config: ModelConfig) -> nn.Module:
    """A timm VisionTransformer of a model config's shape (random weights): the backbone it
    names, or one built from its EncoderConfig."""
    import timm
    from timm.models.vision_transformer import VisionTransformer

    if config.backbone is not None:
        return timm.create_model(
            config.backbone,
            pretrained=False,
            num_classes=config.num_classes,
            img_size=config.image_size,
            in_chans=config.in_chans,
        )
    layout = config.encoder
    return VisionTransformer(
        img_size=config.image_size,
        patch_size=config.patch_size,
        in_chans=config.in_chans,
        num_classes=config.num_classes,
        global_pool=layout.global_pool,
        embed_dim=layout.embed_dim,
        depth=layout.depth,
        num_heads=layout.num_heads,
        mlp_ratio=layout.mlp_ratio,
        qkv_bias=layout.qkv_bias,
        qk_norm=layout.qk_norm,
        init_values=layout.init_values,
        class_token=layout.num_prefix_tokens >= 1,
        reg_tokens=max(0, layout.num_prefix_tokens - 1),
        pre_norm=layout.pre_norm,
        final_norm=layout.final_norm,
        fc_norm=layout.fc_norm,
        drop_path_rate=layout.drop_path_rate,
        norm_layer=functools.partial(nn.LayerNorm, eps=layout.norm_eps),
        # torch's GELU, as timm's named ViTs use it (timm's own "gelu" is another class).
        act_layer=TORCH_ACTIVATIONS.get(layout.act_layer, layout.act_layer),
    )


def with_learned_positions(parent: AdaptiveViT) -> AdaptiveViT:
    """The same model with its sinusoidal positions written out as a learned table: each grid
    cell holds the sinusoid of its centre, which is what the parent added to that patch, so on
    its grid the twin gives the parent's logits; `export_timm` can then carry it into timm (a
    from-scratch `adaptok train` parent has sinusoids, the default there)."""
    config = dataclasses.replace(parent.config, position="learned")
    twin = build_model(config)
    rows, cols = twin.embedder.position_grid
    centres = torch.stack(
        torch.meshgrid(
            torch.arange(rows, dtype=torch.float32) + 0.5,
            torch.arange(cols, dtype=torch.float32) + 0.5,
            indexing="ij",
        ),
        -1,
    ).reshape(-1, 2)
    state = parent.state_dict()
    state["embedder.pos_embed"] = sincos_2d(centres, twin.embedder.embed_dim)[None]
    twin.load_state_dict(state, strict=True)
    return twin.to(next(parent.parameters()).device).train(parent.training)


def _same_parameters(first: nn.Module, second: nn.Module) -> bool:
    a, b = first.state_dict(), second.state_dict()
    return a.keys() == b.keys() and all(a[k].shape == b[k].shape for k in a)


def init_from_checkpoint(
    path: str | Path,
    method: str,
    *,
    partition_options: dict[str, object] | None = None,
    embedder: str | None = None,
    proportional_attention: bool | None = None,
    position: str | None = None,
    position_grid: int | None = None,
) -> AdaptiveViT:
    """`init_from_model` of the model a checkpoint written by `adaptok train` (or `fit`) holds
    (last.pt or best.pt)."""
    parent = model_from_checkpoint(load_checkpoint(path, map_location="cpu"), source=str(path))
    return init_from_model(
        parent, method, partition_options=partition_options, embedder=embedder,
        proportional_attention=proportional_attention, position=position,
        position_grid=position_grid, source=str(path),
    )  # fmt: skip


def init_from_model(
    parent: AdaptiveViT,
    method: str,
    *,
    partition_options: dict[str, object] | None = None,
    embedder: str | None = None,
    proportional_attention: bool | None = None,
    position: str | None = None,
    position_grid: int | None = None,
    source: str = "the parent",
) -> AdaptiveViT:
    """A model on `method` tokens holding a trained AdaptiveViT's weights (see the module
    docstring for the two paths).

    The trunk, patch size, image size, channels, task and classes are the parent's; the
    arguments choose the tokens, as in `retrofit`.

    Args:
        parent: the trained model (its `config` says how it was built).
        method: the new partitioner ("grid", "quadtree", "dht", ...).
        partition_options: its options, merged over the ones derived from the parent's image
            and patch size (as `retrofit` merges them).
        embedder: "patch", "pooled" or "dht" (None: `retrofit`'s default for the method).
        proportional_attention: size-aware attention (None: `retrofit`'s default for the
            method).
        position: positions of the patch embedder (None: the parent's).
        position_grid: p of the dHT position histogram (None: the parent's patch grid).
        source: what errors call the parent (its checkpoint's path).

    Returns:
        The AdaptiveViT in training mode; `model.config` records how to rebuild it.

    Raises:
        AdaptokError: the weights cannot be carried over (a parent with a dHT embedder or a
            dense head, going to another embedder family). A parent with sinusoidal positions
            goes through `with_learned_positions` first.
    """
    before: ModelConfig = parent.config  # type: ignore[assignment] (set by build_model)
    default_embedder, default_attention = retrofit_defaults(method)
    embedder = embedder or default_embedder
    if proportional_attention is None:
        proportional_attention = default_attention
    config = dataclasses.replace(
        before,
        method=method,
        partition_options=partition_options or {},  # merged over the derived ones
        embedder=embedder,
        position=position or before.position_kind,
        position_grid=position_grid,
        encoder=dataclasses.replace(before.encoder, proportional_attention=proportional_attention),
        backbone_weights=None,
    )
    model = build_model(config)
    if _same_parameters(model, parent):
        model.load_state_dict(parent.state_dict(), strict=True)
        return model.train()
    if isinstance(parent.embedder, PatchEmbedder) and parent.embedder.position == "sincos":
        parent = with_learned_positions(parent)
    try:
        vit = export_timm(parent, timm_vit_for(before))
    except AdaptokError as error:
        raise AdaptokError(
            f"{source}: its weights cannot go into a model with the {config.embedder_kind} "
            f"embedder ({error}); keep the parent's embedder (--embedder "
            f"{before.embedder_kind}), or train the parent with --position learned"
        ) from error
    return retrofit(
        vit,
        method,
        embedder=embedder,
        proportional_attention=proportional_attention,
        position=config.position_kind,
        position_grid=position_grid,
        partition_options=partition_options,
        task=before.task,
        num_classes=before.num_classes,
    ).train()
