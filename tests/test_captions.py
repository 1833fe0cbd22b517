"""data.load_captioned: captions that say what the generator drew, the held-out colour x shape pairs,
CIFAR-10's templated captions, and ImageDataset's optional caption fields that other methods never see."""

import numpy as np
import pytest
import torch

from ssl_minimal import data
from ssl_minimal.checks import SSLMinimalError
from ssl_minimal.data import ImageDataset


@pytest.fixture(scope="module")
def shapes_test():
    return data.load_captioned("shapes", "test")


@pytest.fixture(scope="module")
def shapes_train():
    return data.load_captioned("shapes", "train")


def _colour_at_shape_centre(dataset: ImageDataset) -> np.ndarray:
    """The corner-of-the-cube colour name index of the pixel at each shape's centre (as data._cube_corner)."""
    rng = np.random.default_rng(data.SHAPES_SEEDS[dataset.split])
    labels = rng.permutation(np.repeat(np.arange(10), data.SHAPES_PER_CLASS[dataset.split]))
    centre = data._draw_scenes(rng, labels, 32)["centre"].astype(int)          # [N, 2] (x, y) pixels
    pixels = dataset.images[torch.arange(len(dataset)), :, centre[:, 1], centre[:, 0]].float() / 255   # [N, 3]
    return data._cube_corner(pixels.numpy())


def test_captions_state_what_the_image_shows(shapes_test):
    tokenizer = shapes_test.tokenizer
    assert shapes_test.captions.shape == (2000, data.CAPTIONS_PER_IMAGE, tokenizer.context_length)
    colour_words = {tokenizer.ids[name]: index for index, name in enumerate(data.SHAPES_COLOURS)}
    for i in range(0, 2000, 37):
        shape = shapes_test.classes[shapes_test.labels[i]]
        colour = data.SHAPES_COLOURS[shapes_test.attributes["colour"][i]]
        for caption in shapes_test.captions[i]:
            text = tokenizer.decode(caption)
            assert shape in text.split() and colour in text.split(), (text, shape, colour)
            named = [colour_words[int(t)] for t in caption if int(t) in colour_words]
            assert named[0] == shapes_test.attributes["colour"][i] or "background" in text.split()[:3], text
    # the named colour is the colour drawn: at the centre of a filled shape (circle, square) the pixel has it
    filled = np.isin(shapes_test.labels.numpy(), [0, 1])
    agree = _colour_at_shape_centre(shapes_test)[filled] == shapes_test.attributes["colour"].numpy()[filled]
    assert agree.mean() > 0.9
    # ... and the sizes and rows vary
    assert set(shapes_test.attributes["size"].tolist()) == {0, 1, 2}
    assert set(shapes_test.attributes["row"].tolist()) == {0, 1, 2}


def test_captions_vary_in_wording_and_are_deterministic(shapes_test):
    texts = {shapes_test.tokenizer.decode(c) for c in shapes_test.captions[:50].flatten(0, 1)}
    assert len(texts) > 150
    again = data.load_captioned("shapes", "test")
    assert torch.equal(again.captions, shapes_test.captions)
    assert "an ellipse" in " ".join(texts) or "an arrow" in " ".join(texts)      # articles follow the word


def test_held_out_pairs_never_appear_in_training_and_are_marked_in_test(shapes_train, shapes_test):
    held_out = {(data.SHAPES_COLOURS.index(c), data.SHAPES_CLASSES.index(s)) for c, s in data.SHAPES_HELD_OUT}
    train_pairs = set(zip(shapes_train.attributes["colour"].tolist(), shapes_train.labels.tolist()))
    assert not train_pairs & held_out
    assert len(train_pairs) == 80 - len(held_out)               # every other pair is trained on
    test_pairs = list(zip(shapes_test.attributes["colour"].tolist(), shapes_test.labels.tolist()))
    unseen = torch.tensor([pair in held_out for pair in test_pairs])
    assert torch.equal(unseen, shapes_test.attributes["unseen"]) and 150 < unseen.sum() < 400
    # the images are the plain dataset's, minus the held-out ones
    plain = data.load("shapes", "train")
    kept = ~torch.tensor([(c, s) in held_out for c, s in zip(
        data._shapes_attributes("train", 32, ())["colour"].tolist(), plain.labels.tolist())])
    assert torch.equal(plain.images[kept], shapes_train.images)
    # and with held_out=() nothing is held out
    assert len(data.load_captioned("shapes", "train", held_out=())) == len(plain)


