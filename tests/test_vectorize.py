"""adaptok.vector: shared boundaries, simplification, SVG output, rendering, CLI."""

from __future__ import annotations

import itertools
import os
import re
import struct
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from adaptok import AdaptokError, Partition, partition
from adaptok.cli.main import main
from adaptok.graph import label_components
from adaptok.io import load_image
from adaptok.partitioners.quadtree import with_nearest_budget
from adaptok.vector import (
    default_budget,
    douglas_peucker,
    fit_beziers,
    merge_equal_fills,
    refine_chains,
    render_svg,
    smooth_chains,
    trace_boundaries,
    vectorize,
    vectorize_batch,
    write_svg,
)
from adaptok.vector.simplify import Chains
from conftest import photo

try:
    import resvg_py  # noqa: F401  (renders the SVGs back; a dev dependency)

    HAVE_RESVG = True
except ImportError:  # pragma: no cover
    HAVE_RESVG = False
needs_resvg = pytest.mark.skipif(not HAVE_RESVG, reason="needs resvg-py: pip install resvg-py")

SVG_NS = "{http://www.w3.org/2000/svg}"


# ---------------------------------------------------------------------------------- helpers
def random_labels(height: int, width: int, regions: int, seed: int) -> np.ndarray:
    """Random label map (regions need not be connected), ids consecutive from 0."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, regions, (height, width))
    return np.unique(labels, return_inverse=True)[1].reshape(height, width)


def blocky_partition(height: int, width: int, regions: int, seed: int) -> Partition:
    """Random 4-connected regions of a few pixels each: hostile boundaries (many junctions,
    diagonal touches, holes)."""
    labels = torch.as_tensor(random_labels(height, width, regions, seed))[None]
    return Partition.from_labels(label_components(labels))


def nested_labels() -> np.ndarray:
    """[24, 24] a frame (0) around a ring (1) around a core (2) with a hole (3) in it, plus a
    region (4) touching the frame only at a corner (diagonal contact)."""
    labels = np.zeros((24, 24), dtype=np.int64)
    labels[3:21, 3:21] = 1
    labels[7:17, 7:17] = 2
    labels[10:13, 10:13] = 3
    labels[0, 23] = 4
    labels[1, 22] = 4  # 4-connected to nothing else of 4: relabel makes two regions
    return labels


def ring_polygons(boundaries) -> list[tuple[int, np.ndarray]]:
    """(region, [n, 2] closed polygon) of every ring, the slow way (a loop, for the oracle)."""
    rings: list[tuple[int, list[np.ndarray]]] = []
    for k in range(boundaries.ring_chain.shape[0]):
        chain = boundaries.ring_chain[k]
        points = boundaries.points[
            boundaries.chain_offsets[chain] : boundaries.chain_offsets[chain + 1]
        ]
        if boundaries.ring_reversed[k]:
            points = points[::-1]
        if boundaries.ring_start[k]:
            rings.append((int(boundaries.ring_region[k]), []))
        rings[-1][1].append(points)
    return [(region, np.concatenate(parts)) for region, parts in rings]


def signed_area(polygon: np.ndarray) -> float:
    x, y = polygon[:, 0].astype(float), polygon[:, 1].astype(float)
    return 0.5 * float(np.sum(x[:-1] * y[1:] - x[1:] * y[:-1]))


def to_rgb8(image: torch.Tensor) -> np.ndarray:
    return (image[0].permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255**2 / max(mse, 1e-12)))


def grey_photo(size: int = 64) -> torch.Tensor:
    return photo("astronaut", (size, size)).mean(1, keepdim=True).expand(-1, 3, -1, -1)


# ------------------------------------------------------------------------- shared boundaries
@pytest.mark.parametrize("seed", range(6))
def test_rings_enclose_exactly_each_region(seed: int) -> None:
    labels = random_labels(9 + seed, 13 - seed, 2 + seed, seed)
    boundaries = trace_boundaries(labels)
    areas = np.zeros(labels.max() + 1)
    for region, polygon in ring_polygons(boundaries):
        assert np.array_equal(polygon[0], polygon[-1])  # every ring closes
        areas[region] += signed_area(polygon)
    # Rings wind one way around regions and the other way around holes: they add up exactly.
    np.testing.assert_array_equal(-areas, np.bincount(labels.ravel()))


def test_every_crack_edge_is_in_one_chain_used_once_per_side() -> None:
    labels = nested_labels()
    boundaries = trace_boundaries(labels)
    padded = np.pad(labels, 1, constant_values=-1)
    crack = int((padded[1:, 1:-1] != padded[:-1, 1:-1]).sum()) + int(
        (padded[1:-1, 1:] != padded[1:-1, :-1]).sum()
    )
    lengths = np.abs(np.diff(boundaries.points, axis=0)).sum(1)
    inside = np.ones(lengths.shape[0], dtype=bool)
    inside[boundaries.chain_offsets[1:-1] - 1] = False  # steps between two chains
    assert lengths[inside].sum() == crack
    # Each chain is walked once by each of its regions; border chains once (outside is -1).
    uses = np.bincount(boundaries.ring_chain, minlength=boundaries.num_chains)
    np.testing.assert_array_equal(uses, np.where(boundaries.left < 0, 1, 2))
    assert (boundaries.left < boundaries.right).all()


def test_region_with_hole_has_two_rings() -> None:
    labels = nested_labels()
    boundaries = trace_boundaries(labels)
    rings = np.bincount(boundaries.ring_region[boundaries.ring_start])
    assert rings[1] == 2 and rings[2] == 2 and rings[3] == 1
    assert rings[0] == 2  # the frame: its outline and the hole the ring sits in


def test_trace_rejects_bad_labels() -> None:
    with pytest.raises(AdaptokError, match="integer"):
        trace_boundaries(np.zeros((3, 3)))
    with pytest.raises(AdaptokError, match="non-negative"):
        trace_boundaries(-np.ones((3, 3), dtype=np.int64))


# ------------------------------------------------------------------------------ simplification
def douglas_peucker_oracle(points: np.ndarray, tolerance: float) -> list[int]:
    """Textbook recursive Douglas-Peucker on one open polyline."""

    def distance(p, a, b):
        d = b - a
        t = np.clip(np.dot(p - a, d) / max(np.dot(d, d), 1e-12), 0, 1)
        return float(np.linalg.norm(p - (a + t * d)))

    def recurse(lo: int, hi: int) -> list[int]:
        if hi - lo < 2:
            return []
        dists = [distance(points[i], points[lo], points[hi]) for i in range(lo + 1, hi)]
        best = int(np.argmax(dists))
        if dists[best] <= tolerance:
            return []
        mid = lo + 1 + best
        return [*recurse(lo, mid), mid, *recurse(mid, hi)]

    return [0, *recurse(0, len(points) - 1), len(points) - 1]


def test_douglas_peucker_matches_recursive_oracle() -> None:
    rng = np.random.default_rng(0)
    lengths = [2, 5, 17, 40]
    polylines = [np.cumsum(rng.normal(size=(n, 2)), 0) for n in lengths]
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    chains = Chains(
        np.concatenate(polylines),
        offsets,
        np.zeros(offsets[-1], dtype=bool),
        np.zeros(len(lengths), dtype=bool),
    )
    simplified = douglas_peucker(chains, tolerance=0.7)
    for c, polyline in enumerate(polylines):
        expected = polyline[douglas_peucker_oracle(polyline, 0.7)]
        got = simplified.points[simplified.offsets[c] : simplified.offsets[c + 1]]
        np.testing.assert_array_equal(got, expected)


def test_a_square_keeps_its_corners_wherever_its_loop_was_entered() -> None:
    # Numbered this way, the tracer enters the square's loop mid-edge at (17, 16): the seam must
    # not make the corner (16, 16) look like a one-pixel step (it was rounded into a bulge).
    labels = np.ones((64, 64), dtype=np.int64)
    labels[16:48, 16:48] = 0
    boundaries = trace_boundaries(labels)
    loop = int(np.nonzero(boundaries.closed)[0][0])
    assert boundaries.points[boundaries.chain_offsets[loop]].tolist() == [17, 16]
    part = Partition.from_labels(torch.as_tensor(labels)[None], relabel=False)
    image = torch.ones(3, 64, 64)
    image[:, 16:48, 16:48] = 0.5
    for smoothness in (1.0, 3.0):
        svg = vectorize(image, part, smoothness=smoothness)
        assert not re.search(r"[cCsS]", svg.split("<path")[1])  # straight edges only
    rendered = render_svg(vectorize(image, part))[..., :3]
    assert np.array_equal(rendered, to_rgb8(image[None]))


def test_refine_keeps_chain_ends_and_long_corners() -> None:
    # One open chain: a 45-degree staircase, then a long L corner.
    points = np.array([[0, 0], [1, 0], [1, 1], [2, 1], [2, 2], [8, 2], [8, 8]])
    chains = refine_chains(points, np.array([0, 7]), np.array([False]), corner_length=3)
    np.testing.assert_array_equal(chains.points[0], [0, 0])
    np.testing.assert_array_equal(chains.points[-1], [8, 8])
    assert [8, 2] in chains.points[chains.fixed].tolist()  # the genuine corner stays sharp
    assert [1, 1] not in chains.points.tolist()  # staircase corners are replaced by midpoints


# ------------------------------------------------------------------------------- SVG documents
def parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG_NS}svg" and root.get("version") == "1.1"
    assert root.get("viewBox") is not None
    return root


@needs_resvg
@pytest.mark.parametrize("smoothness", [0.0, 1.0, 3.0])
@pytest.mark.parametrize("kind", ["blocky", "nested"])
def test_one_path_per_region_covering_everything(smoothness: float, kind: str) -> None:
    if kind == "blocky":  # tiny regions, diagonal contacts, holes
        part = blocky_partition(48, 48, 6, seed=1)
    else:  # regions inside holes of regions inside holes
        part = Partition.from_labels(label_components(torch.as_tensor(nested_labels())[None]))
    image = grey_photo(part.image_size[0])
    svg = vectorize(image, part, smoothness=smoothness, tolerance=0.6 + smoothness / 3)
    paths = parse(svg).findall(f".//{SVG_NS}path")
    assert len(paths) == part.num_regions
    rendered = render_svg(svg)
    assert (rendered[..., 3] == 255).all()  # nothing of a transparent canvas shows through
    # A grey image drawn over magenta: no pixel may keep (or blend in) the magenta.
    on_magenta = render_svg(svg, background="#ff00ff")[..., :3].astype(int)
    assert (np.abs(on_magenta - on_magenta.mean(-1, keepdims=True)) <= 1).all()


@needs_resvg
@pytest.mark.parametrize("method", ["slic", "grid", "quadtree"])
def test_path_colours_are_region_means_and_coverage_is_complete(method: str) -> None:
    image = photo("coffee", (64, 64))
    options = {"budget": 60} if method == "slic" else {}
    svg = vectorize(image, method, **options)
    part = partition(image, "slic", budget=60) if method == "slic" else None
    root = parse(svg)
    fills = [p.get("fill") for p in root.findall(f".//{SVG_NS}path")]
    assert all(re.fullmatch(r"#[0-9a-f]{6}", f) for f in fills)
    if part is not None:
        means = (part.region_mean(image).clamp(0, 1) * 255).round().long().tolist()
        assert fills == ["#" + "".join(f"{c:02x}" for c in m) for m in means]
    assert (render_svg(svg)[..., 3] == 255).all()


@needs_resvg
def test_exact_polygons_reproduce_the_mean_image() -> None:
    """smoothness=0 writes the exact pixel outlines: the SVG renders to the partition itself."""
    labels = torch.as_tensor(nested_labels())[None]
    part = Partition.from_labels(label_components(labels))
    image = torch.rand(1, 3, 24, 24)
    svg = vectorize(image, part, smoothness=0)
    rendered = render_svg(svg)[..., :3]
    np.testing.assert_array_equal(rendered, to_rgb8(part.mean_image(image)))


@needs_resvg
@pytest.mark.parametrize("tolerance", [0.0, 0.4, 2.0])
def test_random_regions_exact_polygons(tolerance: float) -> None:
    part = blocky_partition(20, 28, 3, seed=2)
    image = torch.rand(1, 3, 20, 28)
    svg = vectorize(image, part, smoothness=0, tolerance=tolerance)
    np.testing.assert_array_equal(render_svg(svg)[..., :3], to_rgb8(part.mean_image(image)))


@needs_resvg
@pytest.mark.parametrize("method", ["slic", "dht"])
@pytest.mark.parametrize("name", ["astronaut", "hubble_deep_field"])
def test_rendered_psnr_close_to_partition_mean_image(method: str, name: str) -> None:
    image = photo(name, (96, 96))
    with torch.no_grad():  # dht: the bundled weights, as vectorize's default method
        part = partition(image, method, budget=400)
    svg = vectorize(image, part)  # default smoothness
    reference = to_rgb8(image)
    mean_psnr = psnr(to_rgb8(part.mean_image(image)), reference)
    svg_psnr = psnr(render_svg(svg)[..., :3], reference)
    assert svg_psnr >= mean_psnr - 1.5, (svg_psnr, mean_psnr)


def test_background_and_antialiasing_options() -> None:
    image = photo("chelsea", (40, 40))
    part = blocky_partition(40, 40, 2, seed=3)
    plain = vectorize(image, part)
    assert '<g shape-rendering="crispEdges">' in plain and "<rect" not in plain
    with_rect = parse(vectorize(image, part, background="#123456", crisp_edges=False))
    rect = with_rect.find(f"{SVG_NS}rect")
    assert rect is not None and rect.get("fill") == "#123456"
    assert "shape-rendering" not in ET.tostring(with_rect, encoding="unicode")
    mean_rect = parse(vectorize(image, part, background=True)).find(f".//{SVG_NS}rect")
    assert mean_rect is not None


@needs_resvg
def test_grey_and_transparent_images() -> None:
    grey = photo("astronaut", (32, 32)).mean(1, keepdim=True)
    part = blocky_partition(32, 32, 3, seed=4)
    fills = [p.get("fill") for p in parse(vectorize(grey, part)).findall(f".//{SVG_NS}path")]
    assert all(f[1:3] == f[3:5] == f[5:7] for f in fills)
    rgba = torch.cat([photo("coffee", (32, 32)), torch.ones(1, 1, 32, 32)], 1)
    rgba[:, 3, :, :16] = 0.25  # left half translucent
    svg = vectorize(rgba, part, smoothness=0, tolerance=0, corner_length=0)
    alpha = render_svg(svg)[..., 3].astype(float) / 255
    expected = part.mean_image(rgba[:, 3:])[0, 0].numpy()
    np.testing.assert_allclose(alpha, expected, atol=0.02)
    assert "fill-opacity" in svg


def test_deterministic_and_batch_independent() -> None:
    images = torch.cat([photo("astronaut", (40, 48)), photo("rocket", (40, 48))])
    part = blocky_partition(40, 48, 4, seed=5)
    both = Partition.from_labels(torch.cat([part.labels, part.labels]))
    batch = vectorize_batch(images, both)
    assert batch[0] == vectorize(images[:1], part) == vectorize(images[0], part)
    assert batch[1] == vectorize(images[1:], part)


def test_bad_arguments_teach() -> None:
    image = photo("astronaut", (32, 32))
    part = blocky_partition(32, 32, 3, seed=6)
    with pytest.raises(AdaptokError, match="known methods"):
        vectorize(image, "nope")
    with pytest.raises(AdaptokError, match="ready Partition"):
        vectorize(image, part, budget=10)
    with pytest.raises(AdaptokError, match="smoothness"):
        vectorize(image, part, smoothness=-1)
    with pytest.raises(AdaptokError, match="Partition is for"):
        vectorize(photo("astronaut", (16, 32)), part)
    with pytest.raises(AdaptokError, match="channels"):
        vectorize(torch.rand(5, 8, 8), blocky_partition(8, 8, 2, seed=0))
    with pytest.raises(AdaptokError, match="background"):
        vectorize(image, part, background="blue-ish")
    with pytest.raises(AdaptokError, match="vectorize_batch"):
        vectorize(torch.rand(2, 3, 8, 8), "grid")


# -------------------------------------------------------------------------------------- files
def png_header(width: int, height: int) -> bytes:
    """A PNG that claims a size in its header but holds (almost) no pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )


