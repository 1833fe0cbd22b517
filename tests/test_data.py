"""data.py: the shapes dataset, the file formats (checked pixel by pixel against torchvision and PIL),
caching, offline/online logic, ImageDataset, and every error message. Never touches the network."""

import io
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from ssl_minimal import data
from ssl_minimal.checks import SSLMinimalError


@pytest.fixture(autouse=True)
def offline_and_isolated(monkeypatch, tmp_path):
    """No test may download, read $SSL_DATA_DIR or $SSL_CACHE_DIR, or write into the real ~/.cache/ssl_minimal."""
    import torchvision.datasets.utils

    def no_network(*args, **kwargs):
        raise RuntimeError("network access is disabled in tests")

    monkeypatch.setattr(torchvision.datasets.utils, "download_and_extract_archive", no_network)
    monkeypatch.delenv(data.DATA_DIR_VARIABLE, raising=False)
    monkeypatch.delenv(data.CACHE_DIR_VARIABLE, raising=False)
    monkeypatch.setattr(data, "DEFAULT_DATA_DIR", tmp_path / "home_cache")


def random_images(count, size, seed=0):
    """uint8 [count, 3, size, size] with random pixels."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (count, 3, size, size), dtype=torch.uint8, generator=generator)


# --------------------------------------------------------------------------------------------------------------
# writers of torchvision's on-disk formats (tiny versions of the real files)
# --------------------------------------------------------------------------------------------------------------

def write_cifar10_batches(root, per_file=2):
    """cifar-10-batches-py with 5 train files and a test file; returns (train images, train labels, test ...)."""
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]
    written = {}
    for index, name in enumerate(names):
        images = random_images(per_file, 32, seed=index)                           # [n, 3, 32, 32]
        labels = [(index + i) % 10 for i in range(per_file)]
        # CIFAR's row layout: 1024 red values (row by row), then 1024 green, then 1024 blue
        rows = np.concatenate([images[:, channel].reshape(per_file, 1024).numpy() for channel in range(3)], axis=1)
        with open(folder / name, "wb") as file:
            pickle.dump({"batch_label": name, "labels": labels, "data": rows, "filenames": ["x.png"] * per_file}, file)
        written[name] = (images, torch.tensor(labels))
    with open(folder / "batches.meta", "wb") as file:
        pickle.dump({"label_names": list(data.CIFAR10_CLASSES), "num_cases_per_batch": per_file}, file)
    train_images = torch.cat([written[name][0] for name in names[:5]])
    train_labels = torch.cat([written[name][1] for name in names[:5]])
    return train_images, train_labels, *written["test_batch"]


def write_cifar100(root, count=6):
    """cifar-100-python/{train,test,meta} with `count` images each; returns {split: (images, fine labels)}."""
    folder = Path(root) / "cifar-100-python"
    folder.mkdir(parents=True)
    written = {}
    for index, split in enumerate(["train", "test"]):
        images = random_images(count, 32, seed=10 + index)
        fine_labels = [(37 * i + index) % 100 for i in range(count)]
        entry = {"filenames": ["x.png"] * count, "batch_label": split, "fine_labels": fine_labels,
                 "coarse_labels": [label // 5 for label in fine_labels], "data": images.reshape(count, 3072).numpy()}
        with open(folder / split, "wb") as file:
            pickle.dump(entry, file)
        written[split] = (images, torch.tensor(fine_labels))
    with open(folder / "meta", "wb") as file:
        pickle.dump({"fine_label_names": [f"fine_{i}" for i in range(100)],
                     "coarse_label_names": [f"coarse_{i}" for i in range(20)]}, file)
    return written


def write_stl10(root, counts=None):
    """stl10_binary with tiny files, images stored column-major like the real ones; returns {part: (images, labels)}."""
    counts = counts or {"train": 3, "test": 2, "unlabeled": 4}
    folder = Path(root) / "stl10_binary"
    folder.mkdir(parents=True)
    written = {}
    for index, (part, count) in enumerate(counts.items()):
        images = random_images(count, 96, seed=20 + index)                          # [n, 3, H, W]
        images[:, :, 0, :] = 0                                                      # top row black ...
        images[:, 0, 0, 5] = 255                                                    # ... but (row 0, column 5) red
        # column-major: for each channel, the 96 pixels of column 0 (top to bottom), then column 1, ...
        images.transpose(2, 3).contiguous().numpy().tofile(folder / f"{part}_X.bin")
        labels = torch.tensor([(3 * i + index) % 10 for i in range(count)]) if part != "unlabeled" else None
        if labels is not None:
            (labels + 1).to(torch.uint8).numpy().tofile(folder / f"{part}_y.bin")  # stored as 1..10
        written[part] = (images, labels)
    (folder / "class_names.txt").write_text("\n".join(data.STL10_CLASSES) + "\n")
    (folder / "fold_indices.txt").write_text("0 1\n" * 10)
    return written


def write_cifar10_npz(path, train_images, train_labels, test_images, test_labels, quality=95):
    """A small file in the format of the shared cifar10_jpeg.npz; returns the JPEG bytes of the train images."""
    def encode(images):
        files = []
        for image in images:
            buffer = io.BytesIO()
            Image.fromarray(image.permute(1, 2, 0).numpy()).save(buffer, format="JPEG", quality=quality)
            files.append(np.frombuffer(buffer.getvalue(), dtype=np.uint8))
        offsets = np.concatenate([[0], np.cumsum([len(file) for file in files])]).astype(np.int64)
        return np.concatenate(files), offsets, files

    train_jpeg, train_offsets, train_files = encode(train_images)
    test_jpeg, test_offsets, _ = encode(test_images)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, train_jpeg=train_jpeg, train_offsets=train_offsets, train_labels=train_labels.numpy(),
             test_jpeg=test_jpeg, test_offsets=test_offsets, test_labels=test_labels.numpy(),
             classes=np.array(data.CIFAR10_CLASSES))
    return train_files


def smooth_images(count, size=32):
    """Images JPEG keeps almost intact: a top half in one colour, a bottom half in another."""
    images = torch.zeros(count, 3, size, size, dtype=torch.uint8)
    for index in range(count):
        images[index, :, : size // 2] = torch.tensor([200, 30 + 20 * index, 40]).view(3, 1, 1)   # top: reddish
        images[index, :, size // 2:] = torch.tensor([20, 60, 220]).view(3, 1, 1)                 # bottom: blue
    return images


def channel_mean_and_std(images):
    """Per-channel mean and std on [0, 1] of uint8 images [N, 3, H, W], from exact 256-bin histograms (cheap)."""
    levels = torch.arange(256, dtype=torch.float64) / 255
    histograms = torch.stack([torch.bincount(images[:, channel].reshape(-1), minlength=256)
                              for channel in range(3)])                              # [3, 256]
    probabilities = histograms.double() / histograms.sum(dim=1, keepdim=True)      # [3, 256]
    mean = probabilities @ levels
    std = (probabilities @ levels**2 - mean**2).sqrt()
    return mean.tolist(), std.tolist()


def skip_torchvision_md5(monkeypatch):
    """torchvision checks the md5 of the real files; let it read our tiny ones to compare pixels."""
    import torchvision.datasets.cifar
    import torchvision.datasets.stl10
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *args, **kwargs: True)
    monkeypatch.setattr(torchvision.datasets.stl10, "check_integrity", lambda *args, **kwargs: True)


# --------------------------------------------------------------------------------------------------------------
# shapes
# --------------------------------------------------------------------------------------------------------------

def test_shapes_splits_sizes_and_class_balance():
    train, test = data.load("shapes", "train"), data.load("shapes", "test")
    assert train.images.shape == (10_000, 3, 32, 32) and train.images.dtype == torch.uint8
    assert test.images.shape == (2_000, 3, 32, 32)
    assert train.labels.dtype == torch.int64
    assert torch.bincount(train.labels).tolist() == [1000] * 10
    assert torch.bincount(test.labels).tolist() == [200] * 10
    assert train.classes == list(data.SHAPES_CLASSES) and len(set(train.classes)) == 10
    assert (train.labels[:50] != train.labels[0]).any()          # classes are mixed, not grouped
    assert not torch.equal(train.images[:2000], test.images)      # different seeds


def test_shapes_are_deterministic_and_cached_copies():
    first = data.load("shapes", "test")
    again = data._shapes_arrays.__wrapped__("test", 32)           # drawn anew, bypassing the in-memory cache
    assert torch.equal(first.images, again[0]) and torch.equal(first.labels, again[1])
    first.images.zero_()                                          # a user modifying their copy ...
    assert data.load("shapes", "test").images.float().mean() > 50  # ... does not corrupt the cache


def test_shapes_do_not_depend_on_the_chunk_size(monkeypatch):
    monkeypatch.setattr(data, "SHAPES_PER_CLASS", {"train": 10, "test": 30})     # 300 images: fast
    reference = data._shapes_arrays.__wrapped__("test", 16)[0]
    monkeypatch.setattr(data, "SHAPES_CHUNK", 77)
    assert torch.equal(data._shapes_arrays.__wrapped__("test", 16)[0], reference)


def test_shapes_statistics_match_the_constants():
    mean, std = channel_mean_and_std(data.load("shapes", "train").images)
    assert mean == pytest.approx(data.SHAPES_MEAN, abs=5e-4)
    assert std == pytest.approx(data.SHAPES_STD, abs=5e-4)


def test_shapes_at_another_size_draw_the_same_scenes():
    large, small = data.load("shapes", "test"), data.load("shapes", "test", image_size=16)
    assert small.images.shape == (2000, 3, 16, 16)
    assert torch.equal(small.labels, large.labels)
    shrunk = F.interpolate(large.images.float(), size=(16, 16), mode="bilinear", antialias=True)
    same = (shrunk - small.images.float()).abs().mean(dim=(1, 2, 3))      # [2000] (measured: 8 on average)
    other = (shrunk - small.images[torch.roll(torch.arange(2000), 1)].float()).abs().mean(dim=(1, 2, 3))   # (80)
    assert same.mean() < 12 and other.mean() > 40                 # same scenes: only pixel noise and edges differ
    assert bool((same < other).all())                             # every image is closest to its own scene


def test_shapes_32px_images_are_unchanged():
    """The pixels behind every committed number on "shapes": a checksum of the test split (masks and
    shapes64 added nothing to the images)."""
    images, labels = data._shapes_arrays("test", 32)
    assert int(images.sum()) == 782_972_284 and int((images.long() * torch.arange(32)).sum()) == 12_129_607_895
    assert int((labels * torch.arange(2000)).sum()) == 8_916_060


def test_shapes_masks_are_the_shapes_pixels():
    test = data.load("shapes", "test")
    masks = test.masks
    assert masks.dtype == torch.bool and masks.shape == (2000, 32, 32)
    scene = data._shapes_scene("test", 32)
    assert torch.equal(torch.from_numpy(scene["labels"]), test.labels)       # the same scenes as the images
    # a circle's mask: its area is pi r^2, its centroid the circle's centre
    circles = np.flatnonzero(scene["labels"] == 0)[:20]
    area = masks[circles].sum(dim=(1, 2)).numpy()
    assert area == pytest.approx(np.pi * scene["radius"][circles] ** 2, rel=0.08)
    y, x = torch.meshgrid(torch.arange(32.0) + 0.5, torch.arange(32.0) + 0.5, indexing="ij")
    centroid = np.stack([(x * masks[circles]).sum(dim=(1, 2)).numpy() / area,
                         (y * masks[circles]).sum(dim=(1, 2)).numpy() / area], axis=1)
    assert np.abs(centroid - scene["centre"][circles]).max() < 0.5
    # inside the mask the image shows the shape's colour; outside it does not
    colour = torch.from_numpy(scene["colour"]).float() * 255                         # [N, 3]
    distance = (test.images.float() - colour[:, :, None, None]).norm(dim=1)          # [N, 32, 32]
    assert distance[masks].median() < 15 and distance[~masks].median() > 100


def test_shapes64_draws_the_same_scenes_with_their_masks():
    small, large = data.load("shapes", "test"), data.load("shapes64", "test")
    assert large.name == "shapes64" and large.images.shape == (2000, 3, 64, 64) and large.masks.shape == (2000, 64, 64)
    assert torch.equal(small.labels, large.labels)
    pooled = F.avg_pool2d(large.masks[:, None].float(), 2)[:, 0]                    # [2000, 32, 32]
    agree = ((pooled >= 0.5) == small.masks).float().mean()
    assert agree > 0.98                                                               # the same shapes, finer
    assert data.load("shapes64", "test", image_size=32).masks.equal(small.masks)
    mean, std = channel_mean_and_std(data.load("shapes64", "train").images)
    assert mean == pytest.approx(data.SHAPES_MEAN, abs=0.01) and std == pytest.approx(data.SHAPES_STD, abs=0.01)
    assert data.is_available("shapes64") and "masks=bool[2000, 64, 64]" in repr(large)


def test_masks_follow_subset_and_to_and_are_checked():
    test = data.load("shapes", "test")
    part = test.subset([5, 3, 7])
    assert torch.equal(part.masks, test.masks[[5, 3, 7]])
    assert torch.equal(test.subset(50, seed=2).masks, test.masks[data._balanced_indices(test.labels, 50, 2)])
    assert torch.equal(test.subset(test.labels == 3).masks, test.masks[test.labels == 3])
    assert torch.equal(part.to("cpu").masks, part.masks)
    assert make_dataset([0, 1]).masks is None and make_dataset([0, 1]).subset([1]).masks is None
    images = random_images(2, 8)
    arguments = dict(name="toy", split="train", classes=["a", "b"], mean=(0.5,) * 3, std=(0.25,) * 3)
    with pytest.raises(SSLMinimalError, match=r"masks must be None or a bool tensor of shape \[2, 8, 8\]"):
        data.ImageDataset(images=images, labels=torch.tensor([0, 1]), masks=torch.zeros(2, 8, 8), **arguments)
    with pytest.raises(SSLMinimalError, match=r"got torch.bool \[2, 4, 4\]"):
        data.ImageDataset(images=images, labels=torch.tensor([0, 1]), masks=torch.zeros(2, 4, 4, dtype=torch.bool),
                          **arguments)


@pytest.mark.parametrize("name, inside, outside", [
    ("circle", [(0, 0), (0.7, 0.7)], [(0.75, 0.75), (1.01, 0)]),
    ("ring", [(0.8, 0), (0, -0.6)], [(0, 0), (0.5, 0), (1.05, 0)]),
    ("square", [(0.79, 0.79), (-0.79, 0)], [(0.81, 0), (0, -0.85)]),
    ("triangle", [(0, 0), (0, -0.9)], [(0.6, -0.5), (0, 0.7)]),
    ("cross", [(0, 0.95), (0.95, 0)], [(0.5, 0.5), (-0.5, -0.5)]),
    ("star", [(0, 0), (0, -1.0)], [(0.6, -0.6), (0, 0.9)]),               # tip points up; no tip points down
    ("ellipse", [(0.95, 0), (0, 0.45)], [(0, 0.55), (0.7, 0.4)]),
    ("heart", [(0, 0), (-0.5, -0.5), (0.5, -0.5)], [(0, -0.75), (0.9, 0.9)]),   # the notch at the top
    ("crescent", [(-0.9, 0), (0, -0.9)], [(0, 0), (0.5, 0)]),             # the bite is on the right
    ("arrow", [(0.9, 0), (-0.9, 0), (0.3, 0.5)], [(-0.9, 0.5), (0, 0.4)]),
])
def test_each_shape_contains_the_right_points(name, inside, outside):
    points = torch.tensor(inside + outside, dtype=torch.float32)
    mask = data._inside_shape(name, points[:, 0], points[:, 1])
    assert mask.tolist() == [True] * len(inside) + [False] * len(outside)


def test_shape_coverage_is_antialiased_area():
    # one circle of radius 8 px and one square of half side 0.8 * 10 = 8 px, both centred in a 32x32 image
    scene = dict(labels=np.array([0, 1]), centre=np.array([[16.0, 16.0], [16.0, 16.0]]),
                 radius=np.array([8.0, 10.0]), angle=np.array([0.0, 0.0]))
    coverage = data._shape_coverage(scene, 32)                               # [2, 1, 32, 32]
    assert coverage[0].sum().item() == pytest.approx(np.pi * 8**2, rel=0.02)
    assert ((coverage[0] > 0) & (coverage[0] < 1)).any()                     # soft edges
    assert coverage[1].sum().item() == pytest.approx(16 * 16)                # pixels 8..23: exactly covered
    assert coverage[1, 0, 8:24, 8:24].min() == 1 and coverage[1, 0, 7].max() == 0


def test_shapes_stand_out_from_their_background():
    rng = np.random.default_rng(0)
    scene = data._draw_scenes(rng, np.zeros(2000, dtype=int), 32)
    centre = scene["centre"] / 32
    background = scene["colour_1"] + (data._gradient_blend(scene, centre[:, 0], centre[:, 1])[:, None]
                                      * (scene["colour_2"] - scene["colour_1"]))
    distance = np.linalg.norm(scene["colour"] - background, axis=1)
    assert distance.min() >= data.SHAPES_MIN_CONTRAST - 1e-9
    margin = data.SHAPES_MARGIN * scene["radius"][:, None]
    assert (scene["centre"] >= margin).all() and (scene["centre"] <= 32 - margin).all()


# --------------------------------------------------------------------------------------------------------------
# ImageDataset
# --------------------------------------------------------------------------------------------------------------

def make_dataset(labels, classes=("a", "b", "c")):
    labels = torch.as_tensor(labels, dtype=torch.int64)
    return data.ImageDataset("toy", "train", random_images(len(labels), 8), labels, list(classes),
                             (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def test_subset_of_n_is_class_balanced_random_and_reproducible():
    train = data.load("shapes", "train")
    subset = train.subset(100, seed=0)
    assert len(subset) == 100 and torch.bincount(subset.labels).tolist() == [10] * 10
    assert torch.equal(subset.images, train.subset(100, seed=0).images)
    assert not torch.equal(subset.images, train.subset(100, seed=1).images)
    odd = train.subset(105, seed=3)
    assert sorted(torch.bincount(odd.labels).tolist()) == [10] * 5 + [11] * 5
    # the chosen images are images of the dataset, with their own labels, in the original order
    rows = {bytes(image.numpy()): label for image, label in zip(train.images, train.labels.tolist())}
    assert all(rows[bytes(image.numpy())] == label for image, label in zip(subset.images, subset.labels.tolist()))


def test_subset_when_a_class_is_small_and_with_unlabelled_images():
    toy = make_dataset([0] * 10 + [1] * 2 + [2] * 10)
    counts = torch.bincount(toy.subset(12, seed=0).labels).tolist()
    assert counts[1] == 2 and sorted(counts) == [2, 5, 5]        # all of class 1, the others share the rest
    assert torch.bincount(toy.subset(22).labels).tolist() == [10, 2, 10]
    unlabelled = make_dataset([0] * 6 + [-1] * 6, classes=("a",))
    assert sorted(unlabelled.subset(4).labels.tolist()) == [-1, -1, 0, 0]


def test_subset_by_indices_keeps_their_order():
    toy = make_dataset([0, 1, 2, 0, 1])
    subset = toy.subset([3, 1, torch.tensor(4).item()])
    assert torch.equal(subset.images, toy.images[[3, 1, 4]]) and subset.labels.tolist() == [0, 1, 1]
    assert toy.subset(torch.tensor([2, 0])).labels.tolist() == [2, 0]
    assert len(toy.subset(torch.tensor(3))) == 3                  # a 0-d tensor is a size, not an index
    assert toy.subset(toy.labels == 1).labels.tolist() == [1, 1]   # a boolean mask
    assert subset.name == "toy" and subset.mean == toy.mean and subset.classes == toy.classes


def test_subset_errors():
    toy = make_dataset([0, 1, 2])
    with pytest.raises(SSLMinimalError, match="between 0 and the dataset size 3, got 4"):
        toy.subset(4)
    with pytest.raises(SSLMinimalError, match=r"indices must lie in 0..2 for 3 images, got 0..7"):
        toy.subset([0, 7])
    with pytest.raises(SSLMinimalError, match="1-D list of indices"):
        toy.subset([[0, 1]])
    with pytest.raises(SSLMinimalError, match="boolean mask of length 3, got torch.bool of shape"):
        toy.subset(torch.tensor([True, False]))
    with pytest.raises(SSLMinimalError, match="got torch.float32"):
        toy.subset(torch.tensor([0.0, 1.0]))
    with pytest.raises(SSLMinimalError, match=r"must lie in 0..2 for 3 images, got -1..0"):
        toy.subset([-1, 0])


def test_to_device_moves_a_copy():
    toy = make_dataset([0, 1, 2])
    moved = toy.to("cpu")
    assert moved is not toy and torch.equal(moved.images, toy.images) and moved.classes == toy.classes
    if torch.cuda.is_available():
        on_gpu = toy.to("cuda")
        assert on_gpu.images.is_cuda and on_gpu.labels.is_cuda and toy.images.device.type == "cpu"
        assert on_gpu.subset(2, seed=0).images.is_cuda


def test_repr_says_what_is_inside():
    text = repr(make_dataset([0, -1, 2, -1]))
    assert text.startswith("ImageDataset(name='toy', split='train', images=uint8[4, 3, 8, 8], labels=int64[4]")
    assert "(2 unlabelled)" in text and "classes=3 [a, b, c]" in text and "device=cpu" in text
    assert "..." in repr(data.load("shapes", "test"))             # 10 classes: only the first are listed


def test_dataset_rejects_wrong_tensors():
    images = random_images(3, 8)
    arguments = dict(name="toy", split="train", classes=["a", "b"], mean=(0.5,) * 3, std=(0.25,) * 3)
    with pytest.raises(SSLMinimalError, match="must be uint8"):
        data.ImageDataset(images=images.float() / 255, labels=torch.tensor([0, 1, 0]), **arguments)
    with pytest.raises(SSLMinimalError, match=r"int64 tensor of shape \[3\]"):
        data.ImageDataset(images=images, labels=torch.tensor([0, 1]), **arguments)
    with pytest.raises(SSLMinimalError, match=r"must lie in -1..1"):
        data.ImageDataset(images=images, labels=torch.tensor([0, 1, 2]), **arguments)
    with pytest.raises(SSLMinimalError, match=r"\[B, 3, H, W\]"):
        data.ImageDataset(images=images[:, :1], labels=torch.tensor([0, 1, 0]), **arguments)


# --------------------------------------------------------------------------------------------------------------
# names, splits, errors, offline/online
# --------------------------------------------------------------------------------------------------------------

def test_unknown_dataset_lists_the_valid_ones():
    with pytest.raises(SSLMinimalError, match="unknown dataset 'cifar'; valid datasets are: shapes, cifar10, "
                                              "cifar100, stl10"):
        data.load("cifar")


def test_unknown_split_lists_the_valid_splits_of_that_dataset():
    with pytest.raises(SSLMinimalError, match=r"unknown split 'val' for dataset 'stl10'; valid splits are: train, "
                                              r"test, unlabeled, train\+unlabeled"):
        data.load("stl10", "val")
    with pytest.raises(SSLMinimalError, match="valid splits are: train, test$"):
        data.load("cifar10", "unlabeled")


@pytest.mark.parametrize("size", [0, -3, 2.5, "32", True])
def test_bad_image_size(size):
    with pytest.raises(SSLMinimalError, match="image_size must be a positive integer"):
        data.load("shapes", image_size=size)


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "stl10"])
def test_missing_data_offline_says_where_it_looked_and_how_to_fix(name, tmp_path):
    with pytest.raises(SSLMinimalError) as error:
        data.load(name, "train", data_dir=tmp_path, download=False)
    message = str(error.value)
    assert f"no {name} data found" in message and "download=False" in message
    assert str(tmp_path / data._TORCHVISION_FOLDERS[name]) in message
    assert "--data-dir DIR" in message and "SSL_DATA_DIR" in message and "download=True" in message
    if name == "cifar10":
        assert str(tmp_path / "cifar10" / "cifar10_jpeg.npz") in message


def test_download_is_tried_when_nothing_is_found(monkeypatch, tmp_path):
    import torchvision.datasets
    import torchvision.datasets.utils
    calls = []

    def failing_download(url, download_root, filename=None, md5=None, **kwargs):
        calls.append((url, download_root, filename, md5))
        raise OSError("no route to host")

    monkeypatch.setattr(torchvision.datasets.utils, "download_and_extract_archive", failing_download)
    with pytest.raises(SSLMinimalError, match="downloading it into .* failed .*no route to host.*SSL_DATA_DIR"):
        data.load("cifar100", data_dir=tmp_path)                   # download=None: try, since nothing is local
    assert calls == [(torchvision.datasets.CIFAR100.url, str(tmp_path), torchvision.datasets.CIFAR100.filename,
                      torchvision.datasets.CIFAR100.tgz_md5)]
    with pytest.raises(SSLMinimalError, match="download=False"):
        data.load("stl10", data_dir=tmp_path, download=False)
    assert len(calls) == 1                                         # download=False never calls it


def test_downloaded_files_are_read(monkeypatch, tmp_path):
    import torchvision.datasets.utils
    written = {}

    def fake_download(url, download_root, filename=None, md5=None, **kwargs):
        written.update(write_cifar100(download_root))

    monkeypatch.setattr(torchvision.datasets.utils, "download_and_extract_archive", fake_download)
    test = data.load("cifar100", "test", data_dir=tmp_path / "new_folder", download=True)
    assert torch.equal(test.images, written["test"][0]) and torch.equal(test.labels, written["test"][1])
    # a download that produces nothing is reported too
    monkeypatch.setattr(torchvision.datasets.utils, "download_and_extract_archive", lambda *args, **kwargs: None)
    with pytest.raises(SSLMinimalError, match="did not produce the expected files"):
        data.load("stl10", data_dir=tmp_path, download=True)


def test_data_dir_comes_from_the_environment_variable(monkeypatch, tmp_path):
    written = write_cifar100(tmp_path / "from_env")
    monkeypatch.setenv("SSL_DATA_DIR", str(tmp_path / "from_env"))
    assert data.resolve_data_dir() == tmp_path / "from_env"
    assert data.resolve_data_dir(tmp_path / "given") == tmp_path / "given"      # the argument wins
    assert torch.equal(data.load("cifar100", "train", download=False).images, written["train"][0])
    monkeypatch.delenv("SSL_DATA_DIR")
    assert data.resolve_data_dir() == data.DEFAULT_DATA_DIR


# --------------------------------------------------------------------------------------------------------------
# torchvision's formats: pixels, orientation and labels as torchvision reads them
# --------------------------------------------------------------------------------------------------------------

def test_cifar10_batches_match_torchvision(monkeypatch, tmp_path):
    import torchvision
    train_images, train_labels, test_images, test_labels = write_cifar10_batches(tmp_path)
    train = data.load("cifar10", "train", data_dir=tmp_path, download=False)
    test = data.load("cifar10", "test", data_dir=tmp_path, download=False)
    assert torch.equal(train.images, train_images) and torch.equal(train.labels, train_labels)
    assert torch.equal(test.images, test_images) and torch.equal(test.labels, test_labels)
    assert train.classes == list(data.CIFAR10_CLASSES) and train.mean == data.CIFAR10_MEAN
    skip_torchvision_md5(monkeypatch)
    reference = torchvision.datasets.CIFAR10(str(tmp_path), train=True)    # data: uint8 [N, H, W, 3]
    assert torch.equal(train.images.permute(0, 2, 3, 1), torch.from_numpy(reference.data))
    assert train.labels.tolist() == reference.targets


def test_cifar100_matches_torchvision_with_fine_labels(monkeypatch, tmp_path):
    import torchvision
    written = write_cifar100(tmp_path)
    train = data.load("cifar100", "train", data_dir=tmp_path, download=False)
    assert torch.equal(train.images, written["train"][0]) and torch.equal(train.labels, written["train"][1])
    assert train.classes == [f"fine_{i}" for i in range(100)] and train.std == data.CIFAR100_STD
    skip_torchvision_md5(monkeypatch)
    reference = torchvision.datasets.CIFAR100(str(tmp_path), train=False)
    test = data.load("cifar100", "test", data_dir=tmp_path, download=False)
    assert torch.equal(test.images.permute(0, 2, 3, 1), torch.from_numpy(reference.data))
    assert test.labels.tolist() == reference.targets


def test_stl10_is_read_column_major_with_labels_from_zero(monkeypatch, tmp_path):
    import torchvision
    written = write_stl10(tmp_path)
    train = data.load("stl10", "train", data_dir=tmp_path, download=False)
    assert torch.equal(train.images, written["train"][0])
    assert (train.images[:, 0, 0, 5] == 255).all()                          # (row 0, column 5) is red
    assert (train.images[:, :, 0, :6] == 0).sum() == train.images.shape[0] * (3 * 6 - 1)   # top row: only (0, 5) red
    assert torch.equal(train.labels, written["train"][1])                   # files hold 1..10, we give 0..9
    assert train.classes == list(data.STL10_CLASSES) and train.mean == data.STL10_MEAN
    skip_torchvision_md5(monkeypatch)
    for split in ["train", "test", "unlabeled", "train+unlabeled"]:
        ours = data.load("stl10", split, data_dir=tmp_path, download=False)
        reference = torchvision.datasets.STL10(str(tmp_path), split=split)  # data: uint8 [N, 3, H, W]
        assert torch.equal(ours.images, torch.from_numpy(reference.data)), split
        assert ours.labels.tolist() == reference.labels.tolist(), split


def test_stl10_unlabelled_splits(tmp_path):
    written = write_stl10(tmp_path)
    unlabelled = data.load("stl10", "unlabeled", data_dir=tmp_path, download=False)
    assert unlabelled.labels.tolist() == [-1] * 4 and torch.equal(unlabelled.images, written["unlabeled"][0])
    both = data.load("stl10", "train+unlabeled", data_dir=tmp_path, download=False)
    assert both.labels.tolist() == written["train"][1].tolist() + [-1] * 4
    assert torch.equal(both.images, torch.cat([written["train"][0], written["unlabeled"][0]]))
    assert "(4 unlabelled)" in repr(both)


def test_stl10_resized_once_at_load_time_like_pil(monkeypatch, tmp_path):
    written = write_stl10(tmp_path)
    monkeypatch.setattr(data, "RESIZE_CHUNK", 2)                  # several chunks, also inside one file
    small = data.load("stl10", "train+unlabeled", data_dir=tmp_path, download=False, image_size=32)
    assert small.images.shape == (7, 3, 32, 32)
    originals = torch.cat([written["train"][0], written["unlabeled"][0]])
    for image, original in zip(small.images, originals):
        pil = Image.fromarray(original.permute(1, 2, 0).numpy()).resize((32, 32), Image.BILINEAR)
        expected = torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1)
        assert (image.int() - expected.int()).abs().max() <= 1


def test_cifar_image_size_upsamples(tmp_path):
    write_cifar100(tmp_path)
    larger = data.load("cifar100", "test", data_dir=tmp_path, download=False, image_size=64)
    assert larger.images.shape == (6, 3, 64, 64) and larger.images.dtype == torch.uint8


def test_corrupted_torchvision_files_are_reported(tmp_path):
    write_stl10(tmp_path)
    with open(tmp_path / "stl10_binary" / "test_X.bin", "ab") as file:
        file.write(b"\x00" * 10)
    with pytest.raises(SSLMinimalError, match="not a multiple of 27648"):
        data.load("stl10", "test", data_dir=tmp_path, download=False)
    (tmp_path / "stl10_binary" / "train_y.bin").write_bytes(bytes([1, 2]))          # 2 labels for 3 images
    with pytest.raises(SSLMinimalError, match="should hold 3 labels"):
        data.load("stl10", "train", data_dir=tmp_path, download=False)
    write_cifar100(tmp_path / "other")
    (tmp_path / "other" / "cifar-100-python" / "train").write_bytes(b"not a pickle")
    with pytest.raises(SSLMinimalError, match="is not a valid cifar100 file"):
        data.load("cifar100", "train", data_dir=tmp_path / "other", download=False)


# --------------------------------------------------------------------------------------------------------------
# CIFAR-10 as JPEG bytes (a tiny file here; the real shared file below when present)
# --------------------------------------------------------------------------------------------------------------

def test_cifar10_npz_is_decoded_like_pil_and_cached(monkeypatch, tmp_path):
    train_images, test_images = smooth_images(3), smooth_images(2)
    npz = tmp_path / "data" / "cifar10" / "cifar10_jpeg.npz"
    jpeg_files = write_cifar10_npz(npz, train_images, torch.tensor([4, 0, 9]), test_images, torch.tensor([1, 2]))
    cache = tmp_path / "cache"
    train = data.load("cifar10", "train", data_dir=tmp_path / "data", download=False, cache_dir=cache)
    assert train.labels.tolist() == [4, 0, 9] and train.classes == list(data.CIFAR10_CLASSES)
    for image, jpeg in zip(train.images, jpeg_files):                       # exactly what PIL decodes, as CHW
        decoded = np.asarray(Image.open(io.BytesIO(jpeg.tobytes())).convert("RGB"))
        assert torch.equal(image, torch.from_numpy(decoded.copy()).permute(2, 0, 1))
    assert (train.images.int() - train_images.int()).abs().float().mean() < 3   # right way up, right channels
    assert (cache / "cifar10_train_decoded_uint8.npz").is_file()

    def no_decoding(*args):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(data, "_decode_cifar10_npz", no_decoding)
    cached = data.load("cifar10", "train", data_dir=tmp_path / "data", download=False, cache_dir=cache)
    assert torch.equal(cached.images, train.images) and torch.equal(cached.labels, train.labels)
    with pytest.raises(AssertionError, match="cache should have been used"):     # the test split is not cached yet
        data.load("cifar10", "test", data_dir=tmp_path / "data", cache_dir=cache)


def test_cifar10_cache_is_remade_when_the_npz_changes(tmp_path):
    npz = tmp_path / "cifar10_jpeg.npz"                                      # directly in data_dir also works
    write_cifar10_npz(npz, smooth_images(2), torch.tensor([1, 2]), smooth_images(1), torch.tensor([3]))
    first = data.load("cifar10", "train", data_dir=tmp_path, download=False, cache_dir=tmp_path / "cache")
    write_cifar10_npz(npz, smooth_images(3), torch.tensor([5, 6, 7]), smooth_images(1), torch.tensor([3]))
    second = data.load("cifar10", "train", data_dir=tmp_path, download=False, cache_dir=tmp_path / "cache")
    assert first.labels.tolist() == [1, 2] and second.labels.tolist() == [5, 6, 7]


def test_cifar10_cache_folder_from_the_environment_variable(monkeypatch, tmp_path):
    write_cifar10_npz(tmp_path / "cifar10_jpeg.npz", smooth_images(2), torch.tensor([1, 2]), smooth_images(1),
                      torch.tensor([3]))
    monkeypatch.setenv("SSL_CACHE_DIR", str(tmp_path / "from_env"))
    data.load("cifar10", "test", data_dir=tmp_path, download=False)
    assert (tmp_path / "from_env" / "cifar10_test_decoded_uint8.npz").is_file()
    assert not (tmp_path / "cifar10_test_decoded_uint8.npz").exists()
    data.load("cifar10", "test", data_dir=tmp_path, download=False, cache_dir=tmp_path / "given")   # argument wins
    assert (tmp_path / "given" / "cifar10_test_decoded_uint8.npz").is_file()


def test_cifar10_cache_goes_beside_the_npz_unless_that_folder_is_read_only(tmp_path):
    folder = tmp_path / "data" / "cifar10"
    write_cifar10_npz(folder / "cifar10_jpeg.npz", smooth_images(2), torch.tensor([1, 2]), smooth_images(1),
                      torch.tensor([3]))
    data.load("cifar10", "test", data_dir=tmp_path / "data", download=False)
    assert (folder / "cifar10_test_decoded_uint8.npz").is_file()
    folder.chmod(0o555)                                       # read-only (root could still write: we must not)
    try:
        data.load("cifar10", "train", data_dir=tmp_path / "data", download=False)
        assert not (folder / "cifar10_train_decoded_uint8.npz").exists()
        assert (data.DEFAULT_DATA_DIR / "cifar10_train_decoded_uint8.npz").is_file()
    finally:
        folder.chmod(0o755)


def test_corrupted_npz_is_reported(tmp_path):
    npz = tmp_path / "cifar10" / "cifar10_jpeg.npz"
    npz.parent.mkdir()
    np.savez(npz, train_jpeg=np.zeros(10, dtype=np.uint8), train_labels=np.zeros(1, dtype=np.int64))
    with pytest.raises(SSLMinimalError, match="lacks the keys train_offsets, test_jpeg, test_offsets, test_labels, "
                                              "classes .*fresh copy"):
        data.load("cifar10", data_dir=tmp_path, download=False, cache_dir=tmp_path)
    npz.write_bytes(b"this is not a zip file")
    with pytest.raises(SSLMinimalError, match="is not a readable .npz file"):
        data.load("cifar10", data_dir=tmp_path, download=False, cache_dir=tmp_path)


def test_real_cifar10_from_the_shared_file(shared_data_dir, tmp_path):
    """The facts of CIFAR-10 (and of the shared file's README) on the real 60,000 images."""
    train = data.load("cifar10", "train", data_dir=shared_data_dir, download=False, cache_dir=tmp_path)
    test = data.load("cifar10", "test", data_dir=shared_data_dir, download=False, cache_dir=tmp_path)
    assert train.images.shape == (50_000, 3, 32, 32) and test.images.shape == (10_000, 3, 32, 32)
    assert torch.bincount(train.labels).tolist() == [5000] * 10
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    assert train.classes == list(data.CIFAR10_CLASSES)
    # the file is grouped by class: image 0 is an airplane, and the frogs start at 6 * 5000
    assert train.labels[0] == 0 and bool((train.labels.diff() >= 0).all())
    assert train.labels[30_000] == train.classes.index("frog")
    mean, std = channel_mean_and_std(train.images)
    assert mean == pytest.approx([0.4913, 0.4821, 0.4465], abs=0.002)              # README: measured on the JPEGs
    assert std == pytest.approx([0.2452, 0.2428, 0.2606], abs=0.002)
    assert mean == pytest.approx(data.CIFAR10_MEAN, abs=0.002)
    assert std == pytest.approx(data.CIFAR10_STD, abs=0.003)                      # JPEG smooths: a little lower
    # right way up: in photos the top (sky) is brighter than the bottom; left and right are alike
    brightness = train.images.sum(dim=(0, 1), dtype=torch.int64) / (255 * 3 * 50_000)   # [32, 32]
    assert brightness[:8].mean() - brightness[-8:].mean() > 0.03
    assert abs(brightness[:, :8].mean() - brightness[:, -8:].mean()) < 0.01
    again = data.load("cifar10", "test", data_dir=shared_data_dir, download=False, cache_dir=tmp_path)
    assert torch.equal(again.images, test.images)                                 # from the cache


def test_course_dataset_is_cifar10_when_its_file_is_there_else_shapes(tmp_path, monkeypatch):
    from ssl_minimal import data
    monkeypatch.delenv("SSL_DATA_DIR", raising=False)
    assert data.is_available("shapes", tmp_path)
    assert not data.is_available("cifar10", tmp_path) and data.course_dataset(tmp_path) == "shapes"
    (tmp_path / "cifar10").mkdir()
    (tmp_path / "cifar10" / "cifar10_jpeg.npz").write_bytes(b"")
    assert data.is_available("cifar10", tmp_path) and data.course_dataset(tmp_path) == "cifar10"
    with pytest.raises(data.SSLMinimalError, match="valid datasets are"):
        data.is_available("imagenet", tmp_path)
