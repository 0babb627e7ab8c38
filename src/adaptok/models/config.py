"""`ModelConfig` and `EncoderConfig`: everything needed to rebuild a model, stored in every
checkpoint. Plain dataclasses (no timm import), so the command line can read them quickly."""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field

from ..errors import AdaptokError
from ..partitioners import available_methods
from ..partitioners.registry import derive_options, get_spec
from ..validate import check_choice, check_int

__all__ = [
    "EMBEDDERS",
    "POSITIONS",
    "TASKS",
    "EncoderConfig",
    "ModelConfig",
]

TASKS = ("classification", "dense")
EMBEDDERS = ("patch", "dht", "pooled")
POSITIONS = ("sincos", "learned")
POOLS = ("token", "avg")


@dataclass(frozen=True)
class EncoderConfig:
    """Hyper-parameters of the transformer trunk and of the layout around it (the names of
    timm's VisionTransformer). The defaults are the from-scratch model's, the one source of
    `adaptok train`'s trunk defaults too (a 6-block ViT-Tiny width); `retrofit` copies a timm
    ViT's, so `build_model(retrofit(vit).config)` rebuilds the retrofitted model.

    Attributes:
        embed_dim: token width D.
        depth: number of blocks.
        num_heads: attention heads (must divide embed_dim).
        mlp_ratio: MLP hidden width / D.
        qkv_bias: bias in the query/key/value projection.
        qk_norm: LayerNorm on queries and keys.
        init_values: LayerScale initial value (None: no LayerScale).
        drop_path_rate: stochastic depth rate of the last block (linear decay from 0).
        norm_eps: epsilon of every LayerNorm.
        act_layer: timm activation name ("gelu", "gelu_tanh", "quick_gelu", ...).
        pre_norm: LayerNorm before the blocks (CLIP-style ViTs).
        final_norm: LayerNorm after the blocks; False for ViTs that normalise after pooling
            instead (timm's `fc_norm`, e.g. MAE-finetuned models with "avg" pooling).
        num_prefix_tokens: cls (+ register) tokens before the image tokens.
        global_pool: the classifier's pooling, "token" (the first prefix token) or "avg".
        fc_norm: LayerNorm after pooling, before the classifier.
        embedding_norm: LayerNorm after the dHT embedding (a timm ViT's embedding has none).
        proportional_attention: size-aware attention: every key's attention logit gets
            log(token area / P^2), so a token standing for k patches weighs like k patches (ToMe's
            proportional attention). Zero for equal P x P tokens: a grid is unchanged.
    """

    embed_dim: int = 192
    depth: int = 6
    num_heads: int = 3
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    qk_norm: bool = False
    init_values: float | None = None
    drop_path_rate: float = 0.0
    norm_eps: float = 1e-6
    act_layer: str = "gelu"
    pre_norm: bool = False
    final_norm: bool = True
    num_prefix_tokens: int = 1
    global_pool: str = "token"
    fc_norm: bool = False
    embedding_norm: bool = True
    proportional_attention: bool = False

    def __post_init__(self) -> None:
        check_int("num_prefix_tokens", self.num_prefix_tokens, minimum=0)
        check_choice("global_pool", self.global_pool, POOLS)
        if self.global_pool == "token" and self.num_prefix_tokens == 0:
            raise AdaptokError(
                'global_pool="token" reads the cls token, but num_prefix_tokens is 0; use '
                'global_pool="avg" or num_prefix_tokens=1'
            )

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model (stored in checkpoints).

    Attributes:
        method: the partitioner, any name of `adaptok.available_methods()` (registered ones
            included); "dht" is the learned tokenizer.
        task: "classification" or "dense".
        num_classes: K.
        image_size: side of the (square) training images.
        in_chans: image channels.
        patch_size: P, the side every token is resampled to; None with a backbone: the
            backbone's (what `build_model` records in `model.config`).
        embedder: "patch" (plain ViT patch embedding + positions), "pooled" (the P x P patch
            embeddings and positions pooled over each region, weighted by coverage, plus a
            zero-initialised shape branch) or "dht" (λ-mix, mask and position-histogram
            columns); None: "dht" for method "dht", else "patch" (what `retrofit` resolves
            instead is written into its config).
        position: positions of the "patch" embedder: "learned" (a learned grid sampled at each
            token's centre) or "sincos" (2-D sinusoids of the centre). None: "learned" when a
            backbone is retrofitted (its pretrained table is kept), "sincos" from scratch.
        position_grid: p, the side of the position grid (the learned table, or the dHT
            histogram). None: image_size // patch_size.
        partition_options: the partitioner's options (budget, min_patch, max_patch, ...),
            merged over the ones the method derives from image_size and patch_size (its spec's
            `derive`: quadtree patches P..4P and about half the grid's tokens, a dHT cap of half
            the grid's tokens, ...), as `adaptok train` derives them; with a backbone, `retrofit`
            derives them from the backbone's patch size. The config holds the merged options.
        encoder: the trunk's hyper-parameters (ignored when backbone is given).
        backbone: a timm model name to retrofit (built with pretrained=False), or None.
        backbone_weights: a local timm weights file for the backbone, or None.
    """

    method: str = "grid"
    task: str = "classification"
    num_classes: int = 10
    image_size: int = 64
    in_chans: int = 3
    patch_size: int | None = 8
    embedder: str | None = None
    position: str | None = None
    position_grid: int | None = None
    partition_options: dict[str, object] = field(default_factory=dict)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    backbone: str | None = None
    backbone_weights: str | None = None

    def __post_init__(self) -> None:
        check_choice("method", self.method, available_methods())
        check_choice("task", self.task, TASKS)
        if self.embedder is not None:
            check_choice("embedder", self.embedder, EMBEDDERS)
        if self.position is not None:
            check_choice("position", self.position, POSITIONS)
        for name in ("num_classes", "image_size", "in_chans"):
            check_int(name, getattr(self, name))
        if self.patch_size is None:
            if self.backbone is None:
                raise AdaptokError(
                    "patch_size=None leaves the patch size to a backbone; set backbone, or give "
                    "patch_size (e.g. 8)"
                )
        else:
            check_int("patch_size", self.patch_size)
        if self.position_grid is not None:
            check_int("position_grid", self.position_grid, hint="or None")
        if self.backbone_weights is not None and self.backbone is None:
            raise AdaptokError(
                "backbone_weights is the weights file of a timm backbone; set backbone too "
                "(e.g. backbone='vit_tiny_patch16_224')"
            )
        if self.patch_size is not None and self.image_size % self.patch_size:
            raise AdaptokError(
                f"image_size {self.image_size} must be a multiple of patch_size {self.patch_size}"
            )
        if self.backbone is None:
            # The one place a model's options are derived (the backbone's patch size is known
            # only once timm builds it: `retrofit` derives them then). Derived options are a
            # fixed point, so a stored config is rebuilt as it was.
            options = derive_options(
                self.method, self.image_size, self.patch_size, self.partition_options
            )
            object.__setattr__(self, "partition_options", options)

    @property
    def embedder_kind(self) -> str:
        """The embedder family: `embedder`, or the method's natural one."""
        if self.embedder is not None:
            return self.embedder
        return "dht" if self.method == "dht" else "patch"

    @property
    def position_kind(self) -> str:
        """The positions of the patch embedder: `position`, or the default for this config."""
        if self.position is not None:
            return self.position
        return "learned" if self.backbone is not None else "sincos"

    @property
    def grid(self) -> int:
        """Side of the position grid (learned table or dHT histogram)."""
        if self.patch_size is None:
            raise AdaptokError(
                "the position grid of a config with patch_size=None is the backbone's: build the "
                "model (build_model) and read model.config.grid"
            )
        return self.position_grid or self.image_size // self.patch_size

    def to_dict(self) -> dict[str, object]:
        data = dataclasses.asdict(self)
        data["partition_options"] = dict(self.partition_options)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise AdaptokError(f"unknown model config field(s) {unknown}; known: {sorted(known)}")
        data = dict(data)
        if isinstance(data.get("encoder"), dict):
            data["encoder"] = EncoderConfig(**data["encoder"])
        config = cls(**data)
        stored = dict(data.get("partition_options") or {})  # type: ignore[call-overload]
        if (
            config.backbone is None
            and config.method != "grid"
            and config.partition_options != stored
        ):
            # Stored before configs derived their options: an option left out meant the
            # partitioner's own default then (a grid's patch size was already the config's), so
            # those are filled in and the checkpoint rebuilds the model it trained (a fixed
            # point of the derivation: every derived option is given).
            defaults = get_spec(config.method).defaults
            missing = config.partition_options.keys() - stored.keys()
            stored = {**{name: defaults[name] for name in missing if name in defaults}, **stored}
            config = dataclasses.replace(config, partition_options=stored)
        return config