def test_image_messages_read_right_for_one_image_and_for_many() -> None:
    with pytest.raises(AdaptokError, match=r"^image must be finite, but NaN or infinite values"):
        vectorize(torch.full((3, 8, 8), float("nan")))
    with pytest.raises(AdaptokError, match=r"^images must be finite, but NaN or infinite values"):
        partition(torch.full((2, 3, 8, 8), float("inf")))
    with pytest.raises(AdaptokError, match=r"^image must be at least 1x1 pixels, got 0x8"):
        vectorize(torch.rand(3, 0, 8))


def test_huge_images_are_refused_before_decoding(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header(100_000, 100_000))
    with pytest.raises(AdaptokError, match=r"bomb\.png.*(pixels|decompression bomb)"):
        load_image(bomb, mode=None)
    medium = tmp_path / "medium.png"
    medium.write_bytes(png_header(5000, 4000))
    with pytest.raises(AdaptokError, match=r"medium\.png: image of 5000x4000 .* limit"):
        load_image(medium, max_pixels=1_000_000, mode=None)


def hostile_names() -> list[str]:
    names = ["with space.png", "quote'\"s.png", "..dots...png", "x" * 240 + ".png"]
    if os.name == "posix":
        names.append(os.fsdecode(b"bad-\xff\xfe-utf8.png"))
    return names


