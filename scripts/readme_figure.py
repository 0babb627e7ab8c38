"""Make docs/demo.png, the README's picture, in two rows.

Top: the bundled photo, quadtree | dHT | dHT mean colours | SVG rendered back.
Bottom: a Fashion-MNIST item (flat background), grid | quadtree | dHT without a cap | dHT mean
colours: where the image is flat the adaptive tokenizers spend one big token. Every panel is
titled with its method and token count; boundaries are black over light pixels and white over
dark ones (`adaptok.visualize.draw_boundaries`).

python scripts/readme_figure.py [--size 256] [-o docs/demo.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F

import adaptok
from adaptok.io import from_array, sample_image, save_image
from adaptok.ops import counted
from adaptok.train.datasets import FashionMNIST
from adaptok.vector.render import render_svg
from adaptok.visualize import draw_boundaries, side_by_side, titled


def fashion_item(size: int, index: int = 0) -> torch.Tensor:
    """Test item `index` of Fashion-MNIST as [1, 3, size, size] in [0, 1] (bilinear upscale)."""
    item = FashionMNIST(split="test", limit=index + 1).images[index].float().div(255)
    image = F.interpolate(item[None, None], size=(size, size), mode="bilinear")
    return image.clamp(0, 1).expand(-1, 3, -1, -1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("-o", "--output", type=Path, default=Path("docs/demo.png"))
    args = parser.parse_args()
    image = sample_image(args.size)
    item = fashion_item(args.size)
    with torch.no_grad():
        quadtree = adaptok.partition(
            image, method="quadtree", budget=256, min_patch=8, max_patch=64
        )
        dht = adaptok.partition(image, method="dht", budget=256)
        item_grid = adaptok.partition(item, method="grid", patch_size=32)
        item_quadtree = adaptok.partition(
            item, method="quadtree", budget=64, min_patch=8, max_patch=64
        )
        item_dht = adaptok.partition(item, method="dht", budget=None)
    svg = adaptok.vectorize(image, dht)
    rendered = from_array(render_svg(svg, background="#ffffff"))[:, :3]

    def tokens(name: str, images: torch.Tensor, part: adaptok.Partition) -> torch.Tensor:
        return titled(
            draw_boundaries(images, part), f"{name} · {counted(part.num_regions, 'token')}"
        )

    top = side_by_side(
        tokens("quadtree", image, quadtree),
        tokens("dHT", image, dht),
        titled(dht.mean_image(image), "dHT · mean colour of each token"),
        titled(rendered, f"SVG of the dHT photo · {counted(svg.count('<path'), 'path')}"),
    )
    bottom = side_by_side(
        tokens("grid", item, item_grid),
        tokens("quadtree", item, item_quadtree),
        tokens("dHT, no cap", item, item_dht),
        titled(item_dht.mean_image(item), "dHT, no cap · mean colours"),
    )
    gap = torch.ones(1, 3, 4, top.shape[-1])
    args.output.parent.mkdir(parents=True, exist_ok=True)
    save_image(torch.cat([top, gap, bottom], dim=2), args.output)
    print(
        f"photo: quadtree {quadtree.num_regions}, dht {dht.num_regions} tokens; Fashion-MNIST "
        f"item: grid {item_grid.num_regions}, quadtree {item_quadtree.num_regions}, dht (no cap) "
        f"{item_dht.num_regions} -> {args.output}"
    )


if __name__ == "__main__":
    main()
