"""Tests for ssl_minimal.augmentations.

Deterministic ops are compared with torchvision's functional ops on float tensors; random ops are
checked through the statistics of what they sample (box sizes, flip and grayscale frequencies...).
"""

import math

import pytest
import torch
import torchvision.transforms.v2.functional as TF
from torchvision.transforms import RandomResizedCrop

from ssl_minimal import augmentations as A
from ssl_minimal.checks import SSLMinimalError


def random_images(batch=6, height=20, width=24, seed=0):
    return torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


def seeded(seed=0):
    return torch.Generator().manual_seed(seed)


def per_image_torchvision(images, op, params, **kwargs):
    """Apply a torchvision functional op image by image with its own parameter."""
    return torch.stack([op(image, float(param), **kwargs) for image, param in zip(images, params)])


# ---------------------------------------------------------------------------------------------
# Deterministic ops == torchvision
@pytest.mark.parametrize("size", [32, 7])   # 32: upsampling (CIFAR), 7: downsampling
def test_resized_crop_matches_torchvision(size):
    images = random_images()
    boxes = torch.tensor([[0, 0, 20, 24], [1, 0, 12, 14], [5, 10, 15, 12], [3, 3, 1, 1],
                          [0, 5, 17, 19], [6, 2, 13, 13]])
    ours = A.resized_crop(images, boxes, size)
    # antialias=False: we resample bilinearly without low-pass filtering when shrinking.
    reference = torch.stack([TF.resized_crop(image, *box.tolist(), [size, size], antialias=False)
                             for image, box in zip(images, boxes)])
    assert ours.shape == (6, 3, size, size)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=0)


def test_resized_crop_upsampling_equals_antialiased_torchvision():
    # When every box is smaller than the output (always true for CIFAR 32 -> 32) antialiasing
    # changes nothing, so we equal torchvision's default too.
    images = random_images()
    boxes = torch.tensor([[0, 0, 20, 24], [1, 0, 12, 14], [5, 10, 15, 12], [3, 3, 2, 5],
                          [0, 5, 17, 19], [6, 2, 13, 13]])
    ours = A.resized_crop(images, boxes, 32)
    reference = torch.stack([TF.resized_crop(image, *box.tolist(), [32, 32], antialias=True)
                             for image, box in zip(images, boxes)])
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=0)


@pytest.mark.parametrize("ours, theirs", [(A.adjust_brightness, TF.adjust_brightness),
                                          (A.adjust_contrast, TF.adjust_contrast),
                                          (A.adjust_saturation, TF.adjust_saturation)])
def test_blend_adjustments_match_torchvision(ours, theirs):
    images = random_images()
    factors = torch.tensor([0.0, 0.3, 0.9, 1.0, 1.4, 1.8])
    # atol 2e-4: torchvision's grey uses 0.2989 where ITU-R BT.601 (and we) use 0.299.
    torch.testing.assert_close(ours(images, factors), per_image_torchvision(images, theirs, factors),
                               atol=2e-4, rtol=0)


def test_adjust_hue_matches_torchvision():
    images = random_images()
    images[0, :, :4] = 0.5   # some grey pixels (hue undefined)
    shifts = torch.tensor([-0.5, -0.3, 0.0, 0.1, 0.25, 0.5])
    torch.testing.assert_close(A.adjust_hue(images, shifts), per_image_torchvision(images, TF.adjust_hue, shifts),
                               atol=1e-5, rtol=0)


def test_hsv_known_colours_and_round_trip():
    colours = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [0.5, 0.5, 0.5], [0, 0, 0]],
                           dtype=torch.float32).view(6, 3, 1, 1)
    hsv = A.rgb_to_hsv(colours).view(6, 3)
    expected = torch.tensor([[0, 1, 1], [1 / 3, 1, 1], [2 / 3, 1, 1], [1 / 6, 1, 1], [0, 0, 0.5], [0, 0, 0]])
    torch.testing.assert_close(hsv, expected)
    images = random_images()
    torch.testing.assert_close(A.hsv_to_rgb(A.rgb_to_hsv(images)), images, atol=1e-6, rtol=0)


