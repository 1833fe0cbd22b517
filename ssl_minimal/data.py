"""Datasets as two tensors in memory: images uint8 [N, 3, H, W] and labels int64 [N].

The datasets of this course are small enough to hold in memory, so there are no DataLoaders, workers or
open files: the training loop draws a batch of indices and indexes `dataset.images` directly, on the CPU
or on a GPU (`dataset.to("cuda")`). Shuffling is the training loop's job, not this module's.

`load(name, split)` knows five datasets:

- ``"shapes"``: ten classes of simple shapes (circle, square, ...) drawn by this module in a few seconds,
  with a random colour, position, size, rotation, background and distractor blob. Nothing to download;
  the default dataset of the notebooks and tests. Each image comes with its ground-truth foreground mask
  (`ImageDataset.masks`: the pixels the shape covers), for scoring attention maps (lesson 12).
- ``"shapes64"``: the same scenes drawn at 64x64 (a ViT with 8x8 patches then sees 64 tokens, enough
  for an attention map worth looking at), with their masks.
- ``"cifar10"``: CIFAR-10, 50,000 train / 10,000 test images of 32x32 in 10 classes. Alex Krizhevsky,
  "Learning Multiple Layers of Features from Tiny Images", technical report, University of Toronto, 2009.
- ``"cifar100"``: CIFAR-100 from the same report, 100 ("fine") classes of 500 train / 100 test images.
- ``"stl10"``: STL-10, 96x96 images in 10 classes: 5,000 train, 8,000 test and 100,000 unlabelled images
  (label -1) made for unsupervised learning. Adam Coates, Andrew Ng, Honglak Lee, "An Analysis of
  Single-Layer Networks in Unsupervised Feature Learning", AISTATS 2011.

Where the real datasets are looked for (``data_dir``: the argument, else the environment variable
``SSL_DATA_DIR``, else ``~/.cache/ssl_minimal``):

- CIFAR-10 as JPEG bytes in ``data_dir/cifar10/cifar10_jpeg.npz`` or ``data_dir/cifar10_jpeg.npz`` (the format
  of the course's shared data folder, see its README). It is decoded once and the decoded arrays are cached.
- torchvision's own files: ``data_dir/cifar-10-batches-py``, ``data_dir/cifar-100-python``,
  ``data_dir/stl10_binary``. We read these formats ourselves (a few lines each): torchvision's dataset
  classes check the md5 of every file on every load (2.6 GB to hash for STL-10) and reject anything but the
  complete original file set, so they could not even read the tiny files our tests write.
- If nothing is found and downloading is allowed, torchvision's download code fetches the archive into
  ``data_dir`` (checking its md5) and we read the extracted files.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import math
import os
import pickle
import stat
import tempfile
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .checks import SSLMinimalError, check_images, unknown_name
from .text import Tokenizer, with_articles

DATASETS = ("shapes", "cifar10", "cifar100", "stl10", "shapes64")
SPLITS = {
    "shapes": ("train", "test"),
    "shapes64": ("train", "test"),
    "cifar10": ("train", "test"),
    "cifar100": ("train", "test"),
    "stl10": ("train", "test", "unlabeled", "train+unlabeled"),   # torchvision's STL10 split names
}
DATA_DIR_VARIABLE = "SSL_DATA_DIR"                   # environment variable naming the data folder
CACHE_DIR_VARIABLE = "SSL_CACHE_DIR"                 # environment variable naming the decoded-CIFAR-10 cache folder
DEFAULT_DATA_DIR = Path("~/.cache/ssl_minimal")      # data (and decoded caches) when nothing else is given

# Per-channel statistics of the training images on [0, 1], used by `backbones.Normalize`.
# CIFAR-10: the widely used values computed on the 50,000 original training images (see e.g.
# github.com/kuangliu/pytorch-cifar issue 19, and the shared data README). The JPEG copy in the shared
# data folder measures mean (0.4913, 0.4821, 0.4465), std (0.2452, 0.2428, 0.2606): the same to the
# precision that matters for normalisation, so one constant serves both.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
# CIFAR-100: computed on the 50,000 training images, as published in
# github.com/weiaicunzai/pytorch-cifar100 (conf/global_settings.py), rounded to 4 digits.
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
# STL-10: the commonly quoted statistics of STL-10's training + unlabelled images (not re-measured here:
# STL-10 cannot be downloaded on the course's build machines).
STL10_MEAN = (0.4467, 0.4398, 0.4066)
STL10_STD = (0.2603, 0.2566, 0.2713)
# shapes: measured on the generated training split at 32x32 (tests/test_data.py re-measures them).
SHAPES_MEAN = (0.4973, 0.5018, 0.5015)
SHAPES_STD = (0.2853, 0.2848, 0.2857)

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
STL10_CLASSES = ("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck")
STL10_IMAGE_SIZE = 96                    # STL-10 images are 96x96 (Coates et al. 2011)
CIFAR_IMAGE_SIZE = 32

CACHE_FILE_MODE = 0o644                  # decoded caches: readable by everyone, like the data they come from
RESIZE_CHUNK = 2048                      # images resized (or read from STL-10's files) at a time


@dataclass(repr=False)
class ImageDataset:
    """A labelled image dataset held in memory.

    images: uint8 [N, 3, H, W] in 0..255. labels: int64 [N], class index, or -1 for an unlabelled image.
    classes: the class names, in label order. mean, std: per-channel statistics on [0, 1] for
    `backbones.Normalize`. masks: bool [N, H, W], True on each image's object (ground-truth foreground),
    or None when the dataset has none ("shapes" has them; photographs here do not).
    """

    name: str
    split: str
    images: torch.Tensor        # uint8 [N, 3, H, W]
    labels: torch.Tensor        # int64 [N]; -1 = unlabelled
    classes: list[str]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    # Image-text pairs (CLIP), from `load_captioned`; None elsewhere, so nothing else notices them.
    captions: torch.Tensor | None = None        # int64 [N, K, L]: K captions per image, as token ids
    tokenizer: Tokenizer | None = None          # text <-> those token ids (ssl_minimal.text.Tokenizer)
    attributes: dict[str, torch.Tensor] | None = None   # per image [N], e.g. {"colour": ..., "unseen": ...}
    masks: torch.Tensor | None = None   # bool [N, H, W]: True on the object; None: no masks

    def __post_init__(self) -> None:
        check_images(self.images, "ImageDataset.images")
        if self.images.dtype != torch.uint8:
            raise SSLMinimalError(f"ImageDataset.images must be uint8 (0..255), got {self.images.dtype}; "
                                  f"convert with (images * 255).round().to(torch.uint8)")
        if (not isinstance(self.labels, torch.Tensor) or self.labels.dtype != torch.int64
                or self.labels.shape != (len(self.images),)):
            given = (f"{self.labels.dtype} {list(self.labels.shape)}" if isinstance(self.labels, torch.Tensor)
                     else type(self.labels).__name__)
            raise SSLMinimalError(f"ImageDataset.labels must be an int64 tensor of shape [{len(self.images)}] "
                                  f"(one label per image), got {given}")
        self.classes = list(self.classes)
        if len(self.labels) and (self.labels.min() < -1 or self.labels.max() >= len(self.classes)):
            raise SSLMinimalError(f"ImageDataset.labels must lie in -1..{len(self.classes) - 1} (-1 = unlabelled, "
                                  f"{len(self.classes)} classes), got {self.labels.min().item()}.."
                                  f"{self.labels.max().item()}")
        if self.captions is not None:
            _check_captions(self.captions, self.tokenizer, len(self.images))
        for name, values in (self.attributes or {}).items():
            if not isinstance(values, torch.Tensor) or values.shape[:1] != (len(self.images),):
                raise SSLMinimalError(f"ImageDataset.attributes[{name!r}] must be a tensor with one row per image "
                                      f"({len(self.images)}), got {getattr(values, 'shape', type(values).__name__)}")
        if self.masks is not None and (not isinstance(self.masks, torch.Tensor) or self.masks.dtype != torch.bool
                                       or self.masks.shape != (len(self.images), *self.images.shape[-2:])):
            given = (f"{self.masks.dtype} {list(self.masks.shape)}" if isinstance(self.masks, torch.Tensor)
                     else type(self.masks).__name__)
            raise SSLMinimalError(f"ImageDataset.masks must be None or a bool tensor of shape "
                                  f"{[len(self.images), *self.images.shape[-2:]]} (one mask per image), got {given}")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_size(self) -> int:
        return self.images.shape[-1]

    def to(self, device: torch.device | str) -> ImageDataset:
        """The same dataset with images, labels (and masks, captions) on `device` (e.g. "cuda"), so batches need no copy."""
        return dataclasses.replace(self, images=self.images.to(device), labels=self.labels.to(device),
                                   **self._per_image_fields(lambda values: values.to(device)))

    def subset(self, indices_or_n: int | Sequence[int] | torch.Tensor, seed: int = 0) -> ImageDataset:
        """A smaller dataset: the given indices (or boolean mask), or `n` images drawn at random, balanced
        over classes.

        With an integer n, every class gets n // num_classes images (the remainder goes to randomly chosen
        classes; a class with too few images gives all it has and the others make up the difference).
        Unlabelled images (label -1) count as one more group. The chosen images keep their original order.
        Example: `train.subset(1000, seed=0)` (100 per class), `train.subset(train.labels < 5)`.
        """
        if isinstance(indices_or_n, torch.Tensor) and indices_or_n.dim() == 0:
            indices_or_n = int(indices_or_n)
        if isinstance(indices_or_n, (int, np.integer)) and not isinstance(indices_or_n, bool):
            indices = _balanced_indices(self.labels.cpu(), int(indices_or_n), seed)
        else:
            indices = torch.as_tensor(indices_or_n).cpu()
            if indices.dtype == torch.bool and indices.shape == (len(self),):
                indices = indices.nonzero().squeeze(1)                  # a mask: the positions where it is True
            if indices.dim() != 1 or indices.is_floating_point() or indices.dtype == torch.bool:
                raise SSLMinimalError(f"subset needs an integer n, a 1-D list of indices or a boolean mask of "
                                      f"length {len(self)}, got {indices.dtype} of shape {list(indices.shape)}")
            indices = indices.long()
            if len(indices) and (indices.min() < 0 or indices.max() >= len(self)):
                raise SSLMinimalError(f"subset indices must lie in 0..{len(self) - 1} for {len(self)} images, "
                                      f"got {indices.min().item()}..{indices.max().item()}")
        indices = indices.to(self.images.device)
        return dataclasses.replace(self, images=self.images[indices], labels=self.labels[indices],
                                   **self._per_image_fields(lambda values: values[indices.to(values.device)]))

    def _per_image_fields(self, change) -> dict:
        """`change` applied to the optional per-image tensors (masks, captions, attributes) that are present."""
        fields = {}
        if self.masks is not None:
            fields["masks"] = change(self.masks)
        if self.captions is not None:
            fields["captions"] = change(self.captions)
        if self.attributes is not None:
            fields["attributes"] = {name: change(values) for name, values in self.attributes.items()}
        return fields

    def __repr__(self) -> str:
        shown = ", ".join(self.classes[:4]) + (", ..." if len(self.classes) > 4 else "")
        unlabelled = int((self.labels == -1).sum())
        return (f"ImageDataset(name={self.name!r}, split={self.split!r}, "
                f"images=uint8{list(self.images.shape)}, labels=int64[{len(self.labels)}]"
                + (f" ({unlabelled} unlabelled)" if unlabelled else "")
                + (f", masks=bool{list(self.masks.shape)}" if self.masks is not None else "")
                + f", classes={len(self.classes)} [{shown}]"
                + (f", captions=int64{list(self.captions.shape)}" if self.captions is not None else "")
                + f", device={self.images.device})")


def _check_captions(captions: torch.Tensor, tokenizer: Tokenizer | None, n: int) -> None:
    if tokenizer is None:
        raise SSLMinimalError("ImageDataset.captions need their tokenizer (ImageDataset.tokenizer)")
    length = tokenizer.context_length
    if (not isinstance(captions, torch.Tensor) or captions.dtype != torch.int64 or captions.dim() != 3
            or captions.shape[0] != n or captions.shape[2] != length):
        given = f"{captions.dtype} {list(captions.shape)}" if isinstance(captions, torch.Tensor) else type(captions).__name__
        raise SSLMinimalError(f"ImageDataset.captions must be token ids int64 [{n}, K, {length}] (K captions per "
                              f"image, the tokenizer's context length {length}), got {given}")
    if captions.numel() and (captions.min() < 0 or captions.max() >= len(tokenizer)):
        raise SSLMinimalError(f"ImageDataset.captions hold ids outside the tokenizer's 0..{len(tokenizer) - 1}")


def _balanced_indices(labels: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """n indices spread as evenly as possible over the label groups, chosen at random (sorted)."""
    total = len(labels)
    if not 0 <= n <= total:
        raise SSLMinimalError(f"subset size must be between 0 and the dataset size {total}, got {n}")
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(total, generator=generator)                # a random order of all images
    shuffled_labels = labels[order]
    # rank of each image inside its class in that random order: 0 for the first of its class, 1 for the next...
    by_class = torch.sort(shuffled_labels, stable=True).indices       # [total], grouped by class
    sorted_labels = shuffled_labels[by_class]
    group_start = torch.searchsorted(sorted_labels, sorted_labels)    # position of the first of its class
    rank = torch.empty(total, dtype=torch.int64)
    rank[by_class] = torch.arange(total) - group_start
    # take all rank-0 images (one per class) first, then all rank-1 ...; ties broken at random
    tie_break = torch.randperm(total, generator=generator)
    chosen = order[torch.argsort(rank * total + tie_break)[:n]]
    return torch.sort(chosen).values


def resolve_data_dir(data_dir: str | Path | None = None) -> Path:
    """The data folder: `data_dir` if given, else $SSL_DATA_DIR, else ~/.cache/ssl_minimal."""
    if data_dir is None:
        data_dir = os.environ.get(DATA_DIR_VARIABLE) or DEFAULT_DATA_DIR
    return Path(data_dir).expanduser()


def load(name: str, split: str = "train", data_dir: str | Path | None = None, download: bool | None = None,
         *, image_size: int | None = None, cache_dir: str | Path | None = None) -> ImageDataset:
    """Load a dataset split into memory as an `ImageDataset` (images uint8 [N, 3, H, W], labels int64 [N]).

    Args:
        name: one of DATASETS: "shapes" and "shapes64" (generated, no files, with masks), "cifar10",
            "cifar100", "stl10".
        split: "train" or "test"; STL-10 also has "unlabeled" and "train+unlabeled" (labels -1).
        data_dir: folder holding the data (see the module docstring); default $SSL_DATA_DIR, else
            ~/.cache/ssl_minimal, which is also where downloads go.
        download: True: download if the files are not found; False: never touch the network;
            None (default): download only if nothing is found locally.
        image_size: resize the images to image_size x image_size once, here (antialiased bilinear), e.g. to
            train on STL-10 at 64 or 32 px on a CPU. "shapes" (default 32) and "shapes64" (default 64) are
            drawn directly at that size.
        cache_dir: where decoded CIFAR-10 JPEGs are cached; default: $SSL_CACHE_DIR, else beside the .npz
            file if that folder is writable, else ~/.cache/ssl_minimal.

    Images come in the order of the files, and CIFAR-10 from the .npz is grouped by class (5,000
    airplanes first): draw random indices or use `ImageDataset.subset`, never take the first N images.
    """
    if name not in DATASETS:
        raise unknown_name("dataset", name, DATASETS)
    if split not in SPLITS[name]:
        raise SSLMinimalError(f"unknown split {split!r} for dataset {name!r}; "
                              f"valid splits are: {', '.join(SPLITS[name])}")
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int)
                                   or image_size < 1):
        raise SSLMinimalError(f"image_size must be a positive integer (pixels per side) or None, got {image_size!r}")

    if name in SHAPES_IMAGE_SIZES:
        size = image_size or SHAPES_IMAGE_SIZES[name]
        images, labels = _shapes_arrays(split, size)
        return ImageDataset(name, split, images.clone(), labels.clone(), list(SHAPES_CLASSES),
                            SHAPES_MEAN, SHAPES_STD, masks=_shapes_masks(split, size).clone())

    root = resolve_data_dir(data_dir)
    tried: list[Path] = []
    if name == "cifar10":
        npz_candidates = [root / "cifar10" / "cifar10_jpeg.npz", root / "cifar10_jpeg.npz"]
        tried += npz_candidates
        npz_path = next((path for path in npz_candidates if path.is_file()), None)
        if npz_path is not None:
            images, labels, classes = _load_cifar10_npz(npz_path, split, cache_dir)
            return ImageDataset(name, split, _resize(images, image_size), labels, classes, CIFAR10_MEAN, CIFAR10_STD)

    folder = root / _TORCHVISION_FOLDERS[name]
    tried.append(folder)
    if not _has_files(name, split, folder):
        _download_or_explain(name, root, download, tried)
        if not _has_files(name, split, folder):
            raise _missing_data_error(name, tried, f"the download did not produce the expected files in {folder}")
    if name == "stl10":
        images, labels, classes = _read_stl10(folder, split, image_size or STL10_IMAGE_SIZE)
        return ImageDataset(name, split, images, labels, classes, STL10_MEAN, STL10_STD)
    images, labels, classes = _read_cifar_pickles(name, folder, split)
    mean, std = (CIFAR10_MEAN, CIFAR10_STD) if name == "cifar10" else (CIFAR100_MEAN, CIFAR100_STD)
    return ImageDataset(name, split, _resize(images, image_size), labels, classes, mean, std)


def is_available(name: str, data_dir: str | Path | None = None) -> bool:
    """True when `load(name, ...)` can work offline: "shapes(64)" always, the others when their files are found."""
    if name not in DATASETS:
        raise unknown_name("dataset", name, DATASETS)
    if name in SHAPES_IMAGE_SIZES:
        return True
    root = resolve_data_dir(data_dir)
    if name == "cifar10" and any(path.is_file() for path in (root / "cifar10" / "cifar10_jpeg.npz",
                                                               root / "cifar10_jpeg.npz")):
        return True
    return _has_files(name, "train", root / _TORCHVISION_FOLDERS[name])


def course_dataset(data_dir: str | Path | None = None) -> str:
    """The dataset the notebooks use: "cifar10" when it is on disk (data_dir, $SSL_DATA_DIR or the cache
    folder), else the embedded "shapes", so that every notebook also runs on a fresh offline machine.
    The fallback is announced in one printed line: accuracies on shapes are not comparable with CIFAR-10's."""
    if is_available("cifar10", data_dir):
        return "cifar10"
    print("CIFAR-10 was not found (set SSL_DATA_DIR to a folder that has it, see the README's Data section): "
          "using the embedded 'shapes' dataset instead; accuracies will differ from the committed CIFAR-10 outputs")
    return "shapes"