@needs_resvg
def test_cli_handles_hostile_names_and_bad_files(tmp_path: Path, capsys) -> None:
    rng = np.random.default_rng(0)
    sources = []
    for name in hostile_names():
        path = tmp_path / name
        Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(path, "PNG")
        sources.append(str(path))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header(100_000, 100_000))
    out = tmp_path / "out"
    args = ["vectorize", *sources, str(broken), str(bomb), str(tmp_path / "missing.png")]
    code = main([*args, "--method", "grid", "-o", str(out), "--preview"])
    assert code == 1
    err = capsys.readouterr().err
    assert "broken.png: not a readable image" in err
    assert "missing.png: no such file" in err
    assert "bomb.png" in err
    assert "3 of 8 images failed" in err
    svgs = sorted(out.glob("*.svg"))
    assert len(svgs) == len(sources)
    assert all(len(os.fsencode(p.name)) <= 255 for p in svgs)
    for svg in svgs:
        parse(svg.read_text(encoding="utf-8"))
        assert svg.with_name(svg.stem + ".preview.png").is_file()


def test_cli_single_output_file_and_parent_names(tmp_path: Path) -> None:
    source = tmp_path / "sub" / "pic.png"
    source.parent.mkdir()
    Image.fromarray(np.full((16, 16, 3), 90, dtype=np.uint8)).save(source)
    target = tmp_path / "one.svg"
    relative = str(tmp_path / "sub" / ".." / "sub" / "pic.png")
    assert main(["vectorize", relative, "--method", "grid", "-o", str(target)]) == 0
    assert len(parse(target.read_text()).findall(f".//{SVG_NS}path")) == 1
    assert (
        main(
            [
                "vectorize",
                str(source),
                str(source),
                "--method",
                "grid",
                "-o",
                str(tmp_path / "many.svg"),
            ]
        )
        == 2
    )  # several images need a folder


