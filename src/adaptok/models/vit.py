"""`AdaptiveViT`: partitioner/tokenizer -> extractor -> embedder -> masked encoder -> head.

The model receives finished parts (composition): any tokenizer whose forward returns an object
with `.partition` and `.pixels` (the learned `adaptok.dht.DHTTokenizer`, or `PartitionTokenizer`
around a non-learned method), any embedder mapping `Tokens` to `(x, valid)`, the encoder, a head.
`build_model(ModelConfig)` assembles one from names; `adaptok.retrofit` assembles one around a
timm ViT.
"""

from __future__ import annotations

import dataclasses
import inspect
import warnings
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import Tensor, nn

from ..errors import AdaptokError, check_images
from ..partitioners.registry import partition as make_partition
from ..regions import Partition
from ..tokens import Tokens, extract_tokens
from .encoder import EncoderConfig, MaskedEncoder
from .heads import ClassificationHead, DenseHead

__all__ = [
    "AdaptiveViT",
    "LearnedTokenizer",
    "ModelConfig",
    "ModelOutput",
    "PartitionTokenizer",
    "TokenizerOutput",
    "build_model",
]

TASKS = ("classification", "dense")
METHODS = ("grid", "quadtree", "dht")
EMBEDDERS = ("patch", "dht")


class TokenizerOutput(NamedTuple):
    """What a tokenizer hands to the extractor.

    Attributes:
        partition: the Partition of the batch.
        pixels: [B, C, H, W] the pixels to extract tokens from (the input images for
            non-learned partitioners; mean-injected pixels carrying gradient for dHT).
    """

    partition: Partition
    pixels: Tensor


class PartitionTokenizer(nn.Module):
    """A non-learned partitioner ("grid", "quadtree", "slic", ...) as a module.

    Args:
        method: a name from `adaptok.available_methods()`.
        **options: the method's options (patch_size for grid; budget, min_patch, max_patch,
            scorer for quadtree).
    """

    def __init__(self, method: str, **options: object) -> None:
        super().__init__()
        self.method = method
        self.options = dict(options)

    def forward(self, images: Tensor) -> TokenizerOutput:
        """[B, C, H, W] -> TokenizerOutput(partition, pixels=images)."""
        with torch.no_grad():
            part = make_partition(images.detach(), method=self.method, **self.options)
        return TokenizerOutput(partition=part, pixels=images)

    def extra_repr(self) -> str:
        return f"method={self.method!r}, options={self.options}"


@dataclass(frozen=True)
class ModelOutput:
    """Everything a forward pass produced.

    Attributes:
        logits: [B, K] (classification) or [B, K, H, W] (dense).
        partition: the Partition of the batch.
        tokens: the Tokens fed to the embedder ([B, T, ...]).
        features: [B, prefix+T, D] encoded tokens.
        valid: [B, prefix+T] bool, False for padding.
    """

    logits: Tensor
    partition: Partition
    tokens: Tokens
    features: Tensor
    valid: Tensor

    @property
    def tokens_per_image(self) -> Tensor:
        """[B] int64 number of (non-prefix) tokens of each image."""
        return self.partition.counts


