"""Builders shared by `build_model` (from scratch) and `retrofit` (around a timm ViT).

Each turns a `ModelConfig` into one finished part; `assemble_model` puts the parts together.
The two entry points differ only in the trunk they pass: a fresh one, or one mirroring a timm
ViT, whose `EncoderConfig` also carries the ViT's layout (prefix tokens, pooling, norms, no
LayerNorm after the embedding).
"""

from __future__ import annotations

from torch import nn

from ..embed import DHTEmbedder, PatchEmbedder
from ..errors import AdaptokError
from ..partitioners.registry import get_spec
from ..validate import check_options
from .config import ModelConfig
from .encoder import MaskedEncoder
from .heads import ClassificationHead, DenseHead
from .vit import AdaptiveViT, LearnedTokenizer, PartitionTokenizer

__all__ = ["assemble_model", "make_embedder", "make_head", "make_tokenizer"]


def make_tokenizer(config: ModelConfig, *, ready: nn.Module | None = None) -> nn.Module:
    """The tokenizer module of a config (around `ready`, a DHTTokenizer the caller built, when
    given).

    Options are checked when the model is built, by the method's spec
    (`adaptok.partitioners.spec.PartitionerSpec.check`): a dHT budget of 0 or an unreachable
    quadtree budget is refused here, not at the first forward. A non-learned method gives a
    `PartitionTokenizer` with the config's options (derived by `ModelConfig`: a grid's patch
    size is the config's). "dht" gives a
    `LearnedTokenizer` around a `DHTTokenizer` taking ImageNet-normalised images, whose weights
    come from partition option "weights": "default" (the bundled ones), a path saved by
    `save_tokenizer`, or "none" (a fresh, randomly initialised tokenizer, the only case where
    construction options such as "compactness" may be given). The options its spec names as
    `call_options` (budget, criterion, sample_budget, resolution) are passed on every call,
    also to a `ready` tokenizer, which takes the place of the weights.

    Raises:
        AdaptokError: unknown options, construction options combined with trained weights or a
            ready tokenizer, a ready tokenizer that takes [0, 1] images, or a channel-count
            mismatch. Nothing falls back silently to random weights.
    """
    options = dict(config.partition_options)
    spec = get_spec(config.method)
    if config.method != "dht":
        tokenizer = PartitionTokenizer(config.method, **options)
        spec.check(options, config.image_size, config.in_chans)
        return tokenizer

    from ..partitioners.dht import DHTTokenizer, load_default_tokenizer, load_tokenizer

    call = {name: options.pop(name) for name in spec.call_options if name in options}
    spec.check(call, config.image_size, config.in_chans)
    weights = options.pop("weights", "default")
    if ready is not None:
        if options or weights != "default":
            given = ", ".join([*options, *(["weights"] if weights != "default" else [])])
            raise AdaptokError(
                f"partition option(s) {given} build a dHT tokenizer, but a ready one was given; "
                "build it with them yourself, or drop them"
            )
        if getattr(ready, "input_space", None) != "imagenet":
            raise AdaptokError(
                "the model gives its tokenizer ImageNet-normalised images, but this dHT tokenizer "
                f"takes {getattr(ready, 'input_space', 'unknown')!r} ones; build it with "
                'input_space="imagenet" (load_default_tokenizer(input_space="imagenet"), '
                'load_tokenizer(path, input_space="imagenet"))'
            )
        tokenizer = ready
    elif weights == "none":
        check_options(DHTTokenizer, options, what="the dHT tokenizer")
        tokenizer = DHTTokenizer(in_chans=config.in_chans, input_space="imagenet", **options)
    elif options:
        raise AdaptokError(
            f"partition option(s) {', '.join(options)} change how the dHT tokenizer is built and "
            f'cannot be applied to trained weights ({weights!r}); pass "weights": "none" to '
            "train a fresh tokenizer with them, or drop them"
        )
    elif weights == "default":
        tokenizer = load_default_tokenizer(input_space="imagenet")
    else:
        tokenizer = load_tokenizer(str(weights), input_space="imagenet")
    if tokenizer.in_chans != config.in_chans:
        raise AdaptokError(
            f"the dHT tokenizer takes {tokenizer.in_chans}-channel images, the model "
            f"{config.in_chans}; use in_chans={tokenizer.in_chans}"
        )
    return LearnedTokenizer(tokenizer, **call)