@needs_resvg
def test_smooth_curveto_shorthand_draws_the_same_curves() -> None:
    labels = torch.as_tensor(random_labels(40, 40, 2, seed=7))[None]
    part = Partition.from_labels(label_components(labels))
    boundaries = trace_boundaries(part.labels[0].numpy())
    chains = refine_chains(boundaries.points, boundaries.chain_offsets, boundaries.closed)
    curves = fit_beziers(douglas_peucker(smooth_chains(chains, 2), 0.5), 1.0)
    colors = np.random.default_rng(0).integers(0, 256, (part.num_regions, 3))
    short = write_svg(boundaries, curves, colors, crisp_edges=True)
    full = write_svg(boundaries, curves, colors, crisp_edges=True, shorthand=False)
    assert re.search(r"s-?\d", short) and not re.search(r"s-?\d", full)
    assert len(short) < len(full)
    np.testing.assert_array_equal(render_svg(short), render_svg(full))


def test_read_image_keeps_transparency_and_16_bit_grey(tmp_path: Path) -> None:
    ramp = (np.arange(32 * 32).reshape(32, 32) * 64).astype(np.uint16)  # 0..65472
    Image.fromarray(ramp).save(tmp_path / "grey16.png")
    grey = load_image(tmp_path / "grey16.png", mode=None)
    assert grey.shape == (1, 1, 32, 32)
    torch.testing.assert_close(grey[0, 0], torch.from_numpy(ramp / 65535).float())
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[..., 3] = 128
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    assert load_image(tmp_path / "rgba.png", mode=None).shape == (1, 4, 8, 8)
    Image.fromarray(rgba[..., 0]).convert("LA").save(tmp_path / "la.png")
    assert load_image(tmp_path / "la.png", mode=None).shape == (1, 2, 8, 8)
    palette = Image.fromarray(rgba[..., :3]).convert("P")
    palette.info["transparency"] = 0
    palette.save(tmp_path / "palette.png", transparency=0)
    assert load_image(tmp_path / "palette.png", mode=None).shape[1] in (2, 4)
    svg = vectorize(tmp_path / "rgba.png", "grid", patch_size=4)
    # four grid squares of one fill: one shape (merge_equal_fills)
    assert svg.count("<path") == 1 and 'fill-opacity="0.5"' in svg


