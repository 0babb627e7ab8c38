"""The optimiser set-up: AdamW parameter groups (weight decay as modules declare it) and the
warm-up + cosine learning-rate schedule."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

__all__ = ["make_optimizer", "no_weight_decay_names", "parameter_groups", "warmup_cosine"]


def no_weight_decay_names(model: nn.Module) -> set[str]:
    """Full names of the parameters that the model's modules declare exempt from weight decay.

    timm's convention: a module's `no_weight_decay()` returns the names (relative to that
    module) of its tokens, position tables and mixing scalars. Every module of the model is
    asked, so a declaration deep inside (an embedder, a tokenizer) counts too.
    """
    names: set[str] = set()
    for prefix, module in model.named_modules():
        declare = getattr(module, "no_weight_decay", None)
        if callable(declare):
            names |= {f"{prefix}.{name}" if prefix else name for name in declare()}
    return names


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, object]]:
    """AdamW groups: decay every trainable matrix except what the modules declare in
    `no_weight_decay()`; never decay a parameter with at most one dimension (norm scales and
    shifts, biases, scalars: decaying them only pulls a layer's scale to zero)."""
    skip = no_weight_decay_names(model)
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        if parameter.ndim <= 1 or name in skip:
            no_decay.append(parameter)
        else:
            decay.append(parameter)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def warmup_cosine(warmup: int, total: int) -> Callable[[int], float]:
    """LR multiplier: linear warm-up over `warmup` steps, then cosine decay to 0 at `total`."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def make_optimizer(
    model: nn.Module, *, lr: float, weight_decay: float, warmup_steps: int, steps: int
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over `parameter_groups` and its warm-up + cosine schedule."""
    optimizer = torch.optim.AdamW(parameter_groups(model, weight_decay), lr=lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(warmup_steps, steps))
    return optimizer, scheduler
