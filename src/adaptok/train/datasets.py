"""Datasets for training and evaluation: Fashion-MNIST (Debian's idx files), image folders,
segmentation folders (images + label PNGs) and generated shapes with exact masks.

Every dataset yields `(image [C, S, S] float32, target)` with images normalised by ImageNet
mean/std (what timm ViTs and the dHT tokenizer expect); the target is an int64 class index
(classification) or a [S, S] int64 label map (dense; 255 = ignore).
"""

from __future__ import annotations

import gzip
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset

from ..errors import AdaptokError
from ..ops import normalize

__all__ = [
    "DATASETS",
    "DatasetInfo",
    "FashionMNIST",
    "ImageFolder",
    "SegmentationFolder",
    "ShapesDataset",
    "SubsetOf",
    "TensorImages",
    "build_dataset",
    "holdout",
    "normalize",
]

FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
IGNORE_INDEX = 255


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about a dataset.

    Attributes:
        task: "classification" or "dense".
        num_classes: K.
        in_chans: channels of the images it yields.
        class_names: one name per class.
    """

    task: str
    num_classes: int
    in_chans: int
    class_names: tuple[str, ...]


def _resize(image: Tensor, size: int) -> Tensor:
    """[C, H, W] float -> [C, size, size] (area when shrinking, bilinear when growing)."""
    if image.shape[-2:] == (size, size):
        return image
    shrinking = image.shape[-1] > size and image.shape[-2] > size
    mode = "area" if shrinking else "bilinear"
    options = {} if shrinking else {"align_corners": False}
    return F.interpolate(image[None], size=(size, size), mode=mode, **options)[0]


def _read_idx(path: Path) -> np.ndarray:
    """Read a (gzipped) idx file (the MNIST format) as a uint8 array."""
    with gzip.open(path, "rb") as stream:
        data = stream.read()
    if len(data) < 8 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise AdaptokError(f"{path}: not an idx file of unsigned bytes (bad magic number)")
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims)
    if array.size != math.prod(shape):
        raise AdaptokError(f"{path}: expected {math.prod(shape)} values, found {array.size}")
    return array.reshape(shape)


FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


class FashionMNIST(Dataset):
    """Fashion-MNIST from Debian's `dataset-fashion-mnist` idx files.

    Args:
        root: folder holding train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz,
            t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz.
        split: "train" (60k) or "test" (10k).
        image_size: side the 28x28 images are upsampled to (bilinear).
        in_chans: 1, or 3 (the grey image repeated).
        limit: keep only the first `limit` images (a fixed subset), None: all.
    """

    def __init__(
        self,
        root: str | Path = FASHION_MNIST_ROOT,
        *,
        split: str = "train",
        image_size: int = 28,
        in_chans: int = 3,
        limit: int | None = None,
    ) -> None:
        if split not in ("train", "test"):
            raise AdaptokError(f"unknown split {split!r}; choose 'train' or 'test'")
        if in_chans not in (1, 3):
            raise AdaptokError(f"in_chans must be 1 or 3 for Fashion-MNIST, got {in_chans}")
        root = Path(root)
        prefix = "train" if split == "train" else "t10k"
        images_path = root / f"{prefix}-images-idx3-ubyte.gz"
        labels_path = root / f"{prefix}-labels-idx1-ubyte.gz"
        for path in (images_path, labels_path):
            if not path.is_file():
                raise AdaptokError(
                    f"Fashion-MNIST file {path} not found; install Debian's package with "
                    "`apt-get install dataset-fashion-mnist` or pass --data-root to the folder "
                    "holding the idx .gz files"
                )
        images = _read_idx(images_path)
        labels = _read_idx(labels_path)
        if limit is not None:
            images, labels = images[:limit], labels[:limit]
        self.images = torch.from_numpy(images.copy())
        self.labels = torch.from_numpy(labels.astype(np.int64))
        self.image_size = image_size
        self.in_chans = in_chans
        self.info = DatasetInfo("classification", 10, in_chans, FASHION_CLASSES)

    def __len__(self) -> int:
        return self.labels.shape[0]

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        image = self.images[index].float().div(255.0)[None]
        image = _resize(image, self.image_size).clamp(0, 1)
        image = normalize(image.expand(self.in_chans, -1, -1))
        return image, self.labels[index]


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _readable(path: Path) -> bool:
    """True when Pillow can decode the file; warns naming it otherwise."""
    try:
        with Image.open(path) as image:
            image.load()
        return True
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        warnings.warn(f"skipping unreadable image {path}: {error}", stacklevel=3)
        return False


def _load(path: Path, mode: str, size: int) -> Tensor | None:
    """Image file -> [C, size, size] float in [0, 1], or None (with a warning) if unreadable."""
    try:
        with Image.open(path) as image:
            array = np.asarray(image.convert(mode))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        warnings.warn(f"skipping unreadable image {path}: {error}", stacklevel=3)
        return None
    tensor = torch.from_numpy(array.copy()).float().div(255.0)
    tensor = tensor[None] if tensor.ndim == 2 else tensor.permute(2, 0, 1)
    return _resize(tensor, size).clamp(0, 1)


def _missing_folder(root: Path, what: str) -> AdaptokError:
    return AdaptokError(f"{what} folder {root} does not exist; check --data-root (got {root})")


class ImageFolder(Dataset):
    """Classification images laid out as root/<class name>/<image file>.

    Every file is decoded once when the folder is scanned; unreadable files are named in a
    warning and skipped, so a corrupt file never stops an epoch.

    Args:
        root: the dataset folder.
        image_size: side every image is resized to.
        in_chans: 3 (RGB) or 1 (grey).
    """

    def __init__(self, root: str | Path, *, image_size: int = 64, in_chans: int = 3) -> None:
        root = Path(root)
        if not root.is_dir():
            raise _missing_folder(root, "image")
        classes = sorted(p.name for p in root.iterdir() if p.is_dir())
        if not classes:
            raise AdaptokError(
                f"no class folders in {root}; expected root/<class name>/<image files>"
            )
        samples: list[tuple[Path, int]] = []
        for label, name in enumerate(classes):
            samples += [(p, label) for p in _image_files(root / name) if _readable(p)]
        if not samples:
            raise AdaptokError(f"no readable images ({', '.join(IMAGE_SUFFIXES)}) under {root}")
        self.samples = samples
        self.image_size = image_size
        self.mode = "RGB" if in_chans == 3 else "L"
        self.info = DatasetInfo("classification", len(classes), in_chans, tuple(classes))

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        # A file that broke after the scan is skipped (with a warning) for the next one.
        for offset in range(len(self.samples)):
            path, label = self.samples[(index + offset) % len(self.samples)]
            image = _load(path, self.mode, self.image_size)
            if image is not None:
                return normalize(image), torch.tensor(label)
        raise AdaptokError(f"no readable image left in {self.info}")


class SegmentationFolder(Dataset):
    """Dense-prediction data: root/images/<name>.<ext> with root/labels/<name>.png.

    Label PNGs hold one class id per pixel (mode L or P); 255 marks pixels not to score.
    Pairs whose image or label is unreadable are named in a warning and skipped.

    Args:
        root: the dataset folder.
        image_size: side images (bilinear) and labels (nearest) are resized to.
        num_classes: K (None: 1 + the largest id found in the labels).
        in_chans: 3 or 1.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        image_size: int = 64,
        num_classes: int | None = None,
        in_chans: int = 3,
    ) -> None:
        root = Path(root)
        if not root.is_dir():
            raise _missing_folder(root, "segmentation")
        images_dir, labels_dir = root / "images", root / "labels"
        if not images_dir.is_dir() or not labels_dir.is_dir():
            raise AdaptokError(
                f"{root} must contain images/ and labels/ folders (labels/<name>.png per image)"
            )
        pairs = []
        largest = 0
        for image_path in _image_files(images_dir):
            label_path = labels_dir / f"{image_path.stem}.png"
            if not label_path.is_file():
                warnings.warn(f"skipping {image_path}: no label file {label_path}", stacklevel=2)
                continue
            if not (_readable(image_path) and _readable(label_path)):
                continue
            with Image.open(label_path) as label:
                values = np.asarray(label)
            kept = values[values != IGNORE_INDEX]
            largest = max(largest, int(kept.max()) if kept.size else 0)
            pairs.append((image_path, label_path))
        if not pairs:
            raise AdaptokError(f"no readable image/label pairs under {root}")
        self.pairs = pairs
        self.image_size = image_size
        self.mode = "RGB" if in_chans == 3 else "L"
        classes = num_classes or largest + 1
        self.info = DatasetInfo("dense", classes, in_chans, tuple(str(i) for i in range(classes)))

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        image_path, label_path = self.pairs[index]
        image = _load(image_path, self.mode, self.image_size)
        with Image.open(label_path) as label_image:
            label = torch.from_numpy(np.asarray(label_image).astype(np.int64))
        if image is None:
            raise AdaptokError(f"{image_path} became unreadable after the dataset was scanned")
        label = F.interpolate(label[None, None].float(), size=image.shape[-2:], mode="nearest")
        return normalize(image), label[0, 0].long()