def test_rgb_to_lab_of_reference_colours():
    """CIE L*a*b* (D65) of sRGB colours as tabulated by B. Lindbloom's colour calculator (brucelindbloom.com)."""
    colours = torch.tensor([[1, 1, 1], [0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]],
                           dtype=torch.float32).view(5, 3, 1, 1)
    expected = torch.tensor([[100, 0, 0], [0, 0, 0], [53.2408, 80.0925, 67.2032],
                             [87.7347, -86.1827, 83.1793], [32.2970, 79.1875, -107.8602]])
    torch.testing.assert_close(A.rgb_to_lab(colours).view(5, 3), expected, atol=2e-3, rtol=0)


def test_rgb_to_lab_of_grey_by_hand():
    """Grey 0.5 by hand: linear light ((0.5 + 0.055) / 1.055)^2.4 = Y (a grey has X/Xn = Y = Z/Zn),
    so L = 116 Y^(1/3) - 16 and a = b = 0. A dark grey falls on the linear branch of f."""
    for value in (0.5, 0.02):
        linear = value / 12.92 if value <= 0.04045 else ((value + 0.055) / 1.055) ** 2.4
        f = linear ** (1 / 3) if linear > (6 / 29) ** 3 else linear / (3 * (6 / 29) ** 2) + 4 / 29
        lab = A.rgb_to_lab(torch.full((2, 3, 4, 5), value))
        assert lab.shape == (2, 3, 4, 5)
        torch.testing.assert_close(lab[:, 0], torch.full((2, 4, 5), 116 * f - 16), atol=1e-4, rtol=0)
        torch.testing.assert_close(lab[:, 1:], torch.zeros(2, 2, 4, 5), atol=1e-4, rtol=0)


def test_rgb_to_lab_extremes_are_the_ranges_of_the_cmc_code():
    """The official CMC code normalises a by [-86.183, 98.233] and b by [-107.857, 94.478]: the
    extremes of the sRGB gamut, reached at green / magenta and blue / yellow."""
    grid = torch.linspace(0, 1, 11)
    cube = torch.stack(torch.meshgrid(grid, grid, grid, indexing="ij")).reshape(1, 3, -1, 1)   # 1331 colours
    lab = A.rgb_to_lab(cube)
    for channel, low, high in [(1, -86.183, 98.233), (2, -107.857, 94.478)]:
        assert abs(lab[0, channel].min().item() - low) < 5e-3 and abs(lab[0, channel].max().item() - high) < 5e-3
    assert lab[0, 0].min().item() > -1e-4 and abs(lab[0, 0].max().item() - 100) < 1e-4


def test_grayscale_matches_torchvision():
    images = random_images()
    torch.testing.assert_close(A.rgb_to_grayscale(images), TF.rgb_to_grayscale(images), atol=2e-4, rtol=0)


def test_blur_matches_torchvision_per_image_sigma():
    images = random_images()
    sigmas = torch.tensor([0.1, 0.5, 1.0, 1.5, 2.0, 3.0])
    reference = torch.stack([TF.gaussian_blur(image, [7, 7], [float(s), float(s)]) for image, s in zip(images, sigmas)])
    torch.testing.assert_close(A.blur(images, sigmas, 7), reference, atol=1e-5, rtol=0)
    # The random op with p=1 and a fixed sigma is the same blur.
    fixed = A.gaussian_blur(images, p=1.0, sigma=(1.5, 1.5), kernel_size=5)
    torch.testing.assert_close(fixed, TF.gaussian_blur(images, [5, 5], [1.5, 1.5]), atol=1e-5, rtol=0)


def test_solarize_and_flip_match_torchvision_when_always_applied():
    images = random_images()
    torch.testing.assert_close(A.solarize(images, p=1.0, threshold=0.3), TF.solarize(images, 0.3))
    torch.testing.assert_close(A.horizontal_flip(images, p=1.0), TF.hflip(images))
    assert torch.equal(A.solarize(images, p=0.0), images)
    assert torch.equal(A.horizontal_flip(images, p=0.0), images)