def test_train_and_test_share_one_tokenizer_that_knows_every_prompt(shapes_train, shapes_test):
    assert shapes_train.tokenizer is shapes_test.tokenizer
    for template in data.SHAPES_PROMPTS:
        for name in data.SHAPES_CLASSES:
            shapes_train.tokenizer(template.format(f"white {name}"))   # no unknown word


def test_plain_datasets_have_no_captions_and_subsets_keep_captions_aligned(shapes_test):
    plain = data.load("shapes", "test")
    assert plain.captions is None and plain.tokenizer is None and plain.attributes is None
    assert torch.equal(plain.images, shapes_test.images)
    indices = torch.tensor([5, 3, 1999])
    part = shapes_test.subset(indices)
    assert torch.equal(part.captions, shapes_test.captions[indices])
    assert torch.equal(part.attributes["colour"], shapes_test.attributes["colour"][indices])
    assert torch.equal(part.to("cpu").captions, part.captions)
    assert "captions=int64[3, 5, 16]" in repr(part)


def test_cifar10_captions_are_templates_with_the_label_and_the_centre_colour(monkeypatch):
    images = torch.zeros(4, 3, 32, 32, dtype=torch.uint8)
    images[0, 0] = 200                          # red
    images[1, 2] = 220                          # blue
    images[2] = 128                             # grey
    images[3, :2] = 230                         # yellow
    fake = ImageDataset("cifar10", "train", images, torch.tensor([3, 8, 0, 9]), list(data.CIFAR10_CLASSES),
                        data.CIFAR10_MEAN, data.CIFAR10_STD)
    monkeypatch.setattr(data, "load", lambda *args, **kwargs: fake)
    captioned = data.load_captioned("cifar10", "train")
    assert [data.CIFAR10_COLOURS[c] for c in captioned.attributes["colour"]] == ["red", "blue", "grey", "yellow"]
    for caption, label in zip(captioned.captions[:, 0], ["cat", "ship", "airplane", "truck"]):
        text = captioned.tokenizer.decode(caption)
        assert label in text.split() and text.split()[0] in ("a", "an")
    for template in data.CIFAR10_PROMPTS:
        captioned.tokenizer(template.format("automobile"))


def test_caption_errors():
    with pytest.raises(SSLMinimalError, match="captions exist for shapes, cifar10"):
        data.load_captioned("stl10")
    with pytest.raises(SSLMinimalError, match="held_out pairs"):
        data.load_captioned("shapes", "test", held_out=[("purple", "circle")])
    with pytest.raises(SSLMinimalError, match="captions_per_image"):
        data.load_captioned("shapes", "test", captions_per_image=0)
    dataset = data.load_captioned("shapes", "test").subset(8)
    make = dict(name="x", split="train", images=dataset.images, labels=dataset.labels, classes=dataset.classes,
                mean=dataset.mean, std=dataset.std)
    with pytest.raises(SSLMinimalError, match=r"int64 \[8, K, 16\]"):
        ImageDataset(**make, captions=dataset.captions.int(), tokenizer=dataset.tokenizer)
    with pytest.raises(SSLMinimalError, match=r"int64 \[8, K, 16\]"):
        ImageDataset(**make, captions=dataset.captions[:, :, :10], tokenizer=dataset.tokenizer)
    with pytest.raises(SSLMinimalError, match=r"int64 \[8, K, 16\]"):
        ImageDataset(**make, captions=dataset.captions[:4], tokenizer=dataset.tokenizer)
    with pytest.raises(SSLMinimalError, match="need their tokenizer"):
        ImageDataset(**make, captions=dataset.captions)
    with pytest.raises(SSLMinimalError, match="ids outside"):
        ImageDataset(**make, captions=dataset.captions + 100, tokenizer=dataset.tokenizer)
    with pytest.raises(SSLMinimalError, match="one row per image"):
        ImageDataset(**make, attributes={"colour": torch.zeros(3)})