class ShapesDataset(Dataset):
    """Generated images of rectangles and discs on a textured background, with exact masks.

    Class 0 is background, 1 rectangles, 2 discs. Image `i` depends only on (seed, i).

    Args:
        length: number of images.
        image_size: side of each image.
        seed: base seed.
        max_shapes: shapes per image are drawn from 1..max_shapes.
    """

    def __init__(
        self, length: int = 256, *, image_size: int = 32, seed: int = 0, max_shapes: int = 3
    ) -> None:
        if length < 1 or image_size < 8:
            raise AdaptokError(
                f"ShapesDataset needs length >= 1 and image_size >= 8, got {length}, {image_size}"
            )
        self.length = length
        self.image_size = image_size
        self.seed = seed
        self.max_shapes = max_shapes
        self.info = DatasetInfo("dense", 3, 3, ("background", "rectangle", "disc"))

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        size = self.image_size
        ys = torch.arange(size, dtype=torch.float32)[:, None]
        xs = torch.arange(size, dtype=torch.float32)[None, :]
        background = torch.rand(3, 1, 1, generator=generator) * 0.5
        image = background + 0.05 * torch.rand(3, size, size, generator=generator)
        label = torch.zeros(size, size, dtype=torch.long)
        count = int(torch.randint(1, self.max_shapes + 1, (1,), generator=generator))
        for _ in range(count):  # a handful of shapes per image
            kind = int(torch.randint(1, 3, (1,), generator=generator))
            centre = torch.rand(2, generator=generator) * size
            radius = (0.1 + 0.2 * float(torch.rand(1, generator=generator))) * size
            if kind == 1:
                mask = ((ys - centre[0]).abs() <= radius) & ((xs - centre[1]).abs() <= radius * 0.7)
            else:
                mask = (ys - centre[0]) ** 2 + (xs - centre[1]) ** 2 <= radius**2
            colour = 0.5 + 0.5 * torch.rand(3, 1, 1, generator=generator)
            image = torch.where(mask, colour, image)
            label[mask] = kind
        return normalize(image.clamp(0, 1)), label