def test_default_kernel_size_is_ten_percent_of_side_and_odd():
    assert A.default_kernel_size(224) == 23   # BYOL / SimCLR ImageNet value
    assert A.default_kernel_size(96) == 9
    assert A.default_kernel_size(32) == 3


# ---------------------------------------------------------------------------------------------
# Statistics of the random ops
def test_crop_boxes_respect_scale_ratio_and_image():
    scale, ratio = (0.08, 1.0), (3 / 4, 4 / 3)
    boxes = A.sample_crop_boxes(4000, 224, 224, scale, ratio, generator=seeded()).double()
    top, left, height, width = boxes.unbind(1)
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + height <= 224).all() and (left + width <= 224).all()
    area = height * width / 224**2
    aspect = width / height
    # Sizes are rounded to whole pixels, hence the small tolerances.
    assert area.min() >= scale[0] - 0.01 and area.max() <= scale[1]
    assert aspect.min() >= ratio[0] - 0.02 and aspect.max() <= ratio[1] + 0.02
    assert area.min() < 0.1 and area.max() > 0.95          # the whole range is used
    assert aspect.min() < 0.78 and aspect.max() > 1.28
    assert abs(torch.log(aspect).mean()) < 0.02             # log-uniform ratio: symmetric around 1


def test_crop_box_statistics_match_torchvision_on_cifar_size():
    # On 32x32 images rounding and rejected attempts matter; compare with torchvision's sampler.
    torch.manual_seed(0)
    theirs = torch.tensor([RandomResizedCrop.get_params(torch.empty(3, 32, 32), [0.08, 1.0], [3 / 4, 4 / 3])
                           for _ in range(4000)], dtype=torch.float64)
    ours = A.sample_crop_boxes(4000, 32, 32, generator=seeded()).double()
    for boxes in (ours, theirs):
        boxes[:, 0] = boxes[:, 2] * boxes[:, 3] / 32**2      # column 0 := area fraction
    # means of area fraction, height, width, top within ~4 standard errors
    assert torch.allclose(ours.mean(0), theirs.mean(0), rtol=0.05)
    assert torch.allclose(ours.std(0), theirs.std(0), rtol=0.07)


def test_crop_falls_back_to_centre_crop_like_torchvision():
    # A square image cannot hold a full-area box with ratio >= 2: every attempt fails.
    boxes = A.sample_crop_boxes(5, 40, 40, scale=(1.0, 1.0), ratio=(2.0, 3.0), generator=seeded())
    # torchvision: w = width, h = round(w / min(ratio)), centred
    assert boxes.tolist() == [[10, 0, 20, 40]] * 5


def test_random_resized_crop_output_and_reproducibility():
    images = random_images(8, 32, 32)
    views = A.random_resized_crop(images, 16, generator=seeded(3))
    assert views.shape == (8, 3, 16, 16) and views.min() >= 0 and views.max() <= 1
    assert torch.equal(views, A.random_resized_crop(images, 16, generator=seeded(3)))
    assert not torch.equal(views, A.random_resized_crop(images, 16, generator=seeded(4)))
    torch.manual_seed(5)   # the global generator works and is reproducible too
    first = A.random_resized_crop(images, 16)
    torch.manual_seed(5)
    assert torch.equal(first, A.random_resized_crop(images, 16))


def binomial_tolerance(p, n):
    return 4 * math.sqrt(p * (1 - p) / n) + 1e-9


def test_flip_frequency_is_p():
    images = random_images(4000, 2, 4)
    flipped = A.horizontal_flip(images, p=0.3, generator=seeded())
    is_flipped = (flipped == images.flip(-1)).flatten(1).all(1)
    is_kept = (flipped == images).flatten(1).all(1)
    assert (is_flipped ^ is_kept).all()
    assert abs(is_flipped.float().mean() - 0.3) < binomial_tolerance(0.3, 4000)


