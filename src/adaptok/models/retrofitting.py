"""Retrofit a timm ViT onto adaptive tokens by remapping its weights (never swapping classes).

`retrofit(vit, method=...)` builds an `AdaptiveViT` with the same trunk hyper-parameters as the
timm model (timm's own `Block`s), then fills its state dict from the ViT's in one filter
function (`remap_timm_state_dict`) and loads it with `strict=True`:

    timm ViT                        AdaptiveViT
    patch_embed.proj.weight  ->     embedder patch columns (flatten(1), channel-major)
    pos_embed                ->     embedder position: histogram columns (dht-style, resized
                                    bicubically when p differs) or a learned grid / sinusoids
    cls_token (+ its pos)    ->     embedder prefix tokens
    blocks.i.*               ->     encoder.blocks.i.*
    norm_pre.*, norm.*       ->     encoder.norm_pre.*, encoder.norm.*
    fc_norm.*, head.*        ->     head.fc_norm.*, head.fc.*

With the grid partition at the ViT's patch size the result reproduces the ViT's logits.
`export_timm(model, vit)` runs the table backwards for a model with the patch embedder and
learned positions: a grid model trained here becomes a timm ViT again, which `retrofit` can then
put on other tokens (the retrofit protocol: pretrain on the grid, fine-tune on adaptive tokens).
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import torch
from timm.layers import LayerScale, Mlp
from timm.layers.attention import Attention
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from ..embed import DHTEmbedder, PatchEmbedder
from ..embed.timm import dht_embedder_state, patch_embedder_state
from ..errors import AdaptokError
from ..weights import read_state_dict
from .builders import assemble_model
from .config import EncoderConfig, ModelConfig
from .encoder import MaskedEncoder
from .heads import ClassificationHead
from .vit import AdaptiveViT

__all__ = [
    "encoder_config_from_timm",
    "export_timm",
    "load_timm_weights",
    "remap_timm_state_dict",
    "retrofit",
    "retrofit_from_config",
]


def _unsupported(what: str) -> AdaptokError:
    return AdaptokError(
        f"cannot retrofit this timm model: {what}. Supported: timm VisionTransformer models with "
        "standard pre-norm Blocks, a Conv2d patch embedding, an absolute position embedding and "
        "'token' or 'avg' pooling (e.g. vit_tiny_patch16_224, deit_small_patch16_224)"
    )


def encoder_config_from_timm(vit: nn.Module) -> EncoderConfig:
    """Read a timm VisionTransformer's trunk hyper-parameters (raises for unsupported layouts)."""
    blocks = getattr(vit, "blocks", None)
    if not isinstance(blocks, nn.Sequential) or len(blocks) == 0:
        raise _unsupported(f"{type(vit).__name__} has no `blocks` Sequential")
    first = blocks[0]
    for block in blocks:
        if type(block) is not Block:
            raise _unsupported(f"block type {type(block).__name__} is not timm's Block")
        attn = block.attn
        if type(attn) is not Attention:
            raise _unsupported(f"attention type {type(attn).__name__}")
        if (
            not isinstance(attn.norm, nn.Identity)
            or attn.gate is not None
            or attn.proj.bias is None
        ):
            raise _unsupported("attention with scale-norm, gating or no projection bias")
        if type(block.mlp) is not Mlp or not isinstance(block.mlp.norm, nn.Identity):
            raise _unsupported(f"MLP type {type(block.mlp).__name__} (or an MLP norm)")
        if not isinstance(block.norm1, nn.LayerNorm):
            raise _unsupported(f"norm type {type(block.norm1).__name__}")
    attn = first.attn
    act = first.mlp.act
    if isinstance(act, nn.GELU):
        act_name = "gelu_tanh" if act.approximate == "tanh" else "gelu"
    elif type(act).__name__ == "QuickGELU":
        act_name = "quick_gelu"
    else:
        raise _unsupported(f"activation {type(act).__name__}")
    drop_path = getattr(blocks[-1].drop_path1, "drop_prob", 0.0)
    return EncoderConfig(
        embed_dim=int(vit.embed_dim),
        depth=len(blocks),
        num_heads=int(attn.num_heads),
        mlp_ratio=first.mlp.fc1.out_features / vit.embed_dim,
        qkv_bias=attn.qkv.bias is not None,
        qk_norm=not isinstance(attn.q_norm, nn.Identity),
        init_values=1.0 if isinstance(first.ls1, LayerScale) else None,
        drop_path_rate=float(drop_path),
        norm_eps=float(first.norm1.eps),
        act_layer=act_name,
        pre_norm=not isinstance(getattr(vit, "norm_pre", nn.Identity()), nn.Identity),
        final_norm=isinstance(vit.norm, nn.LayerNorm),
        num_prefix_tokens=int(vit.num_prefix_tokens),
        global_pool=vit.global_pool,
        fc_norm=isinstance(getattr(vit, "fc_norm", None), nn.LayerNorm),
        embedding_norm=False,
    )


