"""`PartitionerSpec`: what a partitioner's options mean, declared once beside the partitioner.

Every consumer of partition options reads the spec instead of restating it (docs/design.md,
"Partitioner options"): `partition` (its size policy), `adaptok tokenize`, `vectorize` and
`train` (what `--budget` means and how it is spelled), `ModelConfig` (options derived from the
image and patch size), `build_model` (options checked when the model is built; which of a learned
tokenizer's options go to every call) and `retrofit` (the same derivation around a timm ViT).
The registry (`registry.py`) holds one spec per method; a partitioner registered without one gets
`PartitionerSpec()`, which passes a budget on as given.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import AdaptokError
from ..validate import check_int

__all__ = ["BUDGET_MEANINGS", "NO_CAP", "PartitionerSpec", "SizePolicy"]

# (height, width, options) -> the multiple that H and W are padded to (options it cannot take at
# that size are refused here, naming the image's own size).
SizePolicy = Callable[[int, int, dict[str, Any]], int]

# What `budget=N` asks of each kind of partitioner, in words (messages and `--help`).
BUDGET_MEANINGS = {
    "exact": "exactly N tokens",
    "cap": "at most N regions",
    "target": "about N regions",
    "count": "N, passed to the partitioner as given",
}
# `budget=None` of a "cap" partitioner: no cap; the command line spells it `--budget none`.
NO_CAP = "no cap"


def _keep_options(
    image_size: int, patch_size: int, given: Mapping[str, object]
) -> dict[str, object]:
    """The default derivation: nothing derived, the partitioner's own defaults apply."""
    return dict(given)


@dataclass(frozen=True)
class PartitionerSpec:
    """The options of one partitioner: what its budget means, its defaults, how the command line
    spells them, how a model derives them, and how they are checked for a model.

    Attributes:
        name: the method name (the registry sets it to the registered name).
        function: images [B, C, H, W] and keyword options -> Partition (the registry sets it).
        budget: what `budget=N` means: "exact" (quadtree: exactly N tokens, N0 + 3j), "cap"
            (dht: at most N), "target" (slic: about N), "count" (a registered partitioner's own
            meaning: passed on as given), or None (takes no budget: grid, whose count follows
            its patch size).
        none_means: what `budget=None` means: "no cap" (`NO_CAP`, spelled `--budget none` on
            the command line) or "the default"; None for methods without a budget.
        default: the default token count in words, as `adaptok tokenize` prints it.
        default_budget: (H, W, options) -> the default count at that size (None: unknown).
        fit_budget: (H, W, wanted, options) -> the valid budget nearest `wanted`, for counts the
            library derives (vectorize's default); a count the user gives is never rounded, an
            invalid one is refused. None: every positive count is valid (rounded to an int).
        derive: (image_size, patch_size, given) -> a model's options for square images of that
            side with tokens of that patch size: `given` merged over what it derives (default:
            `given` alone, the partitioner's own defaults).
        validate: (options, image_size, in_chans) -> None, refusing options a model of that
            image size cannot use, when it is built (default: partition one blank image).
        size_policy: (H, W, options) -> the multiple H and W are padded to by `partition`
            (None: any size as it is).
        call_options: a learned partitioner's options passed on every call of its module (dht:
            budget, criterion, sample_budget); a model's other options build the module. Empty
            for partitioners that are plain functions (every option goes to each call).
    """

    name: str = ""
    function: Callable[..., Any] | None = None
    budget: str | None = "count"
    none_means: str | None = "the default"
    default: str = "the partitioner's own default"
    default_budget: Callable[[int, int, Mapping[str, object]], int] | None = None
    fit_budget: Callable[[int, int, float, Mapping[str, object]], int] | None = None
    derive: Callable[[int, int, Mapping[str, object]], dict[str, object]] = _keep_options
    validate: Callable[[Mapping[str, object], int, int], None] | None = None
    size_policy: SizePolicy | None = None
    call_options: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.budget is not None and self.budget not in BUDGET_MEANINGS:
            raise AdaptokError(
                f"PartitionerSpec budget must be one of {', '.join(BUDGET_MEANINGS)} or None (no "
                f"budget), got {self.budget!r}"
            )
        allowed = (None,) if self.budget is None else (NO_CAP, "the default")
        if self.none_means not in allowed:
            raise AdaptokError(
                f"PartitionerSpec none_means must be one of {allowed} with budget="
                f"{self.budget!r}, got {self.none_means!r}"
            )

    @property
    def defaults(self) -> dict[str, object]:
        """The function's keyword options and their defaults (its signature is their one
        declaration); options without a default are left out."""
        if self.function is None:
            return {}
        parameters = inspect.signature(self.function).parameters.values()
        return {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty}

    def describe_budget(self) -> str:
        """`budget=N` in words, e.g. "at most N regions ('none': no cap)"."""
        if self.budget is None:
            return "takes no budget"
        words = BUDGET_MEANINGS[self.budget]
        return f"{words} ('none': no cap)" if self.none_means == NO_CAP else words

    def parse_budget(self, text: str, flag: str = "--budget") -> int | None:
        """A command-line budget: a whole number, or `none` where None means no cap. The one
        parser of `adaptok tokenize`, `vectorize` and `train`, so a spelling means the same in
        each; the count is checked by the partitioner as the Python API checks it (a quadtree
        budget that is not N0 + 3j is refused with the nearest valid ones, never rounded).

        Raises:
            AdaptokError: a method without a budget, `none` for a method whose budget is not a
                cap, or text that is not a whole number.
        """
        if self.budget is None:
            raise AdaptokError(f"--method {self.name} does not take {flag}; drop it")
        if text.strip().lower() == "none":
            if self.none_means != NO_CAP:
                raise AdaptokError(
                    f"{flag} none (no cap) is for methods whose budget is a cap (dht); "
                    f"--method {self.name} takes a count ({BUDGET_MEANINGS[self.budget]}), or "
                    f"leave {flag} out for its default"
                )
            return None
        try:
            value = int(text)
        except ValueError:
            spellings = "a whole number" + (
                " or 'none' (no cap)" if self.none_means == NO_CAP else ""
            )
            raise AdaptokError(f"{flag} takes {spellings}, got {text!r}") from None
        return check_int(flag, value, hint=f"({BUDGET_MEANINGS[self.budget]})")

    def fit(self, height: int, width: int, wanted: float, options: Mapping[str, object]) -> int:
        """The budget nearest a count the library derived (`fit_budget`, or the count)."""
        if self.fit_budget is not None:
            return self.fit_budget(height, width, wanted, options)
        return max(1, round(wanted))

    def check(self, options: Mapping[str, object], image_size: int, in_chans: int) -> None:
        """Refuse options that a model of `image_size` x `image_size` images cannot use, when it
        is built (`validate`, else one blank image partitioned), naming the options and size."""
        try:
            if self.validate is not None:
                self.validate(options, image_size, in_chans)
            elif self.function is not None:
                blank = torch.zeros(1, in_chans, image_size, image_size)
                self.function(blank, **options)
        except AdaptokError as error:
            raise AdaptokError(
                f"method {self.name!r} with options {dict(options)} cannot partition the "
                f"model's {image_size}x{image_size} images: {error}"
            ) from error