DATASETS = ("fashion-mnist", "folder", "seg-folder", "shapes")


def build_dataset(
    name: str,
    *,
    root: str | Path | None = None,
    split: str = "train",
    image_size: int = 64,
    in_chans: int = 3,
    limit: int | None = None,
    num_classes: int | None = None,
    seed: int = 0,
) -> Dataset:
    """A dataset by name: "fashion-mnist", "folder", "seg-folder" or "shapes".

    Args:
        name: the dataset kind.
        root: its folder ("folder" and "seg-folder": the split's folder, or a folder holding
            train/ and test/ sub-folders; "fashion-mnist": the idx folder, default Debian's).
        split: "train" or "test".
        image_size: side of the square images the model sees.
        in_chans: 3 or 1.
        limit: keep the first `limit` samples (a fixed subset).
        num_classes: classes of a segmentation folder (None: inferred).
        seed: seed of the generated shapes (the test split uses seed + 1).

    Returns:
        The dataset; `dataset.info` is its DatasetInfo.
    """
    if name not in DATASETS:
        raise AdaptokError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    if name == "fashion-mnist":
        return FashionMNIST(
            root or FASHION_MNIST_ROOT,
            split=split,
            image_size=image_size,
            in_chans=in_chans,
            limit=limit,
        )
    if name == "shapes":
        length = limit or (512 if split == "train" else 128)
        return ShapesDataset(length, image_size=image_size, seed=seed + (split != "train"))
    if root is None:
        raise AdaptokError(f"dataset {name!r} needs a folder: pass --data-root PATH")
    folder = Path(root)
    if (folder / split).is_dir():
        folder = folder / split
    if name == "folder":
        dataset: Dataset = ImageFolder(folder, image_size=image_size, in_chans=in_chans)
    else:
        dataset = SegmentationFolder(
            folder, image_size=image_size, num_classes=num_classes, in_chans=in_chans
        )
    if limit is not None and limit < len(dataset):
        dataset = SubsetOf(dataset, torch.arange(limit))
    return dataset