def _check_vit(vit: nn.Module) -> None:
    if getattr(vit, "attn_pool", None) is not None:
        raise _unsupported("attention-pool ('map') heads")
    if getattr(vit, "dist_token", None) is not None:
        raise _unsupported("a distillation token (deit_*_distilled; the plain deit_* models work)")
    if getattr(vit, "global_pool", "token") not in ("token", "avg"):
        raise _unsupported(f"global_pool {vit.global_pool!r}")
    if getattr(vit, "pos_embed", None) is None:
        raise _unsupported("no absolute position embedding")
    if getattr(vit, "dynamic_img_size", False):
        raise _unsupported("dynamic_img_size models (build the model with a fixed img_size)")
    fc_norm = getattr(vit, "fc_norm", nn.Identity())
    if not isinstance(fc_norm, (nn.Identity, nn.LayerNorm)):
        raise _unsupported(f"fc_norm {type(fc_norm).__name__}")
    norm = getattr(vit, "norm", None)
    # The final norm is a LayerNorm, or absent where the head normalises the pooled token
    # (timm's fc_norm, the default with "avg" pooling).
    if not isinstance(norm, nn.LayerNorm) and not (
        isinstance(norm, nn.Identity) and isinstance(fc_norm, nn.LayerNorm)
    ):
        raise _unsupported("the final norm is neither a LayerNorm nor replaced by fc_norm")


def _patch_size(vit: nn.Module) -> int:
    proj = getattr(getattr(vit, "patch_embed", None), "proj", None)
    if not isinstance(proj, nn.Conv2d) or proj.kernel_size[0] != proj.kernel_size[1]:
        raise _unsupported("no square Conv2d patch embedding")
    return int(proj.kernel_size[0])


def _grid_size(vit: nn.Module) -> tuple[int, int]:
    return tuple(int(s) for s in vit.patch_embed.grid_size)  # type: ignore[return-value]


def _embedder_state(embedder: nn.Module, vit: nn.Module) -> dict[str, Tensor]:
    """The embedder's state dict filled from the ViT (each embedder family has its remap)."""
    if isinstance(embedder, DHTEmbedder):
        return dht_embedder_state(embedder, vit)
    if isinstance(embedder, PatchEmbedder):
        state = patch_embedder_state(vit)
        if embedder.pos_embed is None:  # sinusoids replace the ViT's learned table
            state.pop("pos_embed")
        return state
    raise AdaptokError(f"no timm remapping for embedder {type(embedder).__name__}")


def remap_timm_state_dict(vit: nn.Module, target: AdaptiveViT) -> dict[str, Tensor]:
    """The filter function: a complete state dict for `target` built from a timm ViT.

    Keys the ViT has no counterpart for (the dHT tokenizer, a new dense or resized head) keep
    `target`'s own values, so the result loads with strict=True.

    Args:
        vit: the timm VisionTransformer.
        target: an AdaptiveViT whose trunk mirrors the ViT's (as `retrofit` builds it).

    Returns:
        {name: tensor} for every entry of target.state_dict().
    """
    source = vit.state_dict()
    own = target.state_dict()
    state: dict[str, Tensor] = {}
    for key, value in _embedder_state(target.embedder, vit).items():
        state[f"embedder.{key}"] = value
    for key, value in source.items():
        if key.startswith("blocks."):
            state[f"encoder.{key}"] = value
        elif key.startswith(("norm.", "norm_pre.")):
            state[f"encoder.{key}"] = value
        elif key.startswith("fc_norm.") and isinstance(target.head, ClassificationHead):
            state[f"head.{key}"] = value
        elif key.startswith("head.") and isinstance(target.head, ClassificationHead):
            mapped = "head.fc." + key[len("head.") :]
            if mapped in own and own[mapped].shape == value.shape:
                state[mapped] = value
    for key, value in own.items():
        state.setdefault(key, value)  # tokenizer, new heads: the target's own initialisation
    unexpected = sorted(set(state) - set(own))
    if unexpected:
        raise AdaptokError(f"remapping produced keys the model does not have: {unexpected[:5]}")
    return state


