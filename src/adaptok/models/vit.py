"""`AdaptiveViT`: partitioner/tokenizer -> extractor -> embedder -> masked encoder -> head.

The model receives finished parts (composition): any tokenizer whose forward returns an object
with `.partition` and `.pixels` (`LearnedTokenizer` around the dHT tokenizer, or
`PartitionTokenizer` around a non-learned method), any embedder mapping `Tokens` to
`(x, valid)`, the encoder, a head. `adaptok.build_model(ModelConfig)` and `adaptok.retrofit`
assemble one with the builders of `adaptok.models.builders`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import Tensor, nn

from ..errors import AdaptokError, check_images
from ..ops import denormalize, summary_repr
from ..partitioners import get_partitioner
from ..regions import Partition
from ..tokens import Tokens, extract_tokens
from ..validate import check_options
from .encoder import MaskedEncoder, token_size_bias
from .heads import DenseHead

__all__ = [
    "AdaptiveViT",
    "LearnedTokenizer",
    "ModelOutput",
    "PartitionTokenizer",
    "TokenizerOutput",
]

if TYPE_CHECKING:
    from .config import ModelConfig


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
        check_options(get_partitioner(method), options, what=f"method {method!r}", skip=1)
        if "input_space" in options:
            raise AdaptokError(
                "a model's partitioner always gets [0, 1] pixels (the model undoes the "
                "normalisation of its inputs itself); drop the input_space option"
            )
        self.method = method
        self.options = dict(options)

    def _apply(self, fn, recurse: bool = True):
        # Module-valued options (a FeatureScorer's CNN) follow .to(device / dtype) like submodules,
        # without entering the state dict (their weights come from their own file).
        super()._apply(fn, recurse)
        for value in self.options.values():
            if isinstance(value, nn.Module):
                value._apply(fn, recurse)
        return self

    def forward(self, images: Tensor) -> TokenizerOutput:
        """[B, C, H, W] model inputs (`adaptok.ops.normalize`d) -> TokenizerOutput(partition,
        pixels=images)."""
        # Partitioners are defined on [0, 1] pixels (SLIC's Lab conversion refuses anything
        # else); the model's inputs are normalised for the trunk, so undo that first.
        with torch.no_grad():
            pixels = denormalize(images.detach()).clamp_(0, 1)  # one full-size copy
            part = get_partitioner(self.method)(pixels, **self.options)
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

    __repr__ = summary_repr

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

    def no_weight_decay(self) -> set[str]:
        """Parameters exempt from weight decay (timm's convention): what the parts declare."""
        return {
            f"{name}.{parameter}"
            for name, part in self.named_children()
            if callable(getattr(part, "no_weight_decay", None))
            for parameter in part.no_weight_decay()
        }

    def tokenize(self, images: Tensor) -> tuple[Partition, Tokens]:
        """Images -> (Partition, Tokens) without running the transformer."""
        check_images(images, name="images")
        channels = getattr(self.embedder, "in_chans", None)
        if channels is not None and images.shape[1] != channels:
            fix = (
                f"repeat the grey channel: images.expand(-1, {channels}, -1, -1)"
                if images.shape[1] == 1
                else "drop the alpha channel (adaptok.io.composite_alpha blends it)"
                if images.shape[1] == channels + 1
                else f"convert them to {channels} channels"
            )
            raise AdaptokError(
                f"the model takes {channels}-channel images, got {images.shape[1]} channels; " + fix
            )
        limit = getattr(self.embedder, "max_image_size", None)
        if limit is not None and (images.shape[-2] > limit[0] or images.shape[-1] > limit[1]):
            raise AdaptokError(
                f"images are {images.shape[-2]}x{images.shape[-1]}, but the learned position "
                f"table covers {limit[0]}x{limit[1]} pixels (every token beyond it would get the "
                f"border's position); resize the images to at most {limit[0]}x{limit[1]}"
            )
        result = self.tokenizer(images)
        options = self.extract_options
        colors = getattr(result, "region_colors", None)
        if colors is not None and options.get("pooled"):
            # Pooled tokens take dHT's injected means themselves (`pool_patches`); reading
            # `result.pixels` would build the injected image.
            pixels, options = result.images, {**options, "region_colors": colors}
        else:
            pixels = result.pixels
        tokens = extract_tokens(pixels, result.partition, patch_size=self.patch_size, **options)
        return result.partition, tokens

    def forward_output(self, images: Tensor) -> ModelOutput:
        """Full forward pass keeping the intermediate results.

        Args:
            images: [B, C, H, W] float images (normalised as the backbone expects).
        """
        part, tokens = self.tokenize(images)
        x, valid = self.embedder(tokens)
        key_bias = None
        if self.encoder.config.proportional_attention:
            prefix = x.shape[1] - tokens.patch_valid.shape[1]
            key_bias = token_size_bias(tokens.area, self.patch_size, tokens.patch_valid, prefix)
        features = self.encoder(x, valid, key_bias)
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


class LearnedTokenizer(nn.Module):
    """A trainable tokenizer (the dHT `DHTTokenizer`) with its per-call options fixed.

    Args:
        tokenizer: the DHTTokenizer.
        **call_options: passed to every call of the tokenizer (budget, criterion,
            sample_budget); missing ones take the tokenizer's defaults. `sample_budget` applies
            in training only: it draws the regions kept under the budget at random (the paper's
            regulariser). Without it the model trains on the deterministic eval-time rule, so
            it trains on the partitions it is evaluated on (docs/design.md, "One budget rule").
    """

    def __init__(self, tokenizer: nn.Module, **call_options: object) -> None:
        super().__init__()
        check_options(tokenizer.forward, call_options, what="the dHT tokenizer", skip=1)
        self.tokenizer = tokenizer
        # One budget rule unless sampling is asked for explicitly (docs/design.md).
        self.call_options = {"sample_budget": False, **call_options}

    def forward(self, images: Tensor):
        """[B, C, H, W] -> DHTResult (`.partition`, `.pixels` carrying gradient)."""
        options = dict(self.call_options)
        options["sample_budget"] = self.training and bool(options["sample_budget"])
        return self.tokenizer(images, **options)

    def extra_repr(self) -> str:
        return ", ".join(f"{name}={value!r}" for name, value in self.call_options.items())