def _resize(images: torch.Tensor, size: int | None) -> torch.Tensor:
    """uint8 [N, 3, H, W] -> uint8 [N, 3, size, size], antialiased bilinear, in chunks.

    PyTorch resizes uint8 images on the CPU directly (a fast path that gives the same pixels as PIL's
    `Image.resize(..., BILINEAR)`), several times faster than converting to float and back.
    """
    if size is None or images.shape[-2:] == (size, size):
        return images
    resized = torch.empty((len(images), 3, size, size), dtype=torch.uint8)
    for start in range(0, len(images), RESIZE_CHUNK):
        chunk = images[start:start + RESIZE_CHUNK]                                     # [chunk, 3, H, W]
        resized[start:start + RESIZE_CHUNK] = F.interpolate(chunk, size=(size, size), mode="bilinear",
                                                            antialias=True, align_corners=False)
    return resized


# ----------------------------------------------------------------------------------------------------------
# CIFAR-10 as JPEG bytes (the course's shared data file), decoded once and cached
# ----------------------------------------------------------------------------------------------------------

_NPZ_KEYS = ("train_jpeg", "train_offsets", "train_labels", "test_jpeg", "test_offsets", "test_labels", "classes")


def _load_cifar10_npz(npz_path: Path, split: str, cache_dir: str | Path | None
                      ) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Images uint8 [N, 3, 32, 32], labels, classes of one split of cifar10_jpeg.npz, via the decoded cache."""
    source = npz_path.stat()
    cache_name = f"cifar10_{split}_decoded_uint8.npz"
    cache_dir = cache_dir or os.environ.get(CACHE_DIR_VARIABLE) or None
    if cache_dir is not None:
        read_folders = write_folders = [Path(cache_dir).expanduser()]
    else:
        read_folders = [npz_path.parent, DEFAULT_DATA_DIR.expanduser()]
        write_folders = read_folders if _is_writable(npz_path.parent) else read_folders[1:]
    for folder in read_folders:                                        # 1. a cache made from this very file
        cached = _read_cache(folder / cache_name, source)
        if cached is not None:
            return cached

    images, labels, classes = _decode_cifar10_npz(npz_path, split)     # 2. decode (about 5 s for 50,000 images)
    if not any(_write_cache(folder / cache_name, source, images, labels, classes) for folder in write_folders):
        warnings.warn(f"could not write the decoded CIFAR-10 cache in {', '.join(map(str, write_folders))}; "
                      f"the JPEGs will be decoded again next time (pass cache_dir=... to choose a folder)")
    return images, labels, classes


def _is_writable(folder: Path) -> bool:
    """Whether we may write in `folder`. A folder with no write permission bits counts as read-only even for
    root, who could write there anyway: a shared data folder made read-only should stay untouched."""
    mode = folder.stat().st_mode
    return bool(mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)) and os.access(folder, os.W_OK)


def _decode_cifar10_npz(npz_path: Path, split: str) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    from PIL import Image   # imported here: only this format needs it

    fix = "replace it with a fresh copy of cifar10_jpeg.npz"
    try:
        with np.load(npz_path) as archive:
            missing = [key for key in _NPZ_KEYS if key not in archive.files]
            if missing:
                raise SSLMinimalError(f"{npz_path} is not a CIFAR-10 JPEG archive: it lacks the keys "
                                      f"{', '.join(missing)} (expected {', '.join(_NPZ_KEYS)}); {fix}")
            jpeg_bytes = archive[f"{split}_jpeg"]     # uint8 [total bytes]: all JPEG files one after the other
            offsets = archive[f"{split}_offsets"]     # int64 [N + 1]: image i is jpeg_bytes[offsets[i]:offsets[i+1]]
            labels = archive[f"{split}_labels"].astype(np.int64)                   # [N]
            classes = [str(class_name) for class_name in archive["classes"]]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        if isinstance(error, SSLMinimalError):
            raise
        raise SSLMinimalError(f"{npz_path} is not a readable .npz file ({error!r}); {fix}") from None
    if len(offsets) != len(labels) + 1 or offsets[-1] != len(jpeg_bytes):
        raise SSLMinimalError(f"{npz_path} is corrupted: {split}_offsets ({len(offsets)} entries, last "
                              f"{offsets[-1]}) does not match {len(labels)} labels and {len(jpeg_bytes)} bytes; {fix}")
    images = np.empty((len(labels), CIFAR_IMAGE_SIZE, CIFAR_IMAGE_SIZE, 3), dtype=np.uint8)   # [N, H, W, 3]
    for index in range(len(labels)):
        jpeg = io.BytesIO(jpeg_bytes[offsets[index]:offsets[index + 1]].tobytes())
        try:
            images[index] = np.asarray(Image.open(jpeg).convert("RGB"))
        except (OSError, ValueError) as error:
            raise SSLMinimalError(f"{npz_path}: {split} image {index} is not a 32x32 JPEG ({error!r}); {fix}") from None
    images = np.ascontiguousarray(images.transpose(0, 3, 1, 2))          # [N, 3, H, W]
    return torch.from_numpy(images), torch.from_numpy(labels), classes


def _read_cache(path: Path, source: os.stat_result) -> tuple[torch.Tensor, torch.Tensor, list[str]] | None:
    """The cached decoded split, or None if there is none or it was made from another file."""
    if not path.is_file():
        return None
    try:
        with np.load(path) as cache:
            if (int(cache["source_size"]) != source.st_size
                    or int(cache["source_mtime_ns"]) != source.st_mtime_ns):
                return None                                                # the .npz changed: decode again
            return (torch.from_numpy(cache["images"]), torch.from_numpy(cache["labels"]),
                    [str(class_name) for class_name in cache["classes"]])
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return None                                                        # unreadable cache: decode again


def _write_cache(path: Path, source: os.stat_result, images: torch.Tensor, labels: torch.Tensor,
                 classes: list[str]) -> bool:
    """Write the decoded split (uncompressed, so it loads in a fraction of a second). False if not writable."""
    temporary = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # write a temporary file, then rename it: nobody ever reads a half-written cache
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as file:
            temporary = Path(file.name)
            np.savez(file, images=images.numpy(), labels=labels.numpy(), classes=np.array(classes),
                     source_size=source.st_size, source_mtime_ns=source.st_mtime_ns)
        os.chmod(temporary, CACHE_FILE_MODE)
        os.replace(temporary, path)
        return True
    except OSError:
        if temporary is not None:
            temporary.unlink(missing_ok=True)
        return False


# ----------------------------------------------------------------------------------------------------------
# torchvision's on-disk formats (read by us, see the module docstring), and downloading
# ----------------------------------------------------------------------------------------------------------

_TORCHVISION_FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python", "stl10": "stl10_binary"}


@dataclass(frozen=True)
class _PickleFormat:
    """Where the CIFAR python-pickle files keep things."""

    files: dict[str, tuple[str, ...]]   # split -> pickle files, each {"data": uint8 [n, 3072], labels_key: [n]}
    meta_file: str
    classes_key: str
    labels_key: str


_CIFAR_FORMATS = {
    "cifar10": _PickleFormat(files={"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)},
                             meta_file="batches.meta", classes_key="label_names", labels_key="labels"),
    "cifar100": _PickleFormat(files={"train": ("train",), "test": ("test",)},
                              meta_file="meta", classes_key="fine_label_names", labels_key="fine_labels"),
}

# STL-10's binary files: split -> (images file, labels file or None for the unlabelled images)
_STL10_FILES = {
    "train": [("train_X.bin", "train_y.bin")],
    "test": [("test_X.bin", "test_y.bin")],
    "unlabeled": [("unlabeled_X.bin", None)],
    "train+unlabeled": [("train_X.bin", "train_y.bin"), ("unlabeled_X.bin", None)],
}


def _required_files(name: str, split: str) -> list[str]:
    if name == "stl10":
        return [file for pair in _STL10_FILES[split] for file in pair if file is not None]
    pickle_format = _CIFAR_FORMATS[name]
    return [*pickle_format.files[split], pickle_format.meta_file]


def _has_files(name: str, split: str, folder: Path) -> bool:
    return all((folder / file).is_file() for file in _required_files(name, split))


def _unpickle(path: Path) -> dict:
    with open(path, "rb") as file:
        entry = pickle.load(file, encoding="latin1")     # the original files were pickled by Python 2
    return {key.decode() if isinstance(key, bytes) else key: value for key, value in entry.items()}


def _read_cifar_pickles(name: str, folder: Path, split: str) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """CIFAR-10/100 python version: each file holds "data" uint8 [n, 3072] = 3 channels x 32 rows x 32 columns."""
    pickle_format = _CIFAR_FORMATS[name]
    images, labels = [], []
    for file in pickle_format.files[split]:
        try:
            entry = _unpickle(folder / file)
            rows = np.asarray(entry["data"], dtype=np.uint8)                       # [n, 3072]
            file_labels = np.asarray(entry[pickle_format.labels_key], dtype=np.int64)
            pixels = 3 * CIFAR_IMAGE_SIZE * CIFAR_IMAGE_SIZE
            if rows.ndim != 2 or rows.shape[1] != pixels or len(file_labels) != len(rows):
                raise ValueError(f"data {list(rows.shape)} and {len(file_labels)} labels, "
                                 f"expected [n, {pixels}] and n labels")
        except (OSError, ValueError, KeyError, TypeError, pickle.UnpicklingError, EOFError) as error:
            raise SSLMinimalError(f"{folder / file} is not a valid {name} file ({error!r}); delete {folder} and "
                                  f"download it again") from None
        images.append(rows.reshape(-1, 3, CIFAR_IMAGE_SIZE, CIFAR_IMAGE_SIZE))   # already [n, 3, H, W]
        labels.append(file_labels)
    try:
        meta = _unpickle(folder / pickle_format.meta_file)
        classes = [str(class_name) for class_name in meta[pickle_format.classes_key]]
    except (OSError, KeyError, TypeError, pickle.UnpicklingError, EOFError) as error:
        raise SSLMinimalError(f"{folder / pickle_format.meta_file} is not a valid {name} meta file ({error!r}); "
                              f"delete {folder} and download it again") from None
    return (torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels)), classes)


def _read_stl10(folder: Path, split: str, image_size: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """STL-10 binary version: uint8 images stored column-major, i.e. [n, 3, W, H]; labels 1..10 in a uint8 file.

    The files are read in chunks through a memory map and resized chunk by chunk, so STL-10's 100,000 unlabelled
    images (2.8 GB at 96x96) need only the memory of the resized result.
    """
    image_bytes = 3 * STL10_IMAGE_SIZE * STL10_IMAGE_SIZE
    parts = []                                            # (images file, number of images, labels int64 [n])
    for images_file, labels_file in _STL10_FILES[split]:
        size = (folder / images_file).stat().st_size
        if size % image_bytes:
            raise SSLMinimalError(f"{folder / images_file} has {size} bytes, not a multiple of {image_bytes} "
                                  f"(one 3x96x96 image); delete {folder} and download it again")
        count = size // image_bytes
        if labels_file is None:
            labels = np.full(count, -1, dtype=np.int64)                         # unlabelled
        else:
            labels = np.fromfile(folder / labels_file, dtype=np.uint8).astype(np.int64) - 1   # 1..10 -> 0..9
            if len(labels) != count or (count and (labels.min() < 0 or labels.max() >= len(STL10_CLASSES))):
                found = f"{len(labels)} labels" + (f" in {labels.min() + 1}..{labels.max() + 1}" if len(labels) else "")
                raise SSLMinimalError(f"{folder / labels_file} should hold {count} labels in 1..10 (one per image of "
                                      f"{images_file}), got {found}; delete {folder} and download it again")
        parts.append((images_file, count, labels))

    images = torch.empty((sum(count for _, count, _ in parts), 3, image_size, image_size), dtype=torch.uint8)
    start = 0
    for images_file, count, _ in parts:
        if count == 0:
            continue
        stored = np.memmap(folder / images_file, dtype=np.uint8, mode="r",
                           shape=(count, 3, STL10_IMAGE_SIZE, STL10_IMAGE_SIZE))   # [n, 3, W, H]
        for chunk_start in range(0, count, RESIZE_CHUNK):
            chunk = torch.from_numpy(np.array(stored[chunk_start:chunk_start + RESIZE_CHUNK]))
            chunk = chunk.transpose(2, 3)                                        # [n, 3, H, W]
            images[start + chunk_start:start + chunk_start + len(chunk)] = _resize(chunk, image_size)
        del stored
        start += count
    labels = torch.from_numpy(np.concatenate([labels for _, _, labels in parts]))

    class_file = folder / "class_names.txt"
    classes = class_file.read_text().splitlines() if class_file.is_file() else list(STL10_CLASSES)
    return images, labels, classes


def _download_or_explain(name: str, root: Path, download: bool | None, tried: list[Path]) -> None:
    """Download `name` into root with torchvision's downloader, or raise an error saying how to get the data."""
    if download is False:
        raise _missing_data_error(name, tried, "downloading is switched off (download=False)")
    from torchvision import datasets as torchvision_datasets
    from torchvision.datasets import utils as torchvision_utils

    # torchvision's dataset classes name their archive, its URL and its md5 checksum
    dataset_class = {"cifar10": torchvision_datasets.CIFAR10, "cifar100": torchvision_datasets.CIFAR100,
                     "stl10": torchvision_datasets.STL10}[name]
    try:
        root.mkdir(parents=True, exist_ok=True)
        torchvision_utils.download_and_extract_archive(dataset_class.url, str(root), filename=dataset_class.filename,
                                                       md5=dataset_class.tgz_md5)
    except Exception as error:   # no network, a proxy, a full disk, a bad checksum: all end the same way
        raise _missing_data_error(name, tried, f"downloading it into {root} failed ({error!r})") from error