def test_grayscale_equal_channels_and_frequency():
    images = random_images(4000, 2, 2)
    output = A.random_grayscale(images, p=0.2, generator=seeded())
    grey = (output[:, 0] == output[:, 1]).flatten(1).all(1) & (output[:, 1] == output[:, 2]).flatten(1).all(1)
    assert abs(grey.float().mean() - 0.2) < binomial_tolerance(0.2, 4000)
    torch.testing.assert_close(output[grey], A.rgb_to_grayscale(images[grey]).expand(-1, 3, -1, -1))
    assert torch.equal(output[~grey], images[~grey])


def test_color_jitter_probability_and_factor_range():
    images = random_images(2000, 4, 4) * 0.5 + 0.2      # in [0.2, 0.7]: no clipping for factors <= 1.4
    output = A.color_jitter(images, brightness=0.4, contrast=0, saturation=0, hue=0, p=0.6, generator=seeded())
    changed = (output != images).flatten(1).any(1)
    assert abs(changed.float().mean() - 0.6) < binomial_tolerance(0.6, 2000)
    factors = (output / images).flatten(1)              # brightness multiplies every pixel by one factor
    assert torch.allclose(factors.min(1).values, factors.max(1).values, atol=1e-5)
    assert factors.min() >= 0.6 - 1e-5 and factors.max() <= 1.4 + 1e-5
    assert factors.min() < 0.65 and factors.max() > 1.35


def test_color_jitter_hue_keeps_value_and_saturation():
    images = random_images(64, 4, 4)
    output = A.color_jitter(images, brightness=0, contrast=0, saturation=0, hue=0.5, p=1.0, generator=seeded())
    before, after = A.rgb_to_hsv(images), A.rgb_to_hsv(output)
    torch.testing.assert_close(after[:, 1:], before[:, 1:], atol=1e-5, rtol=0)
    assert not torch.allclose(after[:, 0], before[:, 0])


def test_color_jitter_applies_each_adjustment_once_in_a_random_order_per_image(monkeypatch):
    # Replace the four adjustments by ones that append their number as a decimal digit, so the
    # output of each image spells the order in which the adjustments were applied to it.
    for digit, name in enumerate(["adjust_brightness", "adjust_contrast", "adjust_saturation", "adjust_hue"], 1):
        monkeypatch.setattr(A, name, lambda images, factors, digit=digit: images * 10 + digit)
    images = torch.zeros(2000, 3, 1, 1, dtype=torch.float64)
    orders = A.color_jitter(images, p=0.9, generator=seeded())[:, 0, 0, 0].long().tolist()
    jittered = [str(order) for order in orders if order != 0]
    assert abs(len(jittered) / 2000 - 0.9) < binomial_tolerance(0.9, 2000)
    assert all(sorted(order) == ["1", "2", "3", "4"] for order in jittered)   # each once
    counts = torch.tensor([jittered.count(order) for order in set(jittered)], dtype=torch.float)
    assert len(counts) == 24                                 # all 4! orders occur ...
    assert counts.min() > 0.5 * len(jittered) / 24           # ... about equally often


def test_blur_and_solarize_probability():
    images = random_images(1000, 8, 8)
    blurred = A.gaussian_blur(images, p=0.25, generator=seeded())
    changed = (blurred != images).flatten(1).any(1)
    assert abs(changed.float().mean() - 0.25) < binomial_tolerance(0.25, 1000)
    solarized = A.solarize(images, p=0.4, generator=seeded())
    changed = (solarized != images).flatten(1).any(1)
    assert abs(changed.float().mean() - 0.4) < binomial_tolerance(0.4, 1000)
    torch.testing.assert_close(solarized[changed], torch.where(images[changed] >= 0.5, 1 - images[changed],
                                                               images[changed]))



def test_erase_matches_torchvision_and_clips_boxes_at_the_border():
    images = random_images(3, 10, 12)
    boxes = torch.tensor([[2, 3, 4, 5], [-2, 9, 5, 6], [0, 0, 10, 12]])   # inside, past a corner, everything
    ours = A.erase(images, boxes, fill=0.25)
    clipped = [(2, 3, 4, 5), (0, 9, 3, 3), (0, 0, 10, 12)]                # the parts inside the image
    reference = torch.stack([TF.erase(image, *box, torch.tensor(0.25)) for image, box in zip(images, clipped)])
    torch.testing.assert_close(ours, reference)