def make_embedder(
    config: ModelConfig, *, embed_dim: int, num_prefix_tokens: int = 1, norm: bool = True
) -> tuple[nn.Module, dict[str, object]]:
    """The embedder of a config and the `extract_tokens` options it needs.

    Args:
        config: the model config (embedder family, patch size, positions, grid).
        embed_dim: D.
        num_prefix_tokens: cls (+ register) tokens.
        norm: a LayerNorm after the dHT embedding (a timm ViT's embedding has none).
    """
    if config.embedder_kind == "dht":
        embedder = DHTEmbedder(
            in_chans=config.in_chans,
            patch_size=config.patch_size,
            embed_dim=embed_dim,
            position_grid=config.grid,
            num_prefix_tokens=num_prefix_tokens,
            norm=norm,
        )
        return embedder, {"position_grid": config.grid}
    pooled = config.embedder_kind == "pooled"
    embedder = PatchEmbedder(
        patch_size=config.patch_size,
        in_chans=config.in_chans,
        embed_dim=embed_dim,
        num_prefix_tokens=num_prefix_tokens,
        position="histogram" if pooled else config.position_kind,
        position_grid=config.grid,
        shape_branch=pooled,
    )
    return embedder, {"pooled": True} if pooled else {}


def make_head(
    config: ModelConfig,
    *,
    embed_dim: int,
    num_prefix_tokens: int = 1,
    pool: str = "token",
    fc_norm: bool = False,
    norm_eps: float = 1e-6,
) -> nn.Module:
    """The task head: per-image classifier or per-pixel (dense) classifier."""
    if config.task == "dense":
        return DenseHead(
            embed_dim=embed_dim, num_classes=config.num_classes, num_prefix_tokens=num_prefix_tokens
        )
    return ClassificationHead(
        embed_dim=embed_dim,
        num_classes=config.num_classes,
        pool=pool,
        num_prefix_tokens=num_prefix_tokens,
        fc_norm=fc_norm,
        norm_eps=norm_eps,
    )


def assemble_model(
    config: ModelConfig, *, encoder: MaskedEncoder, tokenizer: nn.Module | None = None
) -> AdaptiveViT:
    """Tokenizer + embedder + encoder + head of a config, as one AdaptiveViT.

    Args:
        config: the model config (kept on the model as `model.config`).
        encoder: the trunk (fresh, or mirroring a timm ViT's); its config also gives the
            layout around it (prefix tokens, pooling, norms).
        tokenizer: a ready tokenizer module instead of the config's (a bare DHTTokenizer gets
            the config's per-call options, as the config's own would).
    """
    layout = encoder.config
    embedder, extract_options = make_embedder(
        config,
        embed_dim=layout.embed_dim,
        num_prefix_tokens=layout.num_prefix_tokens,
        norm=layout.embedding_norm,
    )
    head = make_head(
        config,
        embed_dim=layout.embed_dim,
        num_prefix_tokens=layout.num_prefix_tokens,
        pool=layout.global_pool,
        fc_norm=layout.fc_norm,
        norm_eps=layout.norm_eps,
    )
    if tokenizer is None:
        tokenizer = make_tokenizer(config)
    elif isinstance(tokenizer, PartitionTokenizer) and tokenizer.method != config.method:
        raise AdaptokError(f"tokenizer uses method {tokenizer.method!r}, not {config.method!r}")
    elif config.method == "dht" and not isinstance(tokenizer, LearnedTokenizer):
        tokenizer = make_tokenizer(config, ready=tokenizer)  # the config's budget on every call
    model = AdaptiveViT(
        tokenizer=tokenizer,
        embedder=embedder,
        encoder=encoder,
        head=head,
        patch_size=config.patch_size,
        extract_options=extract_options,
    )
    model.config = config
    return model