def _missing_data_error(name: str, tried: list[Path], reason: str) -> SSLMinimalError:
    return SSLMinimalError(
        f"no {name} data found (looked for {', '.join(map(str, tried))}) and {reason}; point ssl_minimal at a "
        f"folder holding the data with `--data-dir DIR` or the {DATA_DIR_VARIABLE} environment variable, or go "
        f"online and call load({name!r}, download=True)")


# ----------------------------------------------------------------------------------------------------------
# "shapes": a procedurally drawn stand-in for CIFAR-10 that needs no download
# ----------------------------------------------------------------------------------------------------------

SHAPES_CLASSES = ("circle", "square", "triangle", "ring", "cross", "star", "ellipse", "heart", "crescent", "arrow")
SHAPES_IMAGE_SIZE = 32
# "shapes64": the same scenes at 64 px. Measured (1 thread, forward + backward of small_vit, batch 64, shared
# machine): 8x8 patches give 16 tokens at 32 px (780 img/s), 36 at 48 px (190), 64 at 64 px (140); 4x4
# patches at 32 px give the same 64 tokens at 170 img/s but only 16 pixels per patch. 64 px with 8x8
# patches: an 8x8 attention map (as 4x4 patches at 32 px) for about the same cost, and images whose maps
# and masks can be drawn with some detail.
SHAPES_IMAGE_SIZES = {"shapes": SHAPES_IMAGE_SIZE, "shapes64": 64}
SHAPES_MASK_COVERAGE = 0.5                           # a pixel is foreground when the shape covers >= half of it
SHAPES_PER_CLASS = {"train": 1000, "test": 200}      # 10,000 train / 2,000 test images
SHAPES_SEEDS = {"train": 0, "test": 1}               # fixed: the dataset is the same on every machine and run
# The nuisance ranges below were tuned so that a randomly initialised 4-layer ConvNet reaches about 30-35% kNN
# accuracy (chance: 10%), as random features do on CIFAR-10 (about 40%): far from solved, far from chance.
SHAPES_RADIUS = (0.3, 0.45)                          # shape radius, as a fraction of the image side
SHAPES_MARGIN = 0.85                                 # the centre stays this many radii from the border
SHAPES_ROTATION = (-0.5, 0.5)                        # radians (about +-30 degrees): shapes are roughly upright,
                                                     # as objects in CIFAR photos are
