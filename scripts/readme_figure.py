"""Make docs/demo.png, the README's picture: quadtree | dHT | dHT mean colours | SVG rendered back.

python scripts/readme_figure.py [--size 256] [-o docs/demo.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import adaptok
from adaptok.io import from_array, sample_image, save_image
from adaptok.vector.render import render_svg
from adaptok.visualize import draw_boundaries, side_by_side


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("-o", "--output", type=Path, default=Path("docs/demo.png"))
    args = parser.parse_args()
    image = sample_image(args.size)
    with torch.no_grad():
        quadtree = adaptok.partition(
            image, method="quadtree", budget=256, min_patch=8, max_patch=64
        )
        dht = adaptok.partition(image, method="dht", budget=256)
    svg = adaptok.vectorize(image, dht)
    rendered = from_array(render_svg(svg, background="#ffffff"))[:, :3]
    panels = (
        draw_boundaries(image, quadtree),
        draw_boundaries(image, dht),
        dht.mean_image(image),
        rendered,
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    save_image(side_by_side(*panels), args.output)
    print(f"quadtree {quadtree.num_regions} tokens, dht {dht.num_regions} tokens -> {args.output}")


if __name__ == "__main__":
    main()