@needs_resvg
def test_default_method_is_dht_with_the_default_budget() -> None:
    image = photo("coffee", (48, 48))
    with torch.no_grad():
        svg = vectorize(image)
        part = partition(image, "dht", budget=default_budget(48, 48))
    assert len(parse(svg).findall(f".//{SVG_NS}path")) == part.num_regions
    assert (render_svg(svg)[..., 3] == 255).all()


@needs_resvg
def test_quadtree_on_a_size_that_needs_padding_covers_exactly_the_image() -> None:
    # 72 x 100 is no multiple of max_patch 32: the quadtree runs padded, is cropped back, and the
    # SVG still covers every pixel of the image (and nothing of the padding).
    image = photo("coffee", (72, 100))
    # a budget is checked against the padded size and never rounded: as `partition` does
    with pytest.raises(AdaptokError, match=r"budget 40 is not reachable.*padded to 96x128.*try 39"):
        vectorize(image, "quadtree", budget=40, min_patch=8, max_patch=32)
    svg = vectorize(image, "quadtree", budget=39, min_patch=8, max_patch=32, smoothness=0)
    root = parse(svg)
    assert root.get("viewBox").split()[2:] == [str(100 * 4), str(72 * 4)]
    rendered = render_svg(svg)
    assert rendered.shape[:2] == (72, 100)
    assert (rendered[..., 3] == 255).all()
    options = with_nearest_budget(72, 100, {"budget": 40, "min_patch": 8, "max_patch": 32})
    assert options["budget"] == 39  # 12 + 3j at the padded 96 x 128
    part = partition(image, "quadtree", **options)
    assert part.image_size == (72, 100)
    assert len(root.findall(f".//{SVG_NS}path")) == part.num_regions


