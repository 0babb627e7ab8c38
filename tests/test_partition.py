import itertools

import pytest
import torch

import adaptok
from adaptok import AdaptokError, Partition
from adaptok.graph import label_components
from adaptok.ops import add_blocks, sum_blocks
from adaptok.regions import PartitionError, check_partition, lift


def random_partition(batch: int = 3, height: int = 12, width: int = 17) -> Partition:
    return Partition.from_labels(label_components(torch.randint(0, 4, (batch, height, width))))


def test_fields_match_a_per_region_oracle() -> None:
    part = random_partition()
    check_partition(part)
    for region in range(part.num_regions):
        b, ys, xs = torch.nonzero(part.labels == region, as_tuple=True)
        assert part.area[region] == ys.numel()
        assert part.batch_index[region] == b[0] and (b == b[0]).all()
        expected = [ys.min(), xs.min(), ys.max() + 1, xs.max() + 1]
        assert part.box[region].tolist() == [int(v) for v in expected]


def test_ids_are_grouped_by_image_and_counts_add_up() -> None:
    part = random_partition()
    assert (part.batch_index[1:] >= part.batch_index[:-1]).all()
    assert part.counts.sum() == part.num_regions
    assert part.offsets.tolist() == [0, *part.counts.cumsum(0).tolist()]


def test_from_labels_renumbers_repeated_and_sparse_ids() -> None:
    labels = torch.tensor([[[7, 7], [3, 3]], [[7, 9], [7, 9]]])
    part = Partition.from_labels(labels)
    assert part.labels.tolist() == [[[0, 0], [1, 1]], [[2, 3], [2, 3]]]
    assert part.counts.tolist() == [2, 2]


def test_scatter_and_region_mean_round_trip() -> None:
    part = random_partition()
    values = torch.randn(part.num_regions, 5)
    spread = part.scatter(values)
    assert spread.shape == (3, 5, 12, 17)
    torch.testing.assert_close(part.region_mean(spread), values)
    assert torch.equal(part.scatter(values[:, 0]), spread[:, 0])


def test_mean_image_is_constant_per_region_and_preserves_region_sums() -> None:
    part = random_partition()
    images = torch.rand(3, 3, 12, 17, dtype=torch.float64)
    mean = part.mean_image(images)
    torch.testing.assert_close(part.region_mean(mean), part.region_mean(images))
    torch.testing.assert_close(part.mean_image(mean), mean)