SHAPES_MIN_CONTRAST = 0.8                            # min RGB distance, shape colour to background colour
                                                     # (at most sqrt(3)/2: the farthest cube corner from grey)
SHAPES_GRADIENT_STRENGTH = (0.0, 1.0)                # background: blend from colour 1 towards colour 2
SHAPES_CLOUDS_GRID = 4                               # background clouds: 4x4 random values, smoothly upsampled
SHAPES_CLOUDS_AMPLITUDE = (0.0, 0.15)
SHAPES_DISTRACTOR_PROBABILITY = 0.5                  # a soft blob of a random colour somewhere in the image
SHAPES_DISTRACTOR_SIGMA = (0.05, 0.12)               # blob width, as a fraction of the image side
SHAPES_NOISE_STD = 0.03                              # per-pixel Gaussian noise on [0, 1]
SHAPES_SUPERSAMPLING = 2                             # draw shapes at 2x and average 2x2 blocks: antialiased
SHAPES_CHUNK = 500                                   # images drawn at a time (bounds memory; any value gives
                                                     # the same images)

# Polygons in the shape's own coordinates (radius about 1 around the origin, y pointing down).
_STAR_ANGLES = -np.pi / 2 + np.arange(10) * np.pi / 5
_SHAPES_POLYGONS = {
    "square": [(-0.8, -0.8), (0.8, -0.8), (0.8, 0.8), (-0.8, 0.8)],
    "triangle": [(1.1 * np.cos(angle), 1.1 * np.sin(angle) + 0.15)
                 for angle in -np.pi / 2 + np.arange(3) * 2 * np.pi / 3],
    "cross": [(0.3, 1), (0.3, 0.3), (1, 0.3), (1, -0.3), (0.3, -0.3), (0.3, -1),
              (-0.3, -1), (-0.3, -0.3), (-1, -0.3), (-1, 0.3), (-0.3, 0.3), (-0.3, 1)],
    "star": [(radius * np.cos(angle), radius * np.sin(angle))           # 5 outer and 5 inner corners
             for radius, angle in zip([1.05, 0.45] * 5, _STAR_ANGLES)],
    "arrow": [(-1, -0.22), (0.15, -0.22), (0.15, -0.65), (1, 0), (0.15, 0.65), (0.15, 0.22), (-1, 0.22)],
}