# What `retrofit` uses where the caller does not choose: (embedder, proportional attention) per
# method, the pair that kept a grid-trained parent best without fine-tuning
# (benchmarks/retrofit_probe.py; benchmarks/results/retrofit_probe.md). Methods not listed
# (slic, registered partitioners) take the non-square entry, "dht"'s.
RETROFIT_DEFAULTS: dict[str, tuple[str, bool]] = {
    "grid": ("patch", False),
    "quadtree": ("pooled", True),
    "dht": ("pooled", True),
}


def pooled_options(
    method: str, embedder: str, task: str, patch_size: int, given: dict[str, object] | None
) -> dict[str, object]:
    """The partition options of a retrofit whose tokens pool the ViT's patch embeddings, `given`
    merged over them: a quadtree scored by what pooling loses (`scorer="pooling"`,
    `pooling_importance`), and for classification dHT regions made of whole patches (`cell` =
    the ViT's patch side, `align_partition`). On held-out images both kept a grid-trained
    parent best (benchmarks/results/align_probe.md; docs/design.md, "Retrofitting"). A dense
    task keeps pixel-precise dHT regions: its per-token predictions are spread over them, and
    their boundaries are what dHT is for there (aligned, every boundary would be a patch
    edge). Other embedders get `given` alone."""
    derived: dict[str, object] = {}
    if embedder == "pooled" and method == "quadtree":
        derived["scorer"] = "pooling"
    if embedder == "pooled" and method == "dht" and task == "classification":
        derived["cell"] = patch_size
    return {**derived, **(given or {})}


def retrofit_defaults(method: str) -> tuple[str, bool]:
    """(embedder, proportional_attention) that `retrofit` uses for a method by default."""
    return RETROFIT_DEFAULTS.get(method, RETROFIT_DEFAULTS["dht"])