def _painted(original, out, fill=A.CUTOUT_FILL):
    """Per image: the pixels that cutout painted (all channels changed to `fill`). [B, H, W] bool"""
    return ((out == fill) & (original != fill)).all(dim=1)


def test_cutout_paints_one_clipped_square_per_image():
    images = random_images(500, 12, 12)
    out = A.cutout(images, side=5, generator=seeded())
    painted = _painted(images, out)                                       # [B, H, W]
    assert torch.equal(out[~painted[:, None].expand_as(out)], images[~painted[:, None].expand_as(out)])
    rows, columns = painted.any(dim=2), painted.any(dim=1)                # [B, H], [B, W]
    # the painted pixels are exactly the rectangle rows x columns: one square, clipped at the border
    assert torch.equal(painted, rows[:, :, None] & columns[:, None, :])
    heights, widths = rows.sum(1), columns.sum(1)
    assert heights.min() >= 1 and heights.max() == 5 and widths.max() == 5
    touches_no_border = ~(rows[:, 0] | rows[:, -1] | columns[:, 0] | columns[:, -1])
    assert touches_no_border.any() and (heights[touches_no_border] == 5).all()
    # centres are uniform over the image: squares cut by the top and by the bottom are equally common
    cut_top, cut_bottom = (rows[:, 0] & (heights < 5)).float().mean(), (rows[:, -1] & (heights < 5)).float().mean()
    assert abs(cut_top - 2 / 12) < 0.06 and abs(cut_bottom - 2 / 12) < 0.06


def test_cutout_probability():
    images = random_images(1000, 8, 8)
    changed = _painted(images, A.cutout(images, side=3, p=0.3, generator=seeded())).flatten(1).any(1)
    assert abs(changed.float().mean() - 0.3) < binomial_tolerance(0.3, 1000)


def test_rotate90_turns_each_image_by_90_180_or_270_degrees():
    images = random_images(600, 9, 9)
    out = A.rotate90(images, generator=seeded())
    turns = torch.full((600,), -1)
    for k in (0, 1, 2, 3):
        reference = torch.stack([TF.rotate(image, 90.0 * k) for image in images])   # counter-clockwise
        turns[(out == reference).flatten(1).all(1)] = k
    assert (turns >= 1).all()                                             # never the identity, always a turn
    counts = torch.bincount(turns, minlength=4)[1:].float() / 600
    assert (abs(counts - 1 / 3) < binomial_tolerance(1 / 3, 600)).all()
    kept = ((A.rotate90(images, p=0.25, generator=seeded(1)) == images).flatten(1).all(1)).float().mean()
    assert abs(kept - 0.75) < binomial_tolerance(0.75, 600)


def test_rotate90_and_cutout_check_their_input():
    with pytest.raises(SSLMinimalError, match=r"square images \[B, 3, S, S\], got \[2, 3, 4, 6\]"):
        A.rotate90(torch.rand(2, 3, 4, 6))
    with pytest.raises(SSLMinimalError, match="side must be a positive int"):
        A.cutout(torch.rand(2, 3, 4, 4), side=0)

def test_ops_never_modify_their_input():
    images = random_images(32, 16, 16)
    original = images.clone()
    for op in (A.horizontal_flip, A.color_jitter, A.random_grayscale, A.solarize, A.gaussian_blur,
               A.cutout, A.rotate90):
        op(images, p=1.0)
    A.random_resized_crop(images, 8)
    A.recipe("byol_view2", 16)(images)
    A.multi_crop(images, 16, 8)
    for op in (A.adjust_brightness, A.adjust_contrast, A.adjust_saturation, A.adjust_hue):
        op(images, 0.3)
    A.blur(images, 1.0, 3)
    A.erase(images, torch.tensor([[1, 1, 4, 4]]).expand(32, 4), 0.5)
    assert torch.equal(images, original)


