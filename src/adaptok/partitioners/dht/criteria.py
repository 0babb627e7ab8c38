"""Information criteria that score a region as one Gaussian model of its pixel features.

For a region S of m pixels out of the image's n, with per-channel feature variance s²:

    IC(S) = -[ (m / n) * log(prod_c(2π s²_c) + ι) + penalty(m) ]

with k = 1 / (2m - 2√m) degrees of freedom and the penalties

    aic: 2k    bic: k log m    cic: k (log m + 1)    aicc: 2k + 2(k² + k) / (m - k - 1)

Higher is better. The fit term grows with the region's share of the image and its variance; the
penalty falls with its size. With ι > 1 flat areas settle at regions of about sqrt(n / log ι)
pixels (aic: where the two terms' slopes balance), whatever their content; with ι <= 1 a flat
region's fit is at most 0 and the largest flat region wins, so region size follows the variance
(the tokenizer divides variances by a known scale first: docs/design.md, "dHT", step 4).
For m >= 8, bic and cic penalise more than aic (log m > 2) and aicc more than aic always, so
they select larger regions.
A single pixel (m = 1) has an infinite penalty: any merged region beats it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ...errors import AdaptokError

__all__ = ["CRITERIA", "check_criterion", "information_criterion"]

CRITERIA = ("aicc", "aic", "bic", "cic")


def check_criterion(criterion: object) -> str:
    """Return `criterion` if it names a known criterion; raise listing the known ones otherwise."""
    if not isinstance(criterion, str) or criterion not in CRITERIA:
        raise AdaptokError(
            f"unknown information criterion {criterion!r}; choose one of {', '.join(CRITERIA)}"
        )
    return criterion


def _penalty(count: Tensor, criterion: str) -> Tensor:
    dof = 1.0 / (2.0 * count - 2.0 * count.sqrt()).clamp(min=1e-12)
    if criterion == "aic":
        return 2.0 * dof
    if criterion == "bic":
        return dof * count.log()
    if criterion == "cic":
        return dof * (count.log() + 1.0)
    return 2.0 * dof + 2.0 * (dof * dof + dof) / (count - dof - 1.0).clamp(min=1e-12)


def information_criterion(
    variance: Tensor,
    count: Tensor,
    num_pixels: int,
    *,
    criterion: str = "aicc",
    iota: float = 5.0,
) -> Tensor:
    """Score every region; higher is better.

    Args:
        variance: [V, d] per-channel feature variance of each region.
        count: [V] pixel count m of each region (float or int).
        num_pixels: n, pixels per image.
        criterion: "aicc", "aic", "bic" or "cic".
        iota: ι, keeps the log finite for flat regions and sets the scale of region sizes.

    Returns:
        [V] IC per region (-inf for single pixels).
    """
    check_criterion(criterion)
    count = count.to(variance.dtype)
    # log prod_c(2π s²) summed in log space would lose the "+ ι"; the product stays small because
    # feature variances are below 1 / (2π) for anything a region should hold.
    product = (2.0 * math.pi * variance).prod(-1)
    fit = count / num_pixels * torch.log(product + iota)
    score = -(fit + _penalty(count, criterion))
    return torch.where(count > 1.5, score, torch.full_like(score, -math.inf))
