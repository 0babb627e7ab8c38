"""dHT on objects on flat grounds (issue 20): no region border inside an exactly flat area.

The images are made here and were not used to choose anything: anti-aliased shapes, text-like
strokes, a logo-like drawing and a handful of Fashion-MNIST test items, at 64x64, 128x128 and
96x160, without a cap and with tight caps.
"""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

import adaptok
from adaptok import Partition
from adaptok.graph import label_components
from adaptok.partitioners.dht import DHTTokenizer, load_default_tokenizer
from adaptok.partitioners.dht.merge import flat_edges
from adaptok.regions import check_partition
from adaptok.train.datasets import FASHION_MNIST_ROOT, FashionMNIST
from conftest import assert_gradients_reach

SIZES = [(64, 64), (128, 128), (96, 160)]
FASHION_ITEMS = [3, 11, 29]  # trousers, a sandal and a dress of the test split


def _supersampled(height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-centre coordinates ([4H, 1], [1, 4W]) of a 4x supersampled grid, in pixels."""
    ys = (torch.arange(4 * height, dtype=torch.float64) + 0.5) / 4
    xs = (torch.arange(4 * width, dtype=torch.float64) + 0.5) / 4
    return ys[:, None], xs[None, :]


def _paint(ground: tuple[float, ...], shapes: list[tuple[torch.Tensor, tuple[float, ...]]]):
    """[3, H, W] shapes (boolean masks on the 4x grid) painted in order on a flat ground, then
    area-averaged to H x W: anti-aliased edges, as in real logos and renderings."""
    mask = shapes[0][0]
    image = torch.tensor(ground, dtype=torch.float64).view(3, 1, 1).expand(3, *mask.shape)
    for inside, colour in shapes:
        image = torch.where(inside, torch.tensor(colour, dtype=torch.float64).view(3, 1, 1), image)
    return F.avg_pool2d(image[None], 4)[0].float()


def generated_shapes(height: int, width: int, seed: int) -> torch.Tensor:
    """A random disc, bar and disc on a random flat ground."""
    generator = torch.Generator().manual_seed(seed)
    ys, xs = _supersampled(height, width)
    side = min(height, width)
    shapes = []
    for kind in range(3):
        centre = torch.rand(2, generator=generator, dtype=torch.float64) * 0.6 + 0.2
        cy, cx = float(centre[0]) * height, float(centre[1]) * width
        radius = side * (0.08 + 0.15 * float(torch.rand(1, generator=generator)))
        if kind == 1:
            inside = ((ys - cy).abs() < 0.6 * radius) & ((xs - cx).abs() < radius)
        else:
            inside = (ys - cy) ** 2 + (xs - cx) ** 2 < radius**2
        shapes.append((inside, tuple(torch.rand(3, generator=generator).tolist())))
    return _paint(tuple(torch.rand(3, generator=generator).tolist()), shapes)


def text_strokes(height: int, width: int, seed: int) -> torch.Tensor:
    """Five 'letters' of random 3-segment strokes, 3.5 px wide, dark on a light ground."""
    generator = torch.Generator().manual_seed(seed)
    ys, xs = _supersampled(height, width)
    ink = torch.zeros(4 * height, 4 * width, dtype=torch.bool)
    for letter in range(5):
        corner = torch.tensor([0.3 * height, (0.1 + 0.16 * letter) * width], dtype=torch.float64)
        extent = torch.tensor([0.4 * height, 0.12 * width], dtype=torch.float64)
        points = corner + torch.rand(4, 2, generator=generator, dtype=torch.float64) * extent
        for start, end in itertools.pairwise(points):
            step = end - start
            along = ((ys - start[0]) * step[0] + (xs - start[1]) * step[1]) / step.square().sum()
            along = along.clamp(0, 1)
            off_y, off_x = ys - start[0] - along * step[0], xs - start[1] - along * step[1]
            ink |= off_y**2 + off_x**2 < 1.75**2
    return _paint((0.97, 0.96, 0.92), [(ink, (0.1, 0.1, 0.3))])


def logo(height: int, width: int) -> torch.Tensor:
    """A red disc, a blue ring (with a hole of the ground's colour) and a dark bar on white."""
    ys, xs = _supersampled(height, width)
    ys, xs = ys / height, xs / width
    disc = (ys - 0.45) ** 2 + (xs - 0.3) ** 2 < 0.05
    ring = ((ys - 0.45) ** 2 + (xs - 0.72) ** 2 - 0.025).abs() < 0.008
    bar = ((ys - 0.85).abs() < 0.03) & ((xs - 0.5).abs() < 0.4)
    shapes = [(disc, (0.85, 0.2, 0.15)), (ring, (0.1, 0.35, 0.8)), (bar, (0.15, 0.15, 0.15))]
    return _paint((1.0, 1.0, 1.0), shapes)


def fashion_items(height: int, width: int) -> torch.Tensor:
    """[3, 3, H, W] Fashion-MNIST test items on their black ground (bilinear, as in training)."""
    items = FashionMNIST(FASHION_MNIST_ROOT, split="test").images[FASHION_ITEMS]
    items = F.interpolate(
        items.float().div(255)[:, None], size=(height, width), mode="bilinear", align_corners=False
    )
    return items.clamp(0, 1).expand(-1, 3, -1, -1)


def objects_on_flat_grounds(height: int, width: int) -> torch.Tensor:
    """[7, 3, H, W] two shape images, strokes, a logo and three Fashion-MNIST items."""
    drawn = [generated_shapes(height, width, 1), generated_shapes(height, width, 2)]
    drawn += [text_strokes(height, width, 3), logo(height, width)]
    return torch.cat([torch.stack(drawn), fashion_items(height, width)])


def equal_colour_components(images: torch.Tensor) -> torch.Tensor:
    """[B, H, W] ids of the 4-connected areas of one exact colour."""
    key = torch.unique(images.permute(0, 2, 3, 1).reshape(-1, 3), dim=0, return_inverse=True)[1]
    return label_components(key.view(images.shape[0], *images.shape[2:]))


def cut_flat_pairs(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """[B] region borders between 4-adjacent pixels of equal colour: the flat pairs of the bundled
    weights, whose features read one pixel each (see the receptive field test)."""
    same_right = (images[..., 1:] == images[..., :-1]).all(1)
    same_down = (images[..., 1:, :] == images[..., :-1, :]).all(1)
    cut_right = labels[..., 1:] != labels[..., :-1]
    cut_down = labels[..., 1:, :] != labels[..., :-1, :]
    return (same_right & cut_right).sum((1, 2)) + (same_down & cut_down).sum((1, 2))


def background(images: torch.Tensor) -> torch.Tensor:
    """[B, H, W] bool: the area of one colour that holds the top-left corner."""
    areas = equal_colour_components(images)
    return areas == areas[:, :1, :1]


def assert_flat_areas_whole(images: torch.Tensor, part: Partition) -> None:
    """No border inside a flat area; the background is one region."""
    assert cut_flat_pairs(images, part.labels).tolist() == [0] * images.shape[0]
    ground = background(images)
    for index in range(images.shape[0]):
        assert torch.unique(part.labels[index][ground[index]]).numel() == 1


# ------------------------------------------------------------------------- receptive field
def test_bundled_encoder_reads_one_pixel_and_a_fresh_one_its_computed_field() -> None:
    """The bundled weights switch the coarse branch off: each feature reads its own pixel. With
    the branch on, the computed field contains every input pixel a feature depends on (autograd's
    support of the Jacobian), at odd and even sizes."""
    rows, columns = load_default_tokenizer().encoder.receptive_field(13, 21)
    assert torch.equal(rows, torch.arange(13)[:, None].expand(13, 2))
    assert torch.equal(columns, torch.arange(21)[:, None].expand(21, 2))
    torch.manual_seed(0)
    encoder = DHTTokenizer().encoder.double()
    for height, width in ((13, 21), (16, 16), (5, 9)):
        rows, columns = encoder.receptive_field(height, width)
        images = torch.rand(1, 3, height, width, dtype=torch.float64, requires_grad=True)
        features = encoder(images)
        for y, x in itertools.product(range(height), range(width)):
            (grad,) = torch.autograd.grad(features[0, :, y, x].sum(), images, retain_graph=True)
            ys, xs = torch.nonzero(grad[0].abs().sum(0), as_tuple=True)
            assert int(ys.min()) >= rows[y, 0] and int(ys.max()) <= rows[y, 1]
            assert int(xs.min()) >= columns[x, 0] and int(xs.max()) <= columns[x, 1]
        assert int((rows[:, 1] - rows[:, 0]).max()) <= 16  # a field, not the whole image
    assert (rows[:, 1] - rows[:, 0]).min() > 0


def test_flat_edges_match_a_per_pixel_oracle() -> None:
    """Against windows read pixel by pixel, for the field of a fresh encoder (coarse branch on)."""
    torch.manual_seed(0)
    encoder = DHTTokenizer().encoder
    images = generated_shapes(48, 60, seed=4)[None]
    images[:, :, 12:20, 40:] = 0.5  # a band across the ground
    rows, columns = encoder.receptive_field(48, 60)
    flat = torch.zeros(48, 60, dtype=torch.bool)
    for y, x in itertools.product(range(48), range(60)):
        window = images[0, :, rows[y, 0] : rows[y, 1] + 1, columns[x, 0] : columns[x, 1] + 1]
        flat[y, x] = bool((window == window[:, :1, :1]).all())
    same_right = flat[:, 1:] & flat[:, :-1] & (images[0, :, :, 1:] == images[0, :, :, :-1]).all(0)
    same_down = flat[1:] & flat[:-1] & (images[0, :, 1:] == images[0, :, :-1]).all(0)
    oracle = torch.cat([same_right.flatten(), same_down.flatten()])
    assert torch.equal(flat_edges(images, rows, columns), oracle)
    assert 0 < int(oracle.sum()) < oracle.numel()


# ----------------------------------------------------------------------- objects on grounds
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("budget", [None, 4, 16])
def test_flat_areas_are_never_cut(size: tuple[int, int], budget: int | None) -> None:
    """`adaptok.partition` with the bundled weights: no border between two pixels of one flat
    area and the background one region, without a cap and with tight ones (the background is
    what merges first: every other region holds only object pixels), alone or in a batch."""
    images = objects_on_flat_grounds(*size)
    part = adaptok.partition(images, method="dht", budget=budget)
    check_partition(part)  # coverage, ids consecutive and grouped by image, 4-connected regions
    assert_flat_areas_whole(images, part)
    uncapped = adaptok.partition(images, method="dht", budget=None)
    if budget is not None:
        # The cap is met exactly, and the background's one region leaves the object the rest.
        assert part.counts.tolist() == uncapped.counts.clamp(max=budget).tolist()
    assert int(uncapped.counts.min()) >= 3  # the objects are not lost
    assert torch.equal(adaptok.partition(images, method="dht", budget=budget).labels, part.labels)
    for index in (0, 3, 6):
        alone = adaptok.partition(images[index : index + 1], method="dht", budget=budget)
        assert torch.equal(part.select([index]).labels, Partition.from_labels(alone.labels).labels)


def test_a_coarse_branch_that_is_on_keeps_its_flat_fields_whole() -> None:
    """A fresh tokenizer (coarse branch on, fields up to 19 pixels wide): no border between two
    pixels whose whole fields are one colour, which leaves many such pairs on these grounds."""
    torch.manual_seed(0)
    model = DHTTokenizer().eval()
    images = objects_on_flat_grounds(96, 160)
    labels = model.partition(images, budget=None).labels
    flat = flat_edges(images, *model.encoder.receptive_field(96, 160))
    cut = torch.cat(
        [
            (labels[:, :, 1:] != labels[:, :, :-1]).flatten(),
            (labels[:, 1:] != labels[:, :-1]).flatten(),
        ]
    )
    assert int(flat.sum()) > images[:, 0].numel() // 4
    assert not bool((flat & cut).any())


@pytest.mark.parametrize("sample_budget", [False, True])
def test_training_forward_keeps_flat_areas_whole(sample_budget: bool) -> None:
    """The training forward (deterministic or sampled budget): the same flat-area guarantee, nested
    levels, and gradient from the mean-injected pixels into the tokenizer."""
    images = objects_on_flat_grounds(96, 160)
    model = load_default_tokenizer().train()
    for budget in (None, 8):
        generator = torch.Generator().manual_seed(0)
        result = model(images, budget=budget, sample_budget=sample_budget, generator=generator)
        check_partition(result.partition)
        assert_flat_areas_whole(images, result.partition)
        if not sample_budget:
            same = model.partition(images, budget=budget, sample_budget=False)
            assert torch.equal(result.partition.labels, same.labels)
    for finer, coarser in itertools.pairwise(result.levels):
        pairs = torch.unique(finer.flatten() * 10**6 + coarser.flatten())
        assert pairs.numel() == torch.unique(finer).numel()  # each finer region in one coarser
    pairs = torch.unique(result.levels[0].flatten() * 10**6 + result.selection.flatten())
    assert pairs.numel() == torch.unique(result.levels[0]).numel()  # selection: unions of atoms
    weights = torch.linspace(-1, 1, images.shape[-1])
    (result.pixels * weights).sum().backward()
    # The bundled coarse branch is off (its last convolution zero), so its first gets no gradient.
    assert_gradients_reach(
        model.encoder.pointwise, model.encoder.down2, model.self_edge, model.inject
    )