# ---------------------------------------------------------------------------------------------
# Recipes, Augmentation and multi-crop
@pytest.mark.parametrize("name", sorted(A.RECIPES))
def test_recipes_accept_uint8_and_return_float_views_in_range(name):
    images = (random_images(16, 32, 32) * 255).to(torch.uint8)
    augment = A.recipe(name, 32)
    views = augment(images, generator=seeded())
    assert views.shape == (16, 3, 32, 32) and views.dtype == torch.float32
    assert views.min() >= 0 and views.max() <= 1
    # uint8 input is the same as float input divided by 255
    torch.testing.assert_close(views, augment(images.float() / 255, generator=seeded()))
    assert not torch.allclose(views, augment(images, generator=seeded(1)))


def test_recipe_repr_lists_ops_and_paper_values():
    text = repr(A.recipe("simclr", 32))
    assert "random_resized_crop(size=32, scale=(0.08, 1)" in text
    assert "color_jitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1, p=0.8)" in text
    assert "random_grayscale(p=0.2)" in text and "gaussian_blur" not in text   # no blur on CIFAR
    assert "gaussian_blur(p=0.5" in repr(A.recipe("simclr", 224))
    view1, view2 = repr(A.recipe("byol_view1", 224)), repr(A.recipe("byol_view2", 224))
    assert "gaussian_blur(p=1.0" in view1 and "solarize(p=0.0" in view1 and "kernel_size=23" in view1
    assert "gaussian_blur(p=0.1" in view2 and "solarize(p=0.2" in view2
    assert "saturation=0.2" in view1
    local = repr(A.recipe("dino_local", 16))
    assert "random_resized_crop(size=16, scale=(0.05, 0.4)" in local and "gaussian_blur(p=0.5" in local
    assert "solarize" not in local and "color_jitter(brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1, p=0.8)" in local
    assert "hue=0.4, p=1.0" in repr(A.recipe("instdisc"))
    assert "strength" not in repr(A.recipe("simclr", 32, strength=1.0))
    assert "brightness=0.8" in repr(A.recipe("simclr", 32, strength=1.0))
    mae = [repr(step) for step in A.recipe("mae", 32).steps]      # MAE: crop (scale 0.2-1) and flip, nothing else
    assert mae == ["random_resized_crop(size=32, scale=(0.2, 1))", "horizontal_flip(p=0.5)"]


def test_multi_crop_shapes():
    images = random_images(4, 32, 32)
    views = A.multi_crop(images, global_size=32, local_size=12, generator=seeded())
    assert [tuple(v.shape) for v in views] == [(4, 3, 32, 32)] * 2 + [(4, 3, 12, 12)] * 6
    assert all(v.min() >= 0 and v.max() <= 1 for v in views)
    flip_only = A.Augmentation("flip", [A.Step(A.horizontal_flip, p=0.5)])   # ops applied after each crop
    views = A.multi_crop(images, 16, 8, num_global=1, num_local=2, augment=flip_only, generator=seeded())
    assert [v.shape[-1] for v in views] == [16, 8, 8]


# ---------------------------------------------------------------------------------------------
# Mistakes produce one clear SSLMinimalError
@pytest.mark.parametrize("images, expected", [
    (torch.rand(3, 32, 32), r"\[B, 3, H, W\].*got \[3, 32, 32\]"),
    (torch.rand(2, 1, 32, 32), r"\[B, 3, H, W\].*got \[2, 1, 32, 32\]"),
    (torch.zeros(2, 3, 8, 8, dtype=torch.int64), r"uint8 .*or float.*got dtype torch.int64"),
    (torch.rand(2, 3, 8, 8) * 255, r"float in \[0, 1\], got values in \[.*\]; if they are 0..255 divide by 255"),
])
def test_bad_images_are_reported(images, expected):
    with pytest.raises(SSLMinimalError, match=expected):
        A.recipe("simclr", 8)(images)
    with pytest.raises(SSLMinimalError, match=expected):
        A.multi_crop(images, 8, 4)
    for op in (A.horizontal_flip, A.color_jitter, A.random_grayscale, A.solarize):
        with pytest.raises(SSLMinimalError, match=expected):
            op(images)
    with pytest.raises(SSLMinimalError, match=expected):
        A.random_resized_crop(images, 8)
    with pytest.raises(SSLMinimalError, match=expected):
        A.gaussian_blur(images, kernel_size=3)