def retrofit(
    vit: nn.Module,
    method: str = "grid",
    *,
    embedder: str | None = None,
    proportional_attention: bool | None = None,
    position: str = "learned",
    position_grid: int | None = None,
    partition_options: dict[str, object] | None = None,
    task: str = "classification",
    num_classes: int | None = None,
    tokenizer: nn.Module | None = None,
) -> AdaptiveViT:
    """Build an AdaptiveViT around a timm ViT, reusing its weights.

    With the defaults and grid tokens at the ViT's patch size, the result reproduces the ViT's
    logits: nothing the ViT learned is dropped.

    Args:
        vit: a timm VisionTransformer (e.g. `timm.create_model("vit_tiny_patch16_224")`).
        method: any partitioner of `adaptok.available_methods()` ("grid", "quadtree", "dht",
            registered ones).
        embedder: "pooled" (each region's token is the coverage-weighted mean of the ViT's own
            patch embeddings and positions, plus a zero-initialised shape branch; exact on the
            grid, nothing resampled), "patch" (each region's box resampled to P x P, the plain
            patch embedding with `position` embeddings) or "dht" (λ mix, mask,
            position-histogram columns initialised from the ViT's position grid). None: the
            measured default of `RETROFIT_DEFAULTS` ("pooled" for quadtree, dHT and other
            partitions, "patch" for the grid).
        proportional_attention: size-aware attention (log(area / P^2) on every key's logit,
            zero on a grid; `EncoderConfig.proportional_attention`). None: the measured default
            of `RETROFIT_DEFAULTS` (on for every method but the grid).
        position: positions of the "patch" embedder: "learned" (the ViT's own table, sampled
            bilinearly at each token's centre: a grid patch reads its cell, a big quadtree patch
            the cells it covers) or "sincos" (2-D sinusoids of the centre, as in the Quadformer
            paper; the ViT's table is dropped, so the logits change).
        position_grid: p of the dHT position histogram (None: the ViT's own patch grid, so grid
            tokens reproduce it; other values resize the table bicubically). The "patch"
            embedder always uses the ViT's grid.
        partition_options: the partitioner's options, merged over the defaults derived from the
            ViT (grid at its patch size; quadtree with min_patch = its patch size, max_patch 4x
            or 2x (whichever divides the image), about half the tokens; dHT with half the
            tokens at 8 working pixels per patch side; with the pooled embedder, the quadtree
            scored by what pooling loses and dHT regions made of whole patches at 2 working
            pixels per patch side: `pooled_options`): `{"budget": 97}` keeps the derived patch
            sizes, `{"scorer": "pixel_blur"}` the quadtree's own scorer, `{"cell": None}`
            unaligned dHT regions. Checked here, on a blank image of the ViT's size.
        task: "classification" (the ViT's head is reused) or "dense" (a new per-token head).
        num_classes: classes of the head (None: the ViT's).
        tokenizer: a ready tokenizer module (e.g. a trained DHTTokenizer) instead of a fresh one.

    Returns:
        AdaptiveViT mapping images [B, C, H, W] (normalised as the ViT expects) to logits.
    """
    if isinstance(vit, str):
        raise AdaptokError(
            f"retrofit takes a timm model, not its name: build it first, e.g. vit = "
            f"timm.create_model({vit!r}, pretrained=False), load local weights with "
            "adaptok.models.load_timm_weights(vit, PATH), then adaptok.retrofit(vit, ...)"
        )
    if not isinstance(vit, nn.Module):
        raise AdaptokError(f"retrofit takes a timm VisionTransformer, got {type(vit).__name__}")
    _check_vit(vit)
    default_embedder, default_attention = retrofit_defaults(method)
    if embedder is None:
        embedder = default_embedder
    if proportional_attention is None:
        proportional_attention = default_attention
    encoder_config = dataclasses.replace(
        encoder_config_from_timm(vit), proportional_attention=proportional_attention
    )
    patch_size = _patch_size(vit)
    grid_h, grid_w = _grid_size(vit)
    if grid_h != grid_w:
        raise _unsupported(f"non-square patch grid {grid_h}x{grid_w}")
    image_size = grid_h * patch_size
    vit_classes = int(getattr(vit, "num_classes", 0))
    num_classes = num_classes or vit_classes
    if not num_classes:
        raise AdaptokError("the ViT has no classifier head (num_classes=0); pass num_classes")
    config = ModelConfig(
        method=method,
        task=task,
        num_classes=num_classes,
        image_size=image_size,
        in_chans=int(vit.patch_embed.proj.in_channels),
        patch_size=patch_size,
        embedder=embedder,
        position=position,
        position_grid=position_grid,
        # merged over the derived ones
        partition_options=pooled_options(method, embedder, task, patch_size, partition_options),
        encoder=encoder_config,
    )
    if config.embedder_kind == "patch" and position_grid not in (None, grid_h):
        raise AdaptokError(
            f"position_grid={position_grid} applies to the dHT embedder's histogram; the patch "
            f"embedder samples the ViT's own {grid_h}x{grid_w} table (pass position_grid=None)"
        )
    model = assemble_model(config, encoder=MaskedEncoder(encoder_config), tokenizer=tokenizer)
    reference = next(vit.parameters())
    model.to(reference.device, reference.dtype)
    if vit_classes and vit_classes != num_classes and task == "classification":
        warnings.warn(
            f"the ViT's head has {vit_classes} classes, the model {num_classes}: the head is "
            "initialised afresh",
            stacklevel=2,
        )
    model.load_state_dict(remap_timm_state_dict(vit, model), strict=True)
    model.train(vit.training)
    return model


def load_timm_weights(vit: nn.Module, path: str | Path) -> nn.Module:
    """Load a local timm checkpoint into a timm ViT (position table resized by timm's filter;
    a classifier head of another size is skipped with a warning). Returns the ViT."""
    from timm.models.vision_transformer import checkpoint_filter_fn

    state = checkpoint_filter_fn(read_state_dict(path, what="timm weights"), vit)
    own = vit.state_dict()
    skipped = [
        k for k in ("head.weight", "head.bias") if k in state and state[k].shape != own[k].shape
    ]
    for key in skipped:
        del state[key]
    if skipped:
        warnings.warn(
            f"{path}: classifier head has another number of classes; it is initialised afresh",
            stacklevel=2,
        )
    missing, unexpected = vit.load_state_dict(state, strict=False)
    if unexpected or set(missing) - set(skipped):
        missing_keys = sorted(set(missing) - set(skipped))[:5]
        raise AdaptokError(
            f"{path} does not match {type(vit).__name__}: missing {missing_keys}, unexpected "
            f"{unexpected[:5]}; is it a checkpoint of the same timm architecture?"
        )
    return vit


