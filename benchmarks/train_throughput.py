"""Training throughput of AdaptiveViT per tokenizer at matched token counts (CPU or CUDA).

Times full training steps (tokenize, extract, embed, encode, loss, backward, AdamW) on random
crops of scikit-image photos after two warm-up rounds, the rows' steps in turn within each round
(a change in the machine's load touches every row alike), for grid, quadtree and dHT tokens with
the same number of tokens per image, and the dHT retrofit of a timm ViT whose grid has that many
patches (what `adaptok.retrofit(vit, "dht")` trains: pooled tokens, size-aware attention,
regions of whole patches found at the derived working resolution), and prints a Markdown table
with the date and device: images/s and their ratio to the grid's, the step time as a multiple of
the grid step, and the share of the step spent in the tokenizer's forward. The loss must stay
finite under the device's autocast policy (bf16 on CUDA).

    python benchmarks/train_throughput.py                          # CPU, one thread, 128x128
    python benchmarks/train_throughput.py --setting vit-s --device cuda   # batch 256, 224x224
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import timm
import torch
import torch.nn.functional as F
from torch import nn

from adaptok import retrofit
from adaptok.cli.benchmarking import machine_header
from adaptok.models import EncoderConfig, ModelConfig, build_model
from adaptok.partitioners.dht import derive_options as dht_options
from adaptok.train.datasets import normalize
from adaptok.train.loop import autocast_context

# size, tokens per image, dHT/quadtree token side P, trunk (width, depth, heads), batch.
SETTINGS = {
    "small": (128, 64, 8, (128, 4, 4), 64),
    "vit-s": (224, 196, 8, (384, 12, 6), 256),
}
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field")


def photo_crops(batch: int, size: int, seed: int = 0) -> torch.Tensor:
    """[batch, 3, size, size] random crops of scikit-image photos shrunk to 2 * size, normalised
    with ImageNet statistics as the training datasets give them (what a model expects)."""
    from skimage import data

    generator = torch.Generator().manual_seed(seed)
    photos = []
    for name in PHOTOS:
        array = torch.from_numpy(getattr(data, name)()).float() / 255.0
        image = array.permute(2, 0, 1)[None, :3]
        scale = 2 * size / min(image.shape[-2:])
        photos.append(F.interpolate(image, scale_factor=scale, mode="area")[0])
    crops = []
    for _ in range(batch):
        photo = photos[int(torch.randint(len(photos), (1,), generator=generator))]
        y = int(torch.randint(photo.shape[1] - size + 1, (1,), generator=generator))
        x = int(torch.randint(photo.shape[2] - size + 1, (1,), generator=generator))
        crops.append(photo[:, y : y + size, x : x + size])
    return normalize(torch.stack(crops).clamp(0, 1))


def cases(
    size: int, tokens: int, patch: int, trunk: tuple[int, int, int]
) -> dict[str, Callable[[], nn.Module]]:
    """Row name -> a builder of the model it trains, at `tokens` tokens per image: grid,
    quadtree and dHT with the dHT embedder (8x8 position grid), dHT again with the pooled
    embedder that retrofits use (no box resampling), and the dHT retrofit of a timm ViT on the
    grid's patches (regions of whole patches, the derived working resolution: 2 / its patch
    side)."""
    side = round(size / tokens**0.5)
    if side * side * tokens != size * size:
        raise SystemExit(f"{tokens} tokens do not tile {size}x{size} into a grid")
    # The quadtree's largest patch: four grid patches wide where the image allows it.
    largest = 4 * side if size % (4 * side) == 0 else 2 * side
    resolution = dht_options(size, side, {"cell": side})["resolution"]  # what retrofit derives

    def built(method: str, patch_size: int, options: dict, embedder: str = "dht"):
        return lambda: make_model(method, patch_size, options, size, trunk, embedder)

    return {
        "grid": built("grid", side, {"patch_size": side}),
        "quadtree": built(
            "quadtree", patch, {"budget": tokens, "min_patch": patch, "max_patch": largest}
        ),
        "dht": built("dht", patch, {"budget": tokens}),
        "dht, pooled embedder": built("dht", patch, {"budget": tokens}, "pooled"),
        f"dht retrofit of a timm ViT/{side} (resolution {resolution})": lambda: retrofitted(
            size, side, trunk, tokens
        ),
    }


def retrofitted(size: int, side: int, trunk: tuple[int, int, int], tokens: int) -> nn.Module:
    """`retrofit(vit, "dht")` of a timm ViT (seeded random weights) with `side`-pixel patches at
    `size`, budget `tokens`, in training mode."""
    width, depth, heads = trunk
    torch.manual_seed(0)
    vit = timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        img_size=size,
        patch_size=side,
        embed_dim=width,
        depth=depth,
        num_heads=heads,
        num_classes=10,
    )
    return retrofit(vit, "dht", partition_options={"budget": tokens}).train()


def make_model(
    method: str,
    patch_size: int,
    options: dict,
    size: int,
    trunk: tuple[int, int, int],
    embedder: str = "dht",
) -> torch.nn.Module:
    """The AdaptiveViT a row trains (seeded, in training mode): `embedder` on `method` tokens
    (the dHT embedder with an 8x8 position grid; pooled tokens read the patch grid's own
    positions), trunk = (width, depth, heads)."""
    width, depth, heads = trunk
    torch.manual_seed(0)
    config = ModelConfig(
        method=method,
        image_size=size,
        patch_size=patch_size,
        embedder=embedder,
        position_grid=8 if embedder == "dht" else None,
        partition_options=options,
        encoder=EncoderConfig(embed_dim=width, depth=depth, num_heads=heads),
    )
    return build_model(config).train()


@dataclass
class Trainee:
    """One row's model and optimiser, with its step and tokenizer-forward times (ms)."""

    name: str
    model: nn.Module
    optimizer: torch.optim.Optimizer
    step_ms: list[float] = field(default_factory=list)
    tokenizer_ms: list[float] = field(default_factory=list)
    tokens: float = 0.0

    def timed(self, forward: Callable, sync: Callable) -> Callable:
        """`forward` recording its time in tokenizer_ms."""

        def timed_forward(inputs):
            sync()
            start = time.perf_counter()
            result = forward(inputs)
            sync()
            self.tokenizer_ms.append(1000 * (time.perf_counter() - start))
            return result

        return timed_forward


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setting", choices=sorted(SETTINGS), default="small")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, help="default: the setting's")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per tokenizer")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (0: torch's default)")
    parser.add_argument("--amp", default="auto", choices=("auto", "bf16", "off"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    size, tokens, patch, (width, depth, heads), batch = SETTINGS[args.setting]
    batch = args.batch or batch
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    print(
        f"{machine_header(args.device)} · amp {args.amp} · batch {batch} of {size}x{size} photo "
        f"crops · {tokens} tokens per image · ViT width {width}, depth {depth}, {heads} heads · "
        f"median of {args.steps} steps, rows in turn"
    )
    print()
    print(
        "| tokens | tokens/image | ms/step | images/s | images/s vs grid | step / grid step "
        "| tokenizer forward |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    images = photo_crops(batch, size).to(device)
    labels = torch.randint(0, 10, (batch,), generator=torch.Generator().manual_seed(1)).to(device)
    rows = []
    for name, build in cases(size, tokens, patch, (width, depth, heads)).items():
        model = build().to(device)
        row = Trainee(name, model, torch.optim.AdamW(model.parameters(), lr=1e-3))
        model.tokenizer.forward = row.timed(model.tokenizer.forward, sync)
        rows.append(row)
    for _ in range(args.steps + 2):  # two warm-up rounds; the rows in turn within each round
        for row in rows:
            sync()
            start = time.perf_counter()
            with autocast_context(device, args.amp):
                logits, counts = row.model(images, return_counts=True)
            loss = F.cross_entropy(logits.float(), labels)
            row.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            row.optimizer.step()
            sync()
            row.step_ms.append(1000 * (time.perf_counter() - start))
            row.tokens = float(counts.float().mean())
            if not torch.isfinite(loss):
                raise SystemExit(f"{row.name}: the loss is {float(loss.detach())}")
    grid_ms = statistics.median(rows[0].step_ms[2:])
    for row in rows:
        median = statistics.median(row.step_ms[2:])
        share = statistics.median(row.tokenizer_ms[2:]) / median
        print(
            f"| {row.name} | {row.tokens:.1f} | {median:.0f} | "
            f"{batch / median * 1000:.0f} | {grid_ms / median:.2f}x | {median / grid_ms:.2f}x | "
            f"{100 * share:.0f}% |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