def test_region_mean_gradient() -> None:
    part = random_partition(batch=1, height=5, width=6)
    images = torch.rand(1, 2, 5, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(part.region_mean, (images,))


def test_pad_and_unpad() -> None:
    part = random_partition()
    values = torch.arange(part.num_regions)
    padded, valid = part.pad(values, fill=-1)
    assert padded.shape == (3, int(part.counts.max()))
    assert valid.sum(1).tolist() == part.counts.tolist()
    assert (padded[~valid] == -1).all()
    assert torch.equal(part.unpad(padded, valid), values)
    # padded_rows: where pad puts each region in the padded batch flattened to [B * T]
    rows, longest = part.padded_rows()
    assert longest == padded.shape[1]
    assert torch.equal(padded.flatten()[rows], values)
    assert torch.equal(rows // longest, part.batch_index)


def test_select_keeps_the_images_partition() -> None:
    part = random_partition()
    one = part.select([1])
    assert one.num_regions == part.counts[1]
    assert torch.equal(one.labels + part.offsets[1], part.labels[1:2])


def test_concatenate_undoes_a_split_of_the_batch() -> None:
    part = random_partition(batch=4)
    chunks = [part.select([0]), part.select([1, 2]), part.select([3])]
    joined = Partition.concatenate(chunks)
    for name in ("labels", "batch_index", "box", "area"):
        assert torch.equal(getattr(joined, name), getattr(part, name)), name
    check_partition(joined)
    with pytest.raises(PartitionError, match="at least one"):
        Partition.concatenate([])
    with pytest.raises(PartitionError, match=r"one image size, got \[\(12, 17\), \(12, 18\)\]"):
        Partition.concatenate([part, random_partition(width=18)])


def test_take_keeps_each_images_region_order_and_says_where_each_region_came_from() -> None:
    part = random_partition(batch=4)
    # Ids out of first-pixel order within each image (as dHT gives them): reverse them.
    start = (part.counts.cumsum(0) - part.counts)[part.batch_index]
    end = part.counts.cumsum(0)[part.batch_index]
    reversed_ids = start + end - 1 - torch.arange(part.num_regions)
    shuffled = Partition.from_labels(reversed_ids[part.labels], relabel=False)
    taken, rows = shuffled.take([3, 1])
    check_partition(taken)
    selected = shuffled.select([3, 1])
    assert torch.equal(Partition.from_labels(taken.labels).labels, selected.labels)
    # Region j of the result is region rows[j] of the source, in the source's order per image.
    for new, old in enumerate(rows.tolist()):
        assert torch.equal(taken.labels == new, shuffled.labels[[3, 1]] == old), (new, old)
    assert torch.equal(taken.box, shuffled.box[rows]) and torch.equal(
        taken.area, shuffled.area[rows]
    )
    assert bool((rows[1:] > rows[:-1])[taken.batch_index[1:] == taken.batch_index[:-1]].all())


@pytest.mark.parametrize("size", [(12, 17), (24, 34), (13, 40), (31, 18)])
def test_lift_carries_every_field_to_a_finer_grid(size: tuple[int, int]) -> None:
    """Boxes and areas derived from the blocks equal those of the lifted labels' pixels."""
    part = random_partition()
    lifted = part.lift(*size)
    assert torch.equal(lifted.labels, lift(part.labels, *size))
    derived = Partition.from_labels(lifted.labels, relabel=False)
    for name in ("batch_index", "box", "area"):
        assert torch.equal(getattr(lifted, name), getattr(derived, name)), name
    check_partition(lifted)
    with pytest.raises(AdaptokError, match="at least the Partition's 12x17"):
        part.lift(11, 40)


@pytest.mark.parametrize("size", [(24, 34), (36, 17), (12, 51)])
def test_means_and_sums_on_a_finer_grid_equal_those_of_the_lifted_partition(size) -> None:
    """region_mean on a whole multiple of the Partition's grid reads blocks, and add_blocks
    adds a map over blocks, as the lifted Partition reads and writes its pixels."""
    part = random_partition()  # 12 x 17
    lifted = part.lift(*size)
    images = torch.rand(part.batch_size, 3, *size, dtype=torch.float64)
    torch.testing.assert_close(part.region_mean(images), lifted.region_mean(images))
    values = torch.randn(part.num_regions, 3, dtype=torch.float64)
    summed = add_blocks(images, part.scatter(values))
    assert torch.equal(summed, images + lifted.scatter(values))
    assert torch.equal(add_blocks(images, lifted.scatter(values)), summed)
    images.requires_grad_(True)
    part.region_mean(images).sum().backward()
    assert images.grad is not None and bool((images.grad > 0).all())
    with pytest.raises(AdaptokError, match="whole multiple of the Partition's 12x17"):
        part.region_mean(torch.rand(part.batch_size, 3, 18, 17))


@pytest.mark.parametrize(
    "dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int64]
)
def test_sum_blocks_equals_a_block_by_block_oracle(dtype: torch.dtype) -> None:
    """Every output pixel is the sum of its own rows x cols block, in every dtype (floating
    point through the pooling window, integers through the block axes)."""
    images = (torch.rand(2, 3, 12, 15) * 10).to(dtype)
    summed = sum_blocks(images, 3, 5)
    assert summed.shape == (2, 3, 4, 3) and summed.dtype == dtype
    for row, col in itertools.product(range(4), range(3)):
        block = images[:, :, 3 * row : 3 * row + 3, 5 * col : 5 * col + 5].double()
        expected = block.sum((2, 3))
        rtol = 1e-2 if dtype in (torch.float16, torch.bfloat16) else 1e-6
        torch.testing.assert_close(summed[:, :, row, col].double(), expected, atol=0, rtol=rtol)


def test_check_partition_rejects_disconnected_regions() -> None:
    labels = torch.tensor([[[0, 1, 0]]])
    part = Partition.from_labels(labels)
    with pytest.raises(PartitionError, match="not 4-connected"):
        check_partition(part)
    check_partition(part, connected=False)


def test_check_partition_rejects_inconsistent_fields() -> None:
    part = random_partition()
    broken = Partition(part.labels, part.batch_index, part.box, part.area + 1)
    with pytest.raises(PartitionError, match="area"):
        check_partition(broken)


@pytest.mark.parametrize(
    ("labels", "match"),
    [
        (torch.zeros(4, 4, dtype=torch.long), r"\[B, H, W\]"),
        (torch.zeros(1, 4, 4), "integer"),
        ("labels", r"\[B, H, W\]"),
        (-torch.ones(1, 4, 4, dtype=torch.long), ">= 0"),
    ],
)
def test_from_labels_rejects_bad_input(labels, match: str) -> None:
    with pytest.raises(PartitionError, match=match):
        Partition.from_labels(labels)


def test_from_labels_without_relabel_checks_ids() -> None:
    with pytest.raises(PartitionError, match="consecutive"):
        Partition.from_labels(torch.tensor([[[0, 2]]]), relabel=False)
    with pytest.raises(PartitionError, match="more than one image"):
        Partition.from_labels(torch.zeros(2, 2, 2, dtype=torch.long), relabel=False)


def test_scatter_and_mean_reject_mismatched_shapes() -> None:
    part = random_partition()
    with pytest.raises(AdaptokError, match="one row per region"):
        part.scatter(torch.zeros(part.num_regions + 1, 3))
    for wrong in (torch.zeros(part.num_regions - 1, 3), torch.tensor(1.0), 4):
        with pytest.raises(AdaptokError, match="one row per region"):
            part.pad(wrong)
    with pytest.raises(AdaptokError, match="to match the Partition"):
        part.mean_image(torch.zeros(3, 3, 12, 16))


def test_pad_of_equal_counts_matches_the_general_layout() -> None:
    labels = torch.arange(2 * 3 * 4).view(2, 3, 4)  # 12 one-pixel regions per image
    part = Partition.from_labels(labels)
    values = torch.randn(part.num_regions, 2)
    padded, valid = part.pad(values)
    assert valid.all() and padded.shape == (2, 12, 2)
    for b in range(2):
        torch.testing.assert_close(padded[b], values[part.batch_index == b])


def test_partition_and_tokens_print_a_summary_not_their_tensors() -> None:
    images = torch.rand(10, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    part = adaptok.partition(images, method="grid", patch_size=8)
    assert repr(part) == (
        "Partition(10 images of 32x32, 160 regions: [16, 16, 16, 16, 16, 16, 16, 16, ...] "
        "per image, device=cpu)"
    )
    one = adaptok.partition(images[:1], method="quadtree", budget=7, min_patch=8, max_patch=16)
    tokens = adaptok.extract_tokens(images[:2], adaptok.partition(images[:2], method="dht"), 8)
    assert repr(one) == "Partition(1 image of 32x32, 7 regions: [7] per image, device=cpu)"
    text = repr(tokens)
    assert text.startswith("Tokens(2 images x ") and "patch_size=8" in text
    assert "mask [2, " in text and "tensor(" not in text and len(text) < 200


def test_register_partitioner_refuses_clashes_and_checks_what_it_returns(monkeypatch) -> None:
    from adaptok.partitioners import registry

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    images = torch.rand(2, 3, 16, 16)

    def halves(images: torch.Tensor) -> Partition:
        labels = torch.zeros(images.shape[0], *images.shape[2:], dtype=torch.long)
        labels[:, :, images.shape[3] // 2 :] = 1
        return Partition.from_labels(labels)

    adaptok.register_partitioner("halves", halves)
    assert adaptok.partition(images, method="halves").counts.tolist() == [2, 2]
    with pytest.raises(AdaptokError, match="already registered"):
        adaptok.register_partitioner("grid", halves)  # the built-in stays
    assert adaptok.partition(images, method="grid", patch_size=8).counts.tolist() == [4, 4]
    adaptok.register_partitioner("halves", halves, replace=True)
    with pytest.raises(AdaptokError, match="must be callable"):
        adaptok.register_partitioner("nothing", None)
    adaptok.register_partitioner("tensor", lambda images: torch.zeros(1))
    with pytest.raises(AdaptokError, match="returned Tensor, not a Partition"):
        adaptok.partition(images, method="tensor")
    adaptok.register_partitioner("first", lambda images: halves(images[:1]))
    with pytest.raises(AdaptokError, match=r"Partition of 1 image\(s\) of 16x16 for 2 image"):
        adaptok.partition(images, method="first")


def test_results_of_the_dht_tokenizer_and_the_model_print_shapes_not_values() -> None:
    from adaptok.models import ModelConfig, build_model
    from adaptok.partitioners.dht import load_default_tokenizer

    images = torch.rand(2, 3, 32, 32)
    result = repr(load_default_tokenizer().eval()(images))
    assert result.startswith("DHTResult(partition=Partition(2 images of 32x32, ")
    assert "images=Tensor[2, 3, 32, 32] float32" in result and "tensor(" not in result
    model = build_model(ModelConfig(image_size=32, patch_size=8)).eval()
    output = repr(model.forward_output(images))
    assert "logits=Tensor[2, 10] float32" in output and "tensor(" not in output