@pytest.mark.parametrize("method", ["dht", "grid", "quadtree", "slic"])
@pytest.mark.parametrize("channels", [1, 3, 4])
def test_a_flat_image_is_one_path_whatever_the_method(method: str, channels: int) -> None:
    flat = torch.ones(channels, 75, 101)
    for options in ({}, {"background": True}):
        svg = vectorize(flat, method, **options)
        assert svg.count("<path") == 1 and '<path fill="#ffffff"' in svg
        assert svg.count("<rect") == 0  # a background the colour of the one shape adds nothing


def test_background_of_a_logo_on_transparency_is_the_colour_one_sees() -> None:
    # a white square on a transparent ground: the mean colour is the square's, not a grey mixed
    # from the invisible ground
    logo = torch.zeros(4, 64, 64)
    logo[:, 16:48, 16:48] = 1.0
    rect = parse(vectorize(logo, "grid", patch_size=16, background=True)).find(f".//{SVG_NS}rect")
    assert rect is not None and rect.get("fill") == "#ffffff"


def test_touching_regions_of_one_fill_are_one_shape_and_the_picture_is_unchanged() -> None:
    # Two grey squares on white, the grid cuts each into 4 (and the white into 8): 4 shapes (the
    # two white quadrants touch only at a corner), and the exact polygons still render to the
    # partition's mean image.
    image = torch.ones(3, 64, 64)
    image[:, 0:32, 0:32] = 0.5
    image[:, 32:64, 32:64] = 0.25
    part = partition(image, "grid", patch_size=16)
    svg = vectorize(image, "grid", patch_size=16, smoothness=0, tolerance=0)
    fills = sorted(p.get("fill") for p in parse(svg).findall(f".//{SVG_NS}path"))
    assert fills == ["#404040", "#808080", "#ffffff", "#ffffff"]
    assert np.array_equal(render_svg(svg)[..., :3], to_rgb8(part.mean_image(image[None])))
    # a ready Partition keeps one path per region (path i fills region i)
    assert vectorize(image, part).count("<path") == part.num_regions == 16