def _inside_polygon(x: torch.Tensor, y: torch.Tensor, vertices: list[tuple[float, float]]) -> torch.Tensor:
    """Even-odd rule: a point is inside if a ray to its right crosses the polygon's edges an odd number of times."""
    inside = torch.zeros_like(x, dtype=torch.bool)
    for (x0, y0), (x1, y1) in zip(vertices, vertices[1:] + vertices[:1]):
        if y0 == y1:
            continue                                         # a horizontal edge is never crossed by the ray
        straddles = (y0 > y) != (y1 > y)                     # the edge spans the ray's height
        crossing_x = x0 + (x1 - x0) / (y1 - y0) * (y - y0)   # where the edge meets the ray's line
        inside ^= straddles & (x < crossing_x)
    return inside


def _inside_shape(name: str, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Boolean mask of the points (x, y) (shape coordinates, radius about 1) inside shape `name`."""
    if name in _SHAPES_POLYGONS:
        return _inside_polygon(x, y, _SHAPES_POLYGONS[name])
    squared_radius = x**2 + y**2
    if name == "circle":
        return squared_radius <= 1
    if name == "ring":
        return (squared_radius <= 1) & (squared_radius >= 0.55**2)
    if name == "ellipse":
        return x**2 + (y / 0.5) ** 2 <= 1
    if name == "crescent":   # a disc minus a shifted smaller disc
        return (squared_radius <= 1) & ((x - 0.45) ** 2 + y**2 >= 0.8**2)
    if name == "heart":      # the heart curve (x^2 + y^2 - 1)^3 - x^2 y^3 <= 0 (y up), scaled and centred
        heart_x, heart_y = 1.15 * x, 0.15 - 1.15 * y
        return (heart_x**2 + heart_y**2 - 1) ** 3 - heart_x**2 * heart_y**3 <= 0
    raise AssertionError(name)


def _draw_scenes(rng: np.random.Generator, labels: np.ndarray, size: int) -> dict[str, np.ndarray]:
    """All random choices of all images (one row per image), drawn up front so the images do not depend on
    how they are split into chunks. Positions are in [0, 1] image coordinates, except the shape's, in pixels."""
    count = len(labels)
    scene = dict(
        labels=labels,
        colour_1=rng.uniform(0, 1, (count, 3)), colour_2=rng.uniform(0, 1, (count, 3)),
        gradient_direction=rng.uniform(0, 2 * np.pi, count),
        gradient_strength=rng.uniform(*SHAPES_GRADIENT_STRENGTH, count),
        clouds=rng.standard_normal((count, 3, SHAPES_CLOUDS_GRID, SHAPES_CLOUDS_GRID)),
        clouds_amplitude=rng.uniform(*SHAPES_CLOUDS_AMPLITUDE, count),
        has_blob=rng.random(count) < SHAPES_DISTRACTOR_PROBABILITY,
        blob_centre=rng.uniform(0, 1, (count, 2)),
        blob_sigma=rng.uniform(*SHAPES_DISTRACTOR_SIGMA, count),
        blob_colour=rng.uniform(0, 1, (count, 3)),
        radius=rng.uniform(*SHAPES_RADIUS, count) * size,
        angle=rng.uniform(*SHAPES_ROTATION, count),
    )
    margin = SHAPES_MARGIN * scene["radius"][:, None]
    scene["centre"] = rng.uniform(margin, size - margin, (count, 2))              # (x, y) in pixels

    # the shape's colour: uniform, redrawn while too close to the background colour under the shape's centre
    centre = scene["centre"] / size                                               # [N, 2] in [0, 1]
    background = scene["colour_1"] + (_gradient_blend(scene, centre[:, 0], centre[:, 1])[:, None]
                                      * (scene["colour_2"] - scene["colour_1"]))  # [N, 3]
    colour = rng.uniform(0, 1, (count, 3))
    for _ in range(20):
        too_close = np.linalg.norm(colour - background, axis=1) < SHAPES_MIN_CONTRAST
        colour[too_close] = rng.uniform(0, 1, (int(too_close.sum()), 3))
    too_close = np.linalg.norm(colour - background, axis=1) < SHAPES_MIN_CONTRAST
    colour[too_close] = (background[too_close] < 0.5).astype(float)              # the farthest cube corner
    scene["colour"] = colour
    return scene


def _gradient_blend(scene: dict, x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor):
    """How far the background has blended from colour 1 to colour 2 at (x, y) in [0, 1] image coordinates."""
    direction, strength = scene["gradient_direction"], scene["gradient_strength"]
    ramp = 0.5 + (x - 0.5) * np.cos(direction) + (y - 0.5) * np.sin(direction)   # 0..1 across the image
    return strength * ramp.clip(0, 1)


def _per_image(values: np.ndarray) -> torch.Tensor:
    """numpy [n] or [n, 3] -> float tensor [n, 1, 1, 1] or [n, 3, 1, 1], ready to broadcast over the pixels."""
    values = torch.from_numpy(np.asarray(values, dtype=np.float32))
    return values.view(len(values), -1, 1, 1)


def _render_scenes(scene: dict[str, np.ndarray], size: int, noise_rng: np.random.Generator) -> torch.Tensor:
    """Draw the images of `scene`: uint8 [n, 3, size, size]."""
    pixel = (torch.arange(size, dtype=torch.float32) + 0.5) / size               # pixel centres in [0, 1]
    y, x = torch.meshgrid(pixel, pixel, indexing="ij")                           # [size, size]

    # background: colour 1 blended towards colour 2 along a random direction, plus soft clouds
    direction = _per_image(scene["gradient_direction"])                          # [n, 1, 1, 1]
    ramp = 0.5 + (x - 0.5) * torch.cos(direction) + (y - 0.5) * torch.sin(direction)   # [n, 1, size, size]
    blend = _per_image(scene["gradient_strength"]) * ramp.clamp(0, 1)
    colour_1, colour_2 = _per_image(scene["colour_1"]), _per_image(scene["colour_2"])  # [n, 3, 1, 1]
    images = colour_1 + blend * (colour_2 - colour_1)                            # [n, 3, size, size]
    clouds = torch.from_numpy(scene["clouds"]).float()                           # [n, 3, grid, grid]
    clouds = F.interpolate(clouds, size=(size, size), mode="bicubic", align_corners=False)
    images = images + _per_image(scene["clouds_amplitude"]) * clouds

    # distractor: a Gaussian blob of another colour
    blob_x, blob_y = _per_image(scene["blob_centre"][:, 0]), _per_image(scene["blob_centre"][:, 1])
    squared_distance = (x - blob_x) ** 2 + (y - blob_y) ** 2                     # [n, 1, size, size]
    blob = _per_image(scene["has_blob"]) * torch.exp(-squared_distance / (2 * _per_image(scene["blob_sigma"]) ** 2))
    images = images + blob * (_per_image(scene["blob_colour"]) - images)

    # the shape, antialiased: coverage = fraction of each pixel inside the shape
    coverage = _shape_coverage(scene, size)                                      # [n, 1, size, size]
    images = images + coverage * (_per_image(scene["colour"]) - images)

    noise = torch.from_numpy(noise_rng.standard_normal(images.shape, dtype=np.float32))
    images = images + SHAPES_NOISE_STD * noise
    return (images.clamp(0, 1) * 255).round().to(torch.uint8)


def _shape_coverage(scene: dict[str, np.ndarray], size: int) -> torch.Tensor:
    """Fraction of each pixel covered by its image's shape: float [n, 1, size, size] in [0, 1]."""
    fine_size = size * SHAPES_SUPERSAMPLING
    positions = (torch.arange(fine_size, dtype=torch.float32) + 0.5) / SHAPES_SUPERSAMPLING   # in output pixels
    rows, columns = torch.meshgrid(positions, positions, indexing="ij")                      # [fine, fine]
    coverage = torch.zeros(len(scene["labels"]), 1, fine_size, fine_size)
    for class_index, class_name in enumerate(SHAPES_CLASSES):
        members = np.flatnonzero(scene["labels"] == class_index)                  # images showing this shape
        if len(members) == 0:
            continue
        offset_x = columns - _per_image(scene["centre"][members, 0])              # [m, 1, fine, fine]
        offset_y = rows - _per_image(scene["centre"][members, 1])
        angle, radius = _per_image(scene["angle"][members]), _per_image(scene["radius"][members])
        # rotate by -angle and divide by the radius: each sample point in the shape's own coordinates
        shape_x = (torch.cos(angle) * offset_x + torch.sin(angle) * offset_y) / radius
        shape_y = (torch.cos(angle) * offset_y - torch.sin(angle) * offset_x) / radius
        coverage[members] = _inside_shape(class_name, shape_x, shape_y).float()
    return F.avg_pool2d(coverage, SHAPES_SUPERSAMPLING)                           # [n, 1, size, size]


@functools.lru_cache(maxsize=4)
def _shapes_arrays(split: str, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw the shapes dataset: images uint8 [N, 3, size, size], labels int64 [N] (classes in random order).

    Each image: a background (a colour blended towards a second colour along a random direction, plus soft
    random clouds), in half of the images a soft blob of another colour (a distractor), then the shape in a
    colour that stands out from the background, at a random position, size and rotation, and pixel noise.
    Everything comes from generators with fixed seeds, so the dataset is identical on every run.
    """
    scene = _shapes_scene(split, size)
    labels = scene["labels"]                                       # [N]
    noise_rng = np.random.default_rng([SHAPES_SEEDS[split], 1])    # pixel noise: its own stream, read in order
    images = torch.empty((len(labels), 3, size, size), dtype=torch.uint8)
    for start in range(0, len(labels), SHAPES_CHUNK):
        chunk = {key: value[start:start + SHAPES_CHUNK] for key, value in scene.items()}
        images[start:start + SHAPES_CHUNK] = _render_scenes(chunk, size, noise_rng)
    return images, torch.from_numpy(labels).long()


# ----------------------------------------------------------------------------------------------------------
# Captions for CLIP: image-text pairs made offline, by the library
# ----------------------------------------------------------------------------------------------------------

CAPTIONED_DATASETS = ("shapes", "cifar10")
CAPTIONS_PER_IMAGE = 5                       # each image gets 5 captions; CLIP's step picks one at random
CAPTION_SEEDS = {"train": 10, "test": 11}    # fixed: the same captions on every machine and run

# shapes: colour names are the corners of the RGB cube, by thresholding each channel at 0.5
# (index = 4 red + 2 green + blue): every colour the generator draws has exactly one name.
SHAPES_COLOURS = ("black", "blue", "green", "cyan", "red", "magenta", "yellow", "white")
SHAPES_SIZES = ("small", "", "large")       # radius below / between / above SHAPES_SIZE_THRESHOLDS
SHAPES_SIZE_THRESHOLDS = (0.35, 0.40)        # radius as a fraction of the image side (drawn in 0.30..0.45)
SHAPES_POSITION_THRESHOLDS = (0.42, 0.58)    # centre x or y (fraction of the side, drawn in 0.26..0.74)
SHAPES_ROWS, SHAPES_COLUMNS = ("top", "", "bottom"), ("left", "", "right")
# Colour x shape combinations that never occur in the captioned training split, one per shape, so every
# colour and every shape is seen in training, only never together: zero-shot on them is transfer.
SHAPES_HELD_OUT = (("red", "circle"), ("green", "square"), ("blue", "triangle"), ("yellow", "ring"),
                   ("cyan", "cross"), ("magenta", "star"), ("white", "ellipse"), ("black", "heart"),
                   ("red", "crescent"), ("blue", "arrow"))
# Caption templates; a caption uses a template at random. Optional words left empty are dropped.
SHAPES_CAPTION_TEMPLATES = (
    "a {size} {colour} {shape} {position} on a {background} background",
    "a {colour} {shape} on {background}",
    "a {background} background with a {size} {colour} {shape}",
    "a picture of a {colour} {shape} {position}",
    "the {shape} is {colour} and the background is {background}",
    "{position} there is a {size} {colour} {shape}",
    "a {colour} {shape}",
    "a {shape} in {colour} on a {background} background",
)
# Zero-shot prompts (prompt ensembling, CLIP Sec. 3.1.4), made of caption words only.
# Class names may be single shapes ("star") or colour x shape combinations ("red star").
SHAPES_PROMPTS = ("a {}", "a picture of a {}", "a small {}", "a large {}", "there is a {}")

# CIFAR-10: templated captions with the class name and one attribute read off the image: the colour of
# the central 16x16 pixels (named from its hue, or black/grey/white when unsaturated).
CIFAR10_COLOURS = ("black", "grey", "white", "red", "orange", "yellow", "green", "blue", "purple")
CIFAR10_HUES = ((20, "red"), (45, "orange"), (70, "yellow"), (165, "green"), (260, "blue"), (330, "purple"),
                (360, "red"))                  # hue upper bounds in degrees
CIFAR10_CAPTION_TEMPLATES = (
    "a photo of a {label}", "a blurry photo of a {label}", "a photo of a {colour} {label}",
    "a {colour} {label}", "a low resolution photo of the {label}", "a photo of the small {label}",
    "a close up photo of a {label}", "a {label} that is mostly {colour}",
)
CIFAR10_PROMPTS = ("a photo of a {}", "a blurry photo of a {}", "a low resolution photo of the {}",
                   "a photo of the small {}", "a close up photo of a {}")

PROMPTS = {"shapes": SHAPES_PROMPTS, "cifar10": CIFAR10_PROMPTS}     # zero-shot prompt templates per dataset


def load_captioned(name: str, split: str = "train", data_dir: str | Path | None = None,
                   download: bool | None = None, *, image_size: int | None = None,
                   held_out: Sequence[tuple[str, str]] | None = None,
                   captions_per_image: int = CAPTIONS_PER_IMAGE) -> ImageDataset:
    """`load(name, split)` with image-text pairs for CLIP: `captions` int64 [N, K, L], a `tokenizer`,
    and per-image `attributes` [N] (the facts the captions state, as indices).

    "shapes": compositional captions written from what the generator drew (shape, colour, size, position,
        background), e.g. "a small red star at the top left on a green background", with word order and
        phrasing varied over SHAPES_CAPTION_TEMPLATES. The colour x shape pairs of `held_out` (default
        SHAPES_HELD_OUT; () for none) are left out of the training split entirely; in the test split the
        attribute "unseen" marks them. attributes: colour, background, size (0 small, 1 medium, 2 large),
        row, column (0, 1, 2) and unseen.
    "cifar10": templated captions, "a photo of a {label}", "a blurry photo of a {colour} {label}"...
        (CIFAR10_CAPTION_TEMPLATES), colour = the dominant colour of the image centre (attribute colour,
        an index into CIFAR10_COLOURS; unseen is all False).
    Train and test splits share one tokenizer (made from the templates' words, not from one split).
    """
    if name not in CAPTIONED_DATASETS:
        raise SSLMinimalError(f"captions exist for {', '.join(CAPTIONED_DATASETS)}, not for {name!r}")
    if isinstance(captions_per_image, bool) or not isinstance(captions_per_image, int) or captions_per_image < 1:
        raise SSLMinimalError(f"captions_per_image must be a positive integer, got {captions_per_image!r}")
    dataset = load(name, split, data_dir, download, image_size=image_size)
    rng = np.random.default_rng(CAPTION_SEEDS[split])
    if name == "shapes":
        held_out = SHAPES_HELD_OUT if held_out is None else tuple(held_out)
        attributes = _shapes_attributes(split, dataset.image_size, held_out)
        texts = [[_shapes_caption(rng, attributes, i, dataset.classes[label]) for _ in range(captions_per_image)]
                 for i, label in enumerate(dataset.labels.tolist())]
    else:
        if held_out:
            raise SSLMinimalError("held_out colour x shape combinations exist for 'shapes' only")
        colours = _dominant_colours(dataset.images)
        attributes = {"colour": colours, "unseen": torch.zeros(len(dataset), dtype=torch.bool)}
        texts = [[with_articles(CIFAR10_CAPTION_TEMPLATES[t].format(label=dataset.classes[label],
                                                                    colour=CIFAR10_COLOURS[colour]))
                  for t in rng.integers(len(CIFAR10_CAPTION_TEMPLATES), size=captions_per_image)]
                 for label, colour in zip(dataset.labels.tolist(), colours.tolist())]
    tokenizer = caption_tokenizer(name)
    captions = torch.stack([tokenizer(image_texts) for image_texts in texts]) if texts else \
        torch.zeros(0, captions_per_image, tokenizer.context_length, dtype=torch.int64)
    captioned = dataclasses.replace(dataset, captions=captions, tokenizer=tokenizer, attributes=attributes)
    if split == "train" and name == "shapes":                       # the held-out pairs are never trained on
        captioned = captioned.subset(~attributes["unseen"])
    return captioned


@functools.lru_cache(maxsize=None)
def caption_tokenizer(name: str) -> Tokenizer:
    """The word-level tokenizer of `name`'s captions and prompts (every word the templates can write)."""
    if name == "shapes":
        templates = SHAPES_CAPTION_TEMPLATES + SHAPES_PROMPTS
        fillers = (SHAPES_CLASSES + SHAPES_COLOURS + SHAPES_SIZES + SHAPES_ROWS + SHAPES_COLUMNS
                   + ("at the", "on the", "in the middle"))
        context_length = 16
    else:
        templates, fillers, context_length = CIFAR10_CAPTION_TEMPLATES + CIFAR10_PROMPTS, CIFAR10_CLASSES + CIFAR10_COLOURS, 12
    texts = [template.replace("{}", " ").format_map(_Blank()) for template in templates] + list(fillers)
    return Tokenizer.from_texts(texts + ["an"], context_length)


class _Blank(dict):
    """format_map filler: every {field} becomes empty (to list a template's own words)."""

    def __missing__(self, key: str) -> str:
        return ""


def _shapes_attributes(split: str, size: int, held_out: Sequence[tuple[str, str]]) -> dict[str, torch.Tensor]:
    """What the generator drew in each image of the split, as indices [N]: the scene of `_shapes_arrays`."""
    for colour, shape in held_out:
        if colour not in SHAPES_COLOURS or shape not in SHAPES_CLASSES:
            raise SSLMinimalError(f"held_out pairs are (colour, shape) with colour in {', '.join(SHAPES_COLOURS)} "
                                  f"and shape in {', '.join(SHAPES_CLASSES)}, got {(colour, shape)!r}")
    scene = _shapes_scene(split, size)                             # the same draws as _shapes_arrays
    labels = scene["labels"]
    background = scene["colour_1"] + 0.5 * scene["gradient_strength"][:, None] * (scene["colour_2"] - scene["colour_1"])
    centre = scene["centre"] / size                                # [N, 2] (x, y) in [0, 1]
    colour = _cube_corner(scene["colour"])
    unseen = np.zeros(len(labels), dtype=bool)
    for colour_name, shape in held_out:
        unseen |= (colour == SHAPES_COLOURS.index(colour_name)) & (labels == SHAPES_CLASSES.index(shape))
    attributes = dict(colour=colour, background=_cube_corner(background),
                      size=np.digitize(scene["radius"] / size, SHAPES_SIZE_THRESHOLDS),
                      row=np.digitize(centre[:, 1], SHAPES_POSITION_THRESHOLDS),
                      column=np.digitize(centre[:, 0], SHAPES_POSITION_THRESHOLDS), unseen=unseen)
    return {key: torch.from_numpy(value) if key == "unseen" else torch.from_numpy(value).long()
            for key, value in attributes.items()}


def _cube_corner(rgb: np.ndarray) -> np.ndarray:
    """[N, 3] colours in [0, 1] -> [N] index into SHAPES_COLOURS: 4 [red > 0.5] + 2 [green > 0.5] + [blue > 0.5]."""
    return ((rgb > 0.5) * np.array([4, 2, 1])).sum(axis=1)


def _shapes_caption(rng: np.random.Generator, attributes: dict[str, torch.Tensor], i: int, shape: str) -> str:
    row, column = SHAPES_ROWS[attributes["row"][i]], SHAPES_COLUMNS[attributes["column"][i]]
    if row and column:
        position = f"at the {row} {column}"
    elif row or column:
        position = f"at the {row}" if row else f"on the {column}"
    else:
        position = "in the middle"
    template = SHAPES_CAPTION_TEMPLATES[rng.integers(len(SHAPES_CAPTION_TEMPLATES))]
    text = template.format(size=SHAPES_SIZES[attributes["size"][i]], colour=SHAPES_COLOURS[attributes["colour"][i]],
                           shape=shape,
                           position=position, background=SHAPES_COLOURS[attributes["background"][i]])
    return with_articles(" ".join(text.split()))                     # drop the gaps of empty words; "an arrow"


def _dominant_colours(images: torch.Tensor) -> torch.Tensor:
    """uint8 [N, 3, H, W] -> [N] index into CIFAR10_COLOURS: the name of the mean colour of the central half."""
    h, w = images.shape[-2:]
    centre = images[:, :, h // 4:h - h // 4, w // 4:w - w // 4].float().mean(dim=(2, 3)) / 255   # [N, 3]
    value, _ = centre.max(dim=1)
    saturation = (value - centre.min(dim=1).values) / value.clamp(min=1e-6)
    red, green, blue = centre.unbind(1)
    hue = torch.rad2deg(torch.atan2(math.sqrt(3) * (green - blue), 2 * red - green - blue)) % 360   # [N] degrees
    names = []
    for v, s, h_ in zip(value.tolist(), saturation.tolist(), hue.tolist()):
        if s < 0.2:
            names.append("black" if v < 0.3 else "white" if v > 0.75 else "grey")
        else:
            names.append(next(name for bound, name in CIFAR10_HUES if h_ < bound))
    return torch.tensor([CIFAR10_COLOURS.index(name) for name in names], dtype=torch.int64)
def _shapes_scene(split: str, size: int) -> dict[str, np.ndarray]:
    """The random choices behind split `split` drawn at `size` px (images, masks and captions all start here)."""
    rng = np.random.default_rng(SHAPES_SEEDS[split])
    labels = rng.permutation(np.repeat(np.arange(len(SHAPES_CLASSES)), SHAPES_PER_CLASS[split]))   # [N]
    return _draw_scenes(rng, labels, size)


@functools.lru_cache(maxsize=4)
def _shapes_masks(split: str, size: int) -> torch.Tensor:
    """Ground-truth foreground masks of the shapes dataset, bool [N, size, size]: the pixels that the
    image's shape covers at least SHAPES_MASK_COVERAGE of (the distractor blob is background)."""
    scene = _shapes_scene(split, size)
    masks = torch.empty((len(scene["labels"]), size, size), dtype=torch.bool)
    for start in range(0, len(masks), SHAPES_CHUNK):
        chunk = {key: value[start:start + SHAPES_CHUNK] for key, value in scene.items()}
        masks[start:start + SHAPES_CHUNK] = _shape_coverage(chunk, size)[:, 0] >= SHAPES_MASK_COVERAGE
    return masks