def retrofit_from_config(config: ModelConfig) -> AdaptiveViT:
    """Build the timm backbone a config names (pretrained=False, optionally loading its local
    weights file) and retrofit it."""
    import timm

    if config.backbone is None:
        raise AdaptokError("config.backbone is None: use build_model for a model from scratch")
    try:
        vit = timm.create_model(
            config.backbone,
            pretrained=False,
            num_classes=config.num_classes,
            img_size=config.image_size,
            in_chans=config.in_chans,
        )
    except (RuntimeError, TypeError) as error:
        raise AdaptokError(
            f"timm cannot build {config.backbone!r} ({error}); pick a ViT from "
            "timm.list_models('vit_*') or 'deit_*'"
        ) from error
    if config.backbone_weights:
        load_timm_weights(vit, config.backbone_weights)
    model = retrofit(
        vit,
        config.method,
        embedder=config.embedder,
        position=config.position_kind,
        position_grid=config.position_grid,
        partition_options=config.partition_options or None,
        task=config.task,
        num_classes=config.num_classes,
    )
    model.config = dataclasses.replace(
        config,
        patch_size=model.patch_size,
        encoder=model.encoder.config,
        partition_options=model.config.partition_options,
    )
    return model


def export_timm(model: AdaptiveViT, vit: nn.Module) -> nn.Module:
    """Write an AdaptiveViT's weights into a timm ViT of the same shape: `retrofit` backwards.

    The model needs a timm counterpart for every part: the plain patch embedder with learned
    positions on the ViT's own patch grid (as `retrofit(vit)` or `build_model` with
    embedder="patch", position="learned" make it) and a classification head. The cls token's
    position, which the model folds into its prefix token, becomes zero in the exported table.
    With grid tokens at the patch size the exported ViT gives the model's logits.

    Args:
        model: the trained AdaptiveViT.
        vit: a timm VisionTransformer with the model's trunk, patch size, grid and classes
            (e.g. `timm.create_model(name, pretrained=False, ...)`); it is overwritten.

    Returns:
        `vit`, holding the model's weights.
    """
    _check_vit(vit)
    embedder = model.embedder
    if not isinstance(embedder, PatchEmbedder) or embedder.pos_embed is None:
        raise AdaptokError(
            "export_timm needs the plain patch embedder with learned positions (what "
            "retrofit(vit) builds by default); a dHT embedder or sinusoidal positions have no "
            "timm counterpart"
        )
    if not isinstance(model.head, ClassificationHead):
        raise AdaptokError(
            "export_timm needs a classification model; a dense head has no timm counterpart"
        )
    if embedder.position_grid != _grid_size(vit) or embedder.patch_size != _patch_size(vit):
        raise AdaptokError(
            f"the model has {embedder.patch_size}-px patches on a {embedder.position_grid} "
            f"position grid, the ViT {_patch_size(vit)}-px patches on {_grid_size(vit)}; build "
            "the ViT with the model's img_size and patch_size"
        )
    source = model.state_dict()
    target = vit.state_dict()
    state: dict[str, Tensor] = {}
    proj = target["patch_embed.proj.weight"]
    state["patch_embed.proj.weight"] = source["embedder.proj.weight"].reshape(proj.shape)
    state["patch_embed.proj.bias"] = source["embedder.proj.bias"]
    patches = source["embedder.pos_embed"]
    prefix = source.get("embedder.prefix_tokens", patches[:, :0])
    count = int(vit.num_prefix_tokens)
    if getattr(vit, "no_embed_class", False):
        state["pos_embed"] = patches
    else:
        state["pos_embed"] = torch.cat([torch.zeros_like(prefix), patches], 1)
    tokens = [name for name in ("cls_token", "reg_token") if name in target]
    if prefix.shape[1] != count:
        raise AdaptokError(f"the model has {prefix.shape[1]} prefix tokens, the ViT {count}")
    start = 0
    for name in tokens:
        width = target[name].shape[1]
        state[name] = prefix[:, start : start + width]
        start += width
    for key, value in source.items():
        if key.startswith("embedder.norm."):
            state["patch_embed.norm." + key[len("embedder.norm.") :]] = value
        elif key.startswith("encoder."):
            state[key[len("encoder.") :]] = value
        elif key.startswith("head.fc."):
            state["head." + key[len("head.fc.") :]] = value
        elif key.startswith("head.fc_norm."):
            state["fc_norm." + key[len("head.fc_norm.") :]] = value
    differ = [
        f"{key} {tuple(value.shape)} vs {tuple(target[key].shape)}"
        for key, value in state.items()
        if key not in target or value.shape != target[key].shape
    ]
    missing = sorted(set(target) - set(state))
    if differ or missing:
        raise AdaptokError(
            "the ViT does not have the model's shape (build it with the model's embed_dim, "
            f"depth, num_heads, mlp_ratio and num_classes): mismatched {differ[:3]}, "
            f"missing {missing[:3]}"
        )
    vit.load_state_dict(state, strict=True)
    return vit