def test_deterministic_ops_want_float_images():
    with pytest.raises(SSLMinimalError, match=r"float tensor \[B, 3, H, W\].*got torch.uint8"):
        A.adjust_hue(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), 0.1)
    with pytest.raises(SSLMinimalError, match=r"one parameter per image, shape \[2\], got shape \[3\]"):
        A.adjust_brightness(torch.rand(2, 3, 4, 4), torch.ones(3))
    with pytest.raises(SSLMinimalError, match=r"boxes must have shape \[2, 4\].*got \[2, 3\]"):
        A.resized_crop(torch.rand(2, 3, 4, 4), torch.ones(2, 3), 4)
    with pytest.raises(SSLMinimalError, match="kernel_size must be smaller"):
        A.blur(torch.rand(2, 3, 4, 4), 1.0, 9)


def test_unknown_recipe_and_option_list_valid_ones():
    with pytest.raises(SSLMinimalError, match="unknown augmentation recipe 'simclrr'.*simclr.*byol_view1"):
        A.recipe("simclrr", 32)
    with pytest.raises(SSLMinimalError, match="unknown option 'strenght'.*valid options are: scale, strength"):
        A.recipe("simclr", 32, strenght=1.0)


@pytest.mark.parametrize("call, expected", [
    (lambda: A.recipe("simclr", 32, scale=(1.0, 0.2)), r"scale must be \(min, max\) with 0 < min <= max <= 1"),
    (lambda: A.recipe("minimal", 32, scale=(0.2, 1.5)), r"scale must be .*got \(0.2, 1.5\)"),
    (lambda: A.recipe("byol_view2", 32, blur_p=1.5), r"p must be a probability in \[0, 1\], got 1.5"),
    (lambda: A.horizontal_flip(torch.rand(2, 3, 4, 4), p=-0.1), r"p must be a probability"),
    (lambda: A.color_jitter(torch.rand(2, 3, 4, 4), hue=0.7), r"hue strength must be in \[0, 0.5\]"),
    (lambda: A.color_jitter(torch.rand(2, 3, 4, 4), brightness=-1), r"brightness strength must be >= 0"),
    (lambda: A.gaussian_blur(torch.rand(2, 3, 8, 8), kernel_size=4), r"kernel_size must be an odd"),
    (lambda: A.gaussian_blur(torch.rand(2, 3, 8, 8), sigma=(2.0, 0.1)), r"sigma must be \(min, max\)"),
    (lambda: A.random_resized_crop(torch.rand(2, 3, 8, 8), 0), r"size must be a positive int"),
    (lambda: A.sample_crop_boxes(4, 8, 8, ratio=(4 / 3, 3 / 4)), r"ratio must be \(min, max\)"),
])
def test_invalid_parameters_are_reported(call, expected):
    with pytest.raises(SSLMinimalError, match=expected):
        call()


# ---------------------------------------------------------------------------------------------
# augment_batches: whole batches on CPU threads, reproducible for any thread count
def test_augment_batches_gives_the_same_views_for_any_number_of_threads():
    images = (random_images(batch=40, height=16, width=16) * 255).to(torch.uint8)
    augment = A.recipe("simclr", 16)
    one = list(A.augment_batches(augment, images, batch_size=16, threads=1, seed=3))
    two = list(A.augment_batches(augment, images, batch_size=16, threads=2, seed=3))
    assert [view.shape[0] for view in one] == [16, 16, 8]                 # in order, the last one short
    assert all(torch.equal(a, b) for a, b in zip(one, two))
    other_seed = list(A.augment_batches(augment, images, batch_size=16, threads=2, seed=4))
    assert not torch.equal(one[0], other_seed[0])
    assert not torch.equal(one[0], one[1][:16])                           # every batch its own randomness
    # Batch k equals the recipe on that batch with batch k's generator: nothing else is changed.
    seeds = torch.randint(0, 2**62, (3,), generator=seeded(3)).tolist()
    expected = augment(images[16:32], generator=seeded(seeds[1]))
    assert torch.equal(one[1], expected)