class AdaptiveViT(nn.Module):
    """A ViT over adaptive tokens.

    Args:
        tokenizer: module mapping images [B, C, H, W] to an object with `.partition` and
            `.pixels` (`TokenizerOutput`, or the dHT tokenizer's result).
        embedder: module mapping `Tokens` to (x [B, prefix+T, D], valid [B, prefix+T]).
        encoder: the masked transformer trunk.
        head: `ClassificationHead` or `DenseHead`.
        patch_size: P, the side every region is resampled to.
        extract_options: options of the region extractor (`adaptok.extract_tokens`), e.g. the
            position-histogram size the dHT embedder needs.
    """

    def __init__(
        self,
        *,
        tokenizer: nn.Module,
        embedder: nn.Module,
        encoder: MaskedEncoder,
        head: nn.Module,
        patch_size: int,
        extract_options: dict[str, object] | None = None,
    ) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.embedder = embedder
        self.encoder = encoder
        self.head = head
        self.patch_size = patch_size
        self.extract_options = dict(extract_options or {})
        self.config: ModelConfig | None = None  # set by build_model / retrofit

    @property
    def task(self) -> str:
        return "dense" if isinstance(self.head, DenseHead) else "classification"

    def tokenize(self, images: Tensor) -> tuple[Partition, Tokens]:
        """Images -> (Partition, Tokens) without running the transformer."""
        check_images(images, name="images")
        result = self.tokenizer(images)
        tokens = extract_tokens(
            result.pixels, result.partition, patch_size=self.patch_size, **self.extract_options
        )
        return result.partition, tokens

    def forward_output(self, images: Tensor) -> ModelOutput:
        """Full forward pass keeping the intermediate results.

        Args:
            images: [B, C, H, W] float images (normalised as the backbone expects).
        """
        part, tokens = self.tokenize(images)
        x, valid = self.embedder(tokens)
        features = self.encoder(x, valid)
        if isinstance(self.head, DenseHead):
            logits = self.head(features, tokens, part)
        else:
            logits = self.head(features, valid)
        return ModelOutput(
            logits=logits, partition=part, tokens=tokens, features=features, valid=valid
        )

    def forward(
        self, images: Tensor, *, return_counts: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """[B, C, H, W] images -> logits [B, K] (classification) or [B, K, H, W] (dense).

        With return_counts=True, also the tokens of each image ([B] int64), as a tuple (the
        form DistributedDataParallel passes through).
        """
        output = self.forward_output(images)
        if return_counts:
            return output.logits, output.partition.counts
        return output.logits


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model (stored in checkpoints).

    Attributes:
        method: tokenizer: "grid", "quadtree" or "dht".
        task: "classification" or "dense".
        num_classes: K.
        image_size: side of the (square) training images.
        in_chans: image channels.
        patch_size: P, the side every token is resampled to.
        embedder: "patch" (plain ViT patch embedding + positions) or "dht" (λ-mix, mask and
            position-histogram columns); None: "dht" for method "dht", else "patch".
        position: positions of the "patch" embedder: "sincos" (2-D sinusoids of the region
            centre) or "learned" (a learned grid sampled at the centre).
        histogram_size: p of the dHT position histogram (None: image_size // patch_size).
        partition_options: the partitioner's options (budget, min_patch, max_patch, ...).
        encoder: the trunk's hyper-parameters (ignored when backbone is given).
        backbone: a timm model name to retrofit (built with pretrained=False), or None.
        backbone_weights: a local weights file for the backbone (timm or adaptok), or None.
    """

    method: str = "grid"
    task: str = "classification"
    num_classes: int = 10
    image_size: int = 64
    in_chans: int = 3
    patch_size: int = 8
    embedder: str | None = None
    position: str = "sincos"
    histogram_size: int | None = None
    partition_options: dict[str, object] = field(default_factory=dict)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    backbone: str | None = None
    backbone_weights: str | None = None

    def __post_init__(self) -> None:
        _check_choice("method", self.method, METHODS)
        _check_choice("task", self.task, TASKS)
        if self.embedder is not None:
            _check_choice("embedder", self.embedder, EMBEDDERS)
        _check_choice("position", self.position, ("sincos", "learned"))
        if self.image_size % self.patch_size:
            raise AdaptokError(
                f"image_size {self.image_size} must be a multiple of patch_size {self.patch_size}"
            )

    @property
    def embedder_kind(self) -> str:
        if self.embedder is not None:
            return self.embedder
        return "dht" if self.method == "dht" else "patch"

    @property
    def grid_size(self) -> int:
        """Side of the histogram / learned-position grid."""
        return self.histogram_size or self.image_size // self.patch_size

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
        return cls(**data)


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise AdaptokError(f"unknown {name} {value!r}; choose one of {', '.join(choices)}")


def default_partition_options(method: str, image_size: int, patch_size: int) -> dict[str, object]:
    """Sensible partitioner options for a square image of side `image_size`."""
    if method == "grid":
        return {"patch_size": patch_size}
    if method == "quadtree":
        max_patch = patch_size * 4
        while image_size % max_patch and max_patch > patch_size:
            max_patch //= 2
        coarse = (image_size // max_patch) ** 2
        grid = (image_size // patch_size) ** 2
        # About half the plain grid's tokens, rounded to a reachable budget (coarse + 3j), and
        # at least one split when any is possible.
        splits = max(1 if grid > coarse else 0, round((grid // 2 - coarse) / 3))
        budget = coarse + 3 * splits
        return {"budget": budget, "min_patch": patch_size, "max_patch": max_patch}
    return {}


class LearnedTokenizer(nn.Module):
    """A trainable tokenizer (`adaptok.dht.DHTTokenizer`) with its per-call options fixed.

    Args:
        tokenizer: the DHTTokenizer.
        budget: regions allowed per image (None: the tokenizer's default).
        criterion: information criterion (None: the tokenizer's default).
        sample_budget: in training, choose the regions kept under the budget by random sampling
            (the paper's regulariser). False (the default) uses the deterministic eval-time rule
            in training too, so the model trains on the partitions it is evaluated on: on
            Fashion-MNIST (benchmarks/results/fashion_mnist.md) sampling scored 0.51 test
            accuracy against 0.71 without, from the same training accuracy.
    """

    def __init__(
        self,
        tokenizer: nn.Module,
        *,
        budget: int | None = None,
        criterion: str | None = None,
        sample_budget: bool = False,
    ) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.budget = budget
        self.criterion = criterion
        self.sample_budget = sample_budget

    def forward(self, images: Tensor):
        """[B, C, H, W] -> DHTResult (`.partition`, `.pixels` carrying gradient)."""
        return self.tokenizer(
            images,
            budget=self.budget,
            criterion=self.criterion,
            sample_budget=self.training and self.sample_budget,
        )

    def extra_repr(self) -> str:
        return (
            f"budget={self.budget}, criterion={self.criterion!r}, "
            f"sample_budget={self.sample_budget}"
        )


DHT_CALL_OPTIONS = ("budget", "criterion", "sample_budget")


def make_tokenizer(config: ModelConfig) -> nn.Module:
    """The tokenizer module of a config.

    "grid" and "quadtree" give a `PartitionTokenizer`; "dht" a `LearnedTokenizer` around the
    bundled pretrained DHTTokenizer (partition_options "weights": "default", "none" for a fresh
    one, or a path saved by `adaptok.dht.save_tokenizer`), taking ImageNet-normalised images;
    "budget", "criterion" and "sample_budget" go to `LearnedTokenizer`, other options to the
    DHTTokenizer constructor.
    """
    options = dict(config.partition_options)
    if config.method == "dht":
        from ..partitioners.dht import DHTTokenizer, load_default_tokenizer, load_tokenizer

        call = {name: options.pop(name) for name in DHT_CALL_OPTIONS if name in options}
        weights = options.pop("weights", "default")
        if weights == "none" or options:
            tokenizer = DHTTokenizer(
                **_accepted(
                    DHTTokenizer,
                    {"in_channels": config.in_chans, "input_space": "imagenet", **options},
                )
            )
        elif weights == "default":
            try:
                tokenizer = load_default_tokenizer(input_space="imagenet")
            except AdaptokError as error:
                warnings.warn(f"{error}; using a freshly initialised dHT tokenizer", stacklevel=2)
                tokenizer = DHTTokenizer(in_channels=config.in_chans, input_space="imagenet")
        else:
            tokenizer = load_tokenizer(str(weights), input_space="imagenet")
        if tokenizer.in_channels != config.in_chans:
            raise AdaptokError(
                f"the dHT tokenizer takes {tokenizer.in_channels}-channel images, the model "
                f"{config.in_chans}; use in_chans={tokenizer.in_channels}"
            )
        return LearnedTokenizer(tokenizer, **call)
    if config.method == "grid":
        options.setdefault("patch_size", config.patch_size)
    return PartitionTokenizer(config.method, **options)


def _accepted(cls: type, options: dict[str, object]) -> dict[str, object]:
    """Keep the options `cls` accepts; unknown names raise unless cls takes **kwargs."""
    parameters = inspect.signature(cls).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return options
    implicit = {"in_chans", "in_channels"}  # passed by us; dropped if the class lacks them
    unknown = [name for name in options if name not in parameters and name not in implicit]
    if unknown:
        raise AdaptokError(
            f"{cls.__name__} got unknown option(s) {unknown}; it accepts {list(parameters)}"
        )
    return {name: value for name, value in options.items() if name in parameters}


def make_embedder(config: ModelConfig, embed_dim: int) -> tuple[nn.Module, dict[str, object]]:
    """The embedder of a config (built from scratch) and the extractor options it needs."""
    if config.embedder_kind == "dht":
        from ..embed.dht import DHTEmbedder

        embedder = DHTEmbedder(
            in_chans=config.in_chans,
            patch_size=config.patch_size,
            embed_dim=embed_dim,
            position_grid=config.grid_size,
            num_prefix_tokens=1,
            norm=True,
        )
        return embedder, dht_extract_options(config.grid_size)
    from ..embed.patch import PatchEmbedder

    embedder = PatchEmbedder(
        patch_size=config.patch_size,
        in_chans=config.in_chans,
        embed_dim=embed_dim,
        num_prefix_tokens=1,
        position=config.position,
        grid_size=config.grid_size,
    )
    return embedder, {}


def dht_extract_options(histogram_size: int) -> dict[str, object]:
    """Extractor options producing what the dHT embedder consumes (mask + position histogram)."""
    return {"position_grid": histogram_size}


def build_model(config: ModelConfig) -> AdaptiveViT:
    """Assemble an AdaptiveViT from a config (retrofitting a timm backbone when one is named)."""
    if config.backbone is not None:
        from .retrofit import retrofit_from_config

        return retrofit_from_config(config)
    embedder, extract_options = make_embedder(config, config.encoder.embed_dim)
    encoder = MaskedEncoder(config.encoder)
    dim = config.encoder.embed_dim
    if config.task == "dense":
        head: nn.Module = DenseHead(embed_dim=dim, num_classes=config.num_classes)
    else:
        head = ClassificationHead(embed_dim=dim, num_classes=config.num_classes)
    model = AdaptiveViT(
        tokenizer=make_tokenizer(config),
        embedder=embedder,
        encoder=encoder,
        head=head,
        patch_size=config.patch_size,
        extract_options=extract_options,
    )
    model.config = config
    return model