class TensorImages(Dataset):
    """Images held in memory in one tensor, with a fast `batch(index)` path.

    `fit` and `evaluate` read any dataset with a `batch` method by index tensors (one gather per
    batch instead of one `__getitem__` per image); other datasets go through a DataLoader.

    Args:
        images: [N, C', S, S] images as the model sees them (normalised); any float dtype
            (float16 halves the memory); C' may be 1 for grey images repeated to `info.in_chans`.
        targets: [N] int64 classes or [N, S, S] int64 label maps.
        info: the DatasetInfo of the images.
    """

    def __init__(self, images: Tensor, targets: Tensor, info: DatasetInfo) -> None:
        if images.ndim != 4 or images.shape[0] != targets.shape[0]:
            raise AdaptokError(
                f"TensorImages needs images [N, C, S, S] and N targets, got images "
                f"{tuple(images.shape)} and targets {tuple(targets.shape)}"
            )
        if images.shape[1] not in (1, info.in_chans):
            raise AdaptokError(
                f"images have {images.shape[1]} channels, info.in_chans is {info.in_chans}; "
                "give the images with in_chans channels (or 1 channel to repeat)"
            )
        self.images = images
        self.targets = targets
        self.info = info

    @classmethod
    def from_dataset(cls, dataset: Dataset, indices: range | list[int] | None = None,
                     *, dtype: torch.dtype = torch.float16) -> TensorImages:  # fmt: skip
        """Read `dataset[i]` for every index once into memory (grey images repeated over the
        channels are kept as one channel)."""
        order = range(len(dataset)) if indices is None else indices  # type: ignore[arg-type]
        items = [dataset[i] for i in order]
        images = torch.stack([image for image, _ in items])
        targets = torch.stack([torch.as_tensor(target) for _, target in items])
        if bool((images == images[:, :1]).all()):
            images = images[:, :1]
        return cls(images.to(dtype), targets, dataset.info)  # type: ignore[attr-defined]

    def __len__(self) -> int:
        return self.targets.shape[0]

    def batch(self, index: Tensor) -> tuple[Tensor, Tensor]:
        """index: [B] int64 -> (images [B, C, S, S] float32, targets [B] or [B, S, S])."""
        images = self.images[index].float()
        if images.shape[1] != self.info.in_chans:
            images = images.expand(-1, self.info.in_chans, -1, -1)
        return images, self.targets[index]

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        images, targets = self.batch(torch.tensor([index]))
        return images[0], targets[0]


class SubsetOf(Dataset):
    """Some samples of a dataset, keeping its `info` and its fast `batch` path (if any).

    Args:
        dataset: the dataset.
        indices: [M] int64 indices into it.
    """

    def __init__(self, dataset: Dataset, indices: Tensor) -> None:
        self.dataset = dataset
        self.indices = indices.long()
        self.info = dataset.info  # type: ignore[attr-defined]
        if hasattr(dataset, "batch"):
            self.batch = self._batch

    def _batch(self, index: Tensor) -> tuple[Tensor, Tensor]:
        return self.dataset.batch(self.indices[index])  # type: ignore[attr-defined]

    def __len__(self) -> int:
        return self.indices.shape[0]

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.dataset[int(self.indices[index])]


def holdout(dataset: Dataset, count: int, *, seed: int) -> tuple[Dataset, Dataset]:
    """The one validation-split rule: `count` samples drawn at random with `seed` are held out.

    A seeded draw, not the last `count` samples: folder datasets list their samples class by
    class, so a tail would hold out one class. Both parts keep the dataset's order.

    Args:
        dataset: the training samples.
        count: how many to hold out for validation (at least 1, fewer than len(dataset)).
        seed: seeds the draw.

    Returns:
        (training part, validation part).

    Raises:
        AdaptokError: `count` leaves no training sample.
    """
    if not 0 < count < len(dataset):
        raise AdaptokError(
            f"val_images {count} leaves none of the {len(dataset)} training samples to train "
            "on; hold out fewer"
            if count >= len(dataset)
            else f"val_images must be at least 1, got {count}"
        )
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))
    return (
        SubsetOf(dataset, order[count:].sort().values),
        SubsetOf(dataset, order[:count].sort().values),
    )