def test_augment_batches_restores_the_callers_thread_count():
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        images = torch.rand(8, 3, 8, 8)
        seen = []                     # torch threads of each augmenting thread: 1, so they do not oversubscribe

        def augment(batch, generator):
            seen.append(torch.get_num_threads())
            return A.recipe("minimal", 8)(batch, generator=generator)
        assert len(list(A.augment_batches(augment, images, batch_size=3, threads=2))) == 3
        assert seen == [1, 1, 1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_augment_batches_rejects_bad_arguments():
    augment, images = A.recipe("minimal", 8), torch.rand(4, 3, 8, 8)
    with pytest.raises(SSLMinimalError, match="batch_size must be a positive int"):
        next(A.augment_batches(augment, images, batch_size=0))
    with pytest.raises(SSLMinimalError, match="threads must be a positive int"):
        next(A.augment_batches(augment, images, batch_size=2, threads=0))
    with pytest.raises(SSLMinimalError, match=r"\[B, 3, H, W\]"):
        next(A.augment_batches(augment, torch.rand(4, 8, 8), batch_size=2))


# ---------------------------------------------------------------------------------------------
# The two ways of applying a random op to the picked images: subsets (CPU) or every image + where (GPU)
@pytest.mark.parametrize("name", sorted(A.RECIPES))
def test_changing_every_image_and_keeping_the_picked_gives_the_same_views(name, monkeypatch):
    # On a GPU _apply_to changes every image and keeps the picked ones (no nonzero: no waiting for the
    # device); it must give exactly the views that the CPU's subset path gives from the same draws.
    images = (random_images(batch=24, height=32, width=32) * 255).to(torch.uint8)
    augment = A.recipe(name, 32)
    subsets = augment(images, generator=seeded(5))
    monkeypatch.setattr(A, "CHANGE_EVERY_IMAGE_ON_CPU", True)
    every_image = augment(images, generator=seeded(5))
    torch.testing.assert_close(every_image, subsets, atol=1e-6, rtol=0)


@pytest.mark.parametrize("op, options", [(A.gaussian_blur, {"p": 0.5, "kernel_size": 3}), (A.solarize, {"p": 0.5}),
                                         (A.cutout, {"p": 0.5, "side": 8}), (A.rotate90, {"p": 0.7})])
def test_ops_outside_the_recipes_agree_both_ways_too(op, options, monkeypatch):
    images = random_images(batch=16, height=16, width=16)
    subsets = op(images, **options, generator=seeded(2))
    monkeypatch.setattr(A, "CHANGE_EVERY_IMAGE_ON_CPU", True)
    torch.testing.assert_close(op(images, **options, generator=seeded(2)), subsets, atol=1e-6, rtol=0)
    assert not torch.equal(subsets, images)                 # the op did change some images


def test_minimal_ratio_option_controls_the_crop_shape():
    # Pixel values are their own coordinates (channel 0 = column, channel 1 = row), so a crop's box
    # can be read off its corners: the column span and the row span of a square box are equal.
    side = 64
    coords = torch.arange(side, dtype=torch.float32) / (side - 1)
    image = torch.stack([coords.expand(side, side), coords[:, None].expand(side, side), torch.zeros(side, side)])
    images = image.expand(16, 3, side, side).clone()
    generator = torch.Generator().manual_seed(0)

    def spans(augment):
        views = augment(images, generator=generator)                    # [16, 3, 32, 32]
        width = (views[:, 0, :, -1] - views[:, 0, :, 0]).abs().mean(dim=1)   # column span (flip-proof)
        height = (views[:, 1, -1, :] - views[:, 1, 0, :]).abs().mean(dim=1)
        return width, height

    width, height = spans(A.recipe("minimal", 32, scale=(0.2, 0.6), ratio=(1.0, 1.0)))
    assert torch.allclose(width, height, atol=0.04)
    width, height = spans(A.recipe("minimal", 32, scale=(0.2, 0.6), ratio=(2.0, 2.0)))   # twice as wide as tall
    assert torch.allclose(width / height, torch.full_like(width, 2.0), atol=0.15)