@pytest.mark.parametrize("with_opacity", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_merge_equal_fills_matches_pixel_components_oracle(seed: int, with_opacity: bool) -> None:
    # The region-graph merge equals the obvious pixel-level one: 4-connected components of the
    # map of written fills (colour and opacity level), numbered in raster order, per image.
    from conftest import random_partition

    part = random_partition(2, 30, 41, classes=4, block=2, seed=seed)  # 4-connected regions
    generator = torch.Generator().manual_seed(seed)
    # region ids in no raster order (shuffled within each image), as a partitioner may number them
    bounds = itertools.pairwise(part.offsets.tolist())
    shuffled = torch.cat([lo + torch.randperm(hi - lo, generator=generator) for lo, hi in bounds])
    part = Partition.from_labels(shuffled[part.labels], relabel=False)
    palette = torch.tensor([[0, 0, 0], [255, 255, 255], [10, 20, 30]])
    colors = palette[torch.randint(0, 3, (part.num_regions,), generator=generator)]
    opacity = None
    if with_opacity:
        opacity = (torch.randint(0, 3, (part.num_regions,), generator=generator) / 2).numpy()
    shapes, shape_colors, shape_opacity = merge_equal_fills(part, colors, opacity)

    level = np.zeros(part.num_regions, dtype=np.int64) if opacity is None else opacity * 100
    key = colors.numpy() @ np.array([65536, 256, 1]) * 101 + np.rint(level).astype(np.int64)
    key_map = torch.from_numpy(key)[part.labels]
    expected = label_components(key_map)
    assert shapes.num_regions < part.num_regions
    assert torch.equal(shapes.labels, expected)
    derived = Partition.from_labels(expected, relabel=False)
    for field in ("batch_index", "box", "area"):
        assert torch.equal(getattr(shapes, field), getattr(derived, field)), field
    pixel_key = key_map.flatten().numpy()
    first_pixel = np.unique(expected.flatten().numpy(), return_index=True)[1]
    shape_key = shape_colors @ np.array([65536, 256, 1]) * 101
    if shape_opacity is not None:
        shape_key = shape_key + np.rint(shape_opacity * 100).astype(np.int64)
    assert np.array_equal(shape_key, pixel_key[first_pixel])


def test_vectorize_budget_none_lets_dht_follow_the_content() -> None:
    halves = torch.zeros(3, 48, 48)
    halves[:, :, 24:] = 0.8
    uncapped = vectorize(halves, "dht", budget=None)
    assert uncapped.count("<path") == 2
    assert vectorize(halves, "dht", budget=1).count("<path") == 1
    with pytest.raises(AdaptokError, match="ready Partition"):
        vectorize(halves, partition(halves, method="grid"), budget=None)
