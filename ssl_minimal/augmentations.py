"""Batched image augmentations, and the augmentation recipes of the papers.

Self-supervised methods learn what stays the same between two random *views* of an image, so the
augmentations define the task. Torchvision's transforms augment one PIL image at a time; here one
call augments a whole batch [B, 3, H, W] on whatever device it lives on, drawing the random
parameters of every image at once (no Python loop over images).

Three layers, each readable on its own:
  * deterministic ops with explicit per-image parameters: `resized_crop(images, boxes, size)`,
    `adjust_brightness/contrast/saturation/hue(images, factors)`, `rgb_to_grayscale`, `blur`, `erase`.
    They equal torchvision's functional ops (tests/test_augmentations.py checks it). `rgb_to_lab`
    (CIE L*a*b*, CMC's two views) has no torchvision counterpart; its test uses reference colours.
  * random ops that sample those parameters per image: `random_resized_crop`, `horizontal_flip`,
    `color_jitter`, `random_grayscale`, `gaussian_blur`, `solarize`, `cutout`, `rotate90` (the last two
    for SimCLR's augmentation ablation) and `multi_crop` (SwAV).
  * `Augmentation`: a named list of random ops; `RECIPES` holds the papers' lists, `recipe(...)`
    builds one. Printing an Augmentation shows every op and its parameters.
  * `augment_batches(augment, images, batch_size, threads)`: many batches on several CPU cores.

Images are uint8 (0..255) or float in [0, 1]; the output is float in [0, 1] (not normalised:
`backbones.Normalize` is the first layer of every encoder). Inputs are never modified. Randomness
comes from `generator` when given, else from torch's global generator of the batch's device (the
training loop saves and restores that state, so a resumed run sees the same augmentations).
Speed: benchmarks/augmentation_throughput.py compares the SimCLR recipe with torchvision's per-image
PIL pipeline; the few in-place updates (`x.mul_(y)` is `x *= y`) below exist because of it.
"""

from __future__ import annotations

import collections
import concurrent.futures
import functools
import inspect
import math
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .checks import SSLMinimalError, check_images, unknown_name

CROP_ATTEMPTS = 10                         # torchvision's RandomResizedCrop: 10 tries, then a centre crop
GRAYSCALE_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601 luma (torchvision writes 0.2989 for 0.299)
BLUR_KERNEL_FRACTION = 0.1                 # SimCLR Appendix A: blur kernel is 10% of the image side
BLUR_SIGMA = (0.1, 2.0)                    # SimCLR Appendix A and BYOL Table 6: sigma uniform in [0.1, 2.0]
MAX_HUE_SHIFT = 0.5                        # hue is an angle in [0, 1); a shift of 0.5 is half a turn
CUTOUT_SIDE = 16                           # DeVries & Taylor 2017: a 16 x 16 square is best on CIFAR-10
CUTOUT_FILL = 0.5                          # grey, about the dataset mean (the paper zeroes normalised pixels)


# ----------------------------------------------------------------------------------------------
# Small helpers: input conversion, option checks, random numbers
def _float_copy(images: torch.Tensor, name: str = "images") -> torch.Tensor:
    """Validate a batch [B, 3, H, W], uint8 or float in [0, 1], and return a float copy in [0, 1]
    that the random ops may change in place (for uint8, dividing by 255 makes the copy)."""
    check_images(images, name)
    return images.float().div_(255) if images.dtype == torch.uint8 else images.clone()


def _checks_images(op: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """Decorator of the random ops: validate `images` and hand the op its own float copy, which it
    may change in place (the caller's tensor is never modified). `op.unchecked` is the bare op, for a
    caller that did this already: Augmentation checks and copies its batch once, because checking and
    copying before every op made the SimCLR recipe ~1.7x slower on CPU (and costs a GPU sync each)."""
    @functools.wraps(op)
    def checked(images: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        with torch.autocast(images.device.type, enabled=False):       # float32 inside a bf16 autocast too
            return op(_float_copy(images), *args, **kwargs)
    checked.unchecked = op
    return checked


def _check_float(images: torch.Tensor, name: str = "images") -> None:
    """The deterministic ops' check: float [B, 3, H, W]. Unlike _float_copy it does not read the
    pixels, so the ops that the random ops call many times per batch stay cheap."""
    if not (isinstance(images, torch.Tensor) and images.dim() == 4 and images.shape[1] == 3
            and images.is_floating_point()):
        given = f"{images.dtype} {list(images.shape)}" if isinstance(images, torch.Tensor) else type(images).__name__
        raise SSLMinimalError(f"{name} must be a float tensor [B, 3, H, W] in [0, 1], got {given}; "
                              f"divide uint8 images by 255 (the random ops accept uint8)")


def _check_options(**options) -> None:
    """Check op options by name, so a bad recipe fails when it is built, not at the first batch."""
    for name, value in options.items():
        if name == "p" and not 0 <= value <= 1:
            raise SSLMinimalError(f"p must be a probability in [0, 1], got {value}")
        if name in ("scale", "ratio", "sigma", "global_scale", "local_scale"):
            low, high = value
            if not 0 < low <= high or (name.endswith("scale") and high > 1):
                upper = " <= 1" if name.endswith("scale") else ""
                raise SSLMinimalError(f"{name} must be (min, max) with 0 < min <= max{upper}, got {value}; "
                                      f"swap the two numbers if min > max")
        if name in ("brightness", "contrast", "saturation") and value < 0:
            raise SSLMinimalError(f"{name} strength must be >= 0, got {value}")
        if name == "hue" and not 0 <= value <= MAX_HUE_SHIFT:
            raise SSLMinimalError(f"hue strength must be in [0, {MAX_HUE_SHIFT}], got {value}")
        if name in ("size", "global_size", "local_size") and not (isinstance(value, int) and value > 0):
            raise SSLMinimalError(f"{name} must be a positive int (output side in pixels), got {value!r}")
        if name == "kernel_size" and value is not None and not (isinstance(value, int) and value % 2 == 1):
            raise SSLMinimalError(f"kernel_size must be an odd positive int or None, got {value!r}")


def _uniform(low: float, high: float, shape: tuple[int, ...], device: torch.device,
             generator: torch.Generator | None) -> torch.Tensor:
    """Numbers uniform in [low, high) drawn from `generator` (else the global one), returned on `device`."""
    source = generator.device if generator is not None else device
    return (low + (high - low) * torch.rand(shape, generator=generator, device=source)).to(device)


def _per_image(values, images: torch.Tensor) -> torch.Tensor:
    """A number or a [B] tensor of per-image parameters -> float tensor [B] on the images' device."""
    values = torch.as_tensor(values, dtype=images.dtype, device=images.device)
    if values.dim() == 0:
        return values.expand(images.shape[0])
    if values.shape != (images.shape[0],):
        raise SSLMinimalError(f"expected one parameter per image, shape [{images.shape[0]}], "
                              f"got shape {list(values.shape)}")
    return values


def _choose(p: float, images: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Which images are picked, each with probability p. bool [B]"""
    return _uniform(0, 1, (images.shape[0],), images.device, generator) < p


CHANGE_EVERY_IMAGE_ON_CPU = False   # tests set it to check that both ways of _apply_to agree


def _apply_to(picked: torch.Tensor, images: torch.Tensor,
              change: Callable[[torch.Tensor, torch.Tensor | slice], torch.Tensor]) -> torch.Tensor:
    """Replace, in place, the images where `picked` (bool [B]) is True by `change` of them.

    `change(some_images, which)` gets the images to change and `which`, what selects their per-image
    parameters (`factors[which]`). On CPU only the picked images are computed (index_select, change,
    index_copy_). On a GPU, finding the picked indices (nonzero) would make the CPU wait for the
    device, 20-odd times per batch; there every image is changed and torch.where keeps the picked
    ones: more arithmetic, which the GPU has, and no waiting.
    """
    if images.device.type != "cpu" or CHANGE_EVERY_IMAGE_ON_CPU:
        return images.copy_(torch.where(picked.view(-1, 1, 1, 1), change(images, slice(None)), images))
    which = picked.nonzero().squeeze(1)                                                    # int64 [<= B]
    return images.index_copy_(0, which, change(images.index_select(0, which), which))


# ----------------------------------------------------------------------------------------------
# Random resized crop (the most important augmentation: SimCLR Fig. 5)
def sample_crop_boxes(batch_size: int, height: int, width: int, scale: tuple[float, float] = (0.08, 1.0),
                      ratio: tuple[float, float] = (3 / 4, 4 / 3), generator: torch.Generator | None = None,
                      device: torch.device | str = "cpu") -> torch.Tensor:
    """Sample boxes (top, left, height, width) in whole pixels, int64 [B, 4], like torchvision.

    Each box covers a fraction of the image area uniform in `scale` and has width/height
    log-uniform in `ratio`. Like torchvision we try CROP_ATTEMPTS boxes and keep the first that
    fits in the image; here all attempts of all images are drawn at once. Images with no fitting
    attempt get a centre crop with the aspect ratio clamped into `ratio`.
    """
    _check_options(scale=scale, ratio=ratio)
    shape = (batch_size, CROP_ATTEMPTS)
    area = height * width * _uniform(scale[0], scale[1], shape, device, generator)            # [B, 10]
    aspect = torch.exp(_uniform(math.log(ratio[0]), math.log(ratio[1]), shape, device, generator))
    box_width = torch.sqrt(area * aspect).round()                                              # [B, 10]
    box_height = torch.sqrt(area / aspect).round()
    fits = (box_width >= 1) & (box_width <= width) & (box_height >= 1) & (box_height <= height)
    first = fits.int().argmax(dim=1, keepdim=True)          # first fitting attempt (0 when none fits)
    box_width = box_width.gather(1, first).squeeze(1)                                          # [B]
    box_height = box_height.gather(1, first).squeeze(1)
    # Fallback: the largest centred box whose aspect ratio is clamped into `ratio`.
    fallback_height, fallback_width = height, width
    if width / height < ratio[0]:
        fallback_height = round(width / ratio[0])
    elif width / height > ratio[1]:
        fallback_width = round(height * ratio[1])
    found = fits.any(dim=1)
    box_width = torch.where(found, box_width, torch.full_like(box_width, fallback_width))
    box_height = torch.where(found, box_height, torch.full_like(box_height, fallback_height))
    # Position: uniform over the places where the box fits (centred for the fallback).
    top = torch.floor(_uniform(0, 1, (batch_size,), device, generator) * (height - box_height + 1))
    left = torch.floor(_uniform(0, 1, (batch_size,), device, generator) * (width - box_width + 1))
    top = torch.where(found, top, (height - box_height) // 2)
    left = torch.where(found, left, (width - box_width) // 2)
    return torch.stack([top, left, box_height, box_width], dim=1).long()


def _sample_positions(start: torch.Tensor, length: torch.Tensor, size: int) -> torch.Tensor:
    """Input coordinate read by each of `size` output pixels when [start, start + length) is resized.

    Pixel centres sit at half-integers (align_corners=False); positions are clamped to the box
    like a resize of the cropped image, so no pixel outside the box leaks in. Returns [B, size].
    """
    centres = torch.arange(size, device=start.device, dtype=start.dtype) + 0.5                 # [size]
    positions = start[:, None] - 0.5 + centres * (length[:, None] / size)                      # [B, size]
    return torch.clamp(positions, min=start[:, None], max=(start + length - 1)[:, None])


def resized_crop(images: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Crop box i = (top, left, height, width) of image i and resize it to size x size (bilinear).

    Equals torchvision's `resized_crop(..., antialias=False)`. No antialiasing: when a box is
    larger than `size` this samples instead of averaging (for CIFAR crops are always upsampled).
    """
    _check_float(images)
    _check_options(size=size)
    batch, _, height, width = images.shape
    if boxes.shape != (batch, 4):
        raise SSLMinimalError(f"boxes must have shape [{batch}, 4] (top, left, height, width), got {list(boxes.shape)}")
    top, left, box_height, box_width = boxes.to(images.device, images.dtype).unbind(dim=1)    # each [B]
    rows = _sample_positions(top, box_height, size)                                            # [B, size]
    columns = _sample_positions(left, box_width, size)
    # grid_sample wants coordinates in [-1, 1], -1 and 1 being the outer edges of the image.
    grid_y = ((rows + 0.5) / height * 2 - 1)[:, :, None].expand(batch, size, size)
    grid_x = ((columns + 0.5) / width * 2 - 1)[:, None, :].expand(batch, size, size)
    grid = torch.stack([grid_x, grid_y], dim=-1)                                               # [B, size, size, 2]
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


@_checks_images
def random_resized_crop(images: torch.Tensor, size: int, scale: tuple[float, float] = (0.08, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3),
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """Crop a random box of each image (area fraction in `scale`, aspect in `ratio`), resize to size.

    Defaults are the Inception-style crop of Szegedy et al. 2015 used by SimCLR. -> [B, 3, size, size]
    """
    boxes = sample_crop_boxes(images.shape[0], images.shape[2], images.shape[3], scale, ratio,
                              generator, images.device)
    return resized_crop(images, boxes, size)


@_checks_images
def horizontal_flip(images: torch.Tensor, p: float = 0.5, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mirror each image left-right with probability p."""
    _check_options(p=p)
    return _apply_to(_choose(p, images, generator), images, lambda some, which: some.flip(-1))


# ----------------------------------------------------------------------------------------------
# Colour: brightness, contrast, saturation, hue, grayscale (SimCLR Appendix A "colour distortion")
# Speed note: on CPU a new tensor of a megabyte or more costs about as much as a few arithmetic
# passes over it (fresh memory pages), so the colour ops below update their own temporaries in
# place (`x.mul_(y)` is `x *= y`). They never modify their inputs.
def rgb_to_grayscale(images: torch.Tensor) -> torch.Tensor:
    """Luma Y = 0.299 R + 0.587 G + 0.114 B (ITU-R BT.601). [B, 3, H, W] -> [B, 1, H, W]"""
    red, green, blue = images.unbind(dim=1)                                                    # [B, H, W]
    weight_red, weight_green, weight_blue = GRAYSCALE_WEIGHTS
    return (red * weight_red).add_(green, alpha=weight_green).add_(blue, alpha=weight_blue).unsqueeze(1)


def _blend(images: torch.Tensor, other: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """factor * images + (1 - factor) * other per image, clipped to [0, 1] (torchvision's blend)."""
    return torch.lerp(other, images, factors.view(-1, 1, 1, 1)).clamp_(0, 1)


def adjust_brightness(images: torch.Tensor, factors) -> torch.Tensor:
    """Multiply image i by factors[i] (0: black, 1: unchanged)."""
    _check_float(images)
    return (images * _per_image(factors, images).view(-1, 1, 1, 1)).clamp_(0, 1)


def adjust_contrast(images: torch.Tensor, factors) -> torch.Tensor:
    """Blend image i with its mean grey level (0: flat grey, 1: unchanged, >1: more contrast)."""
    _check_float(images)
    # The mean of the grey image is the grey of the mean colour (both are linear): no grey image needed.
    weights = torch.tensor(GRAYSCALE_WEIGHTS, dtype=images.dtype, device=images.device)
    mean_grey = (images.mean(dim=(2, 3)) * weights).sum(dim=1).view(-1, 1, 1, 1)              # [B, 1, 1, 1]
    return _blend(images, mean_grey, _per_image(factors, images))


def adjust_saturation(images: torch.Tensor, factors) -> torch.Tensor:
    """Blend image i with its grayscale version (0: grey, 1: unchanged, >1: more vivid)."""
    _check_float(images)
    return _blend(images, rgb_to_grayscale(images), _per_image(factors, images))


def _sixths_value_chroma(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hue in sixths of a turn (in [-1, 5), not yet taken modulo 6), value = largest channel and
    chroma = largest - smallest channel; each [B, H, W]. This is HSV with saturation = chroma / value."""
    red, green, blue = images.unbind(dim=1)                                                    # [B, H, W]
    value = images.amax(dim=1)
    chroma = images.amin(dim=1).neg_().add_(value)    # max - min
    safe_chroma = chroma.clamp(min=1e-12)             # grey pixels (chroma 0) get hue 0, not 0 / 0
    # Position on the colour hexagon measured from the brightest channel (red 0, green 2, blue 4),
    # as PIL and torchvision compute it: start from the formula for blue, then overwrite it where
    # green, then red, is the brightest (lerp_ with a 0/1 weight is a faster torch.where on CPU;
    # torch.eq writing 0/1 straight into a float tensor is 5x faster than making bools and converting).
    sixths = (red - green).div_(safe_chroma).add_(4)
    is_brightest = torch.empty_like(value)                                                     # 0/1 [B, H, W]
    sixths.lerp_((blue - red).div_(safe_chroma).add_(2), torch.eq(green, value, out=is_brightest))
    sixths.lerp_((green - blue).div_(safe_chroma), torch.eq(red, value, out=is_brightest))
    return sixths, value, chroma


def _rgb_from_sixths_value_chroma(sixths: torch.Tensor, value: torch.Tensor, chroma: torch.Tensor) -> torch.Tensor:
    """Inverse of _sixths_value_chroma, for any real `sixths`: channel n (5, 3, 1 for red, green,
    blue) is value - chroma * clamp(min(k, 4 - k), 0, 1) with k = (n + sixths) mod 6. -> [B, 3, H, W]"""
    n = torch.tensor([5.0, 3.0, 1.0], dtype=sixths.dtype, device=sixths.device).view(1, 3, 1, 1)
    k = sixths.unsqueeze(1) + n                                                                # [B, 3, H, W]
    k -= (k / 6).floor_().mul_(6)                     # k mod 6, in [0, 6)
    ramp = k.sub_(2).abs_().neg_().add_(2).clamp_(0, 1)   # min(k, 4 - k) = 2 - |k - 2|, clamped
    return ramp.mul_(-chroma.unsqueeze(1)).add_(value.unsqueeze(1))


def rgb_to_hsv(images: torch.Tensor) -> torch.Tensor:
    """RGB -> HSV, all channels in [0, 1] (hue is a fraction of a turn). [B, 3, H, W] -> [B, 3, H, W]"""
    _check_float(images)
    sixths, value, chroma = _sixths_value_chroma(images)
    hue = sixths.div_(6)
    saturation = chroma / value.clamp(min=1e-12)
    return torch.stack([hue.sub_(hue.floor()), saturation, value], dim=1)


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """HSV -> RGB (chroma = saturation * value). [B, 3, H, W] -> [B, 3, H, W]"""
    hue, saturation, value = hsv.unbind(dim=1)
    return _rgb_from_sixths_value_chroma(6 * hue, value, saturation * value)


def adjust_hue(images: torch.Tensor, shifts) -> torch.Tensor:
    """Rotate the hue of image i by shifts[i] turns (in [-0.5, 0.5]; 0: unchanged).
    Same as RGB -> HSV, add the shift to H, HSV -> RGB: value and chroma do not change."""
    _check_float(images)
    sixths, value, chroma = _sixths_value_chroma(images)
    sixths += 6 * _per_image(shifts, images).view(-1, 1, 1)
    return _rgb_from_sixths_value_chroma(sixths, value, chroma)


# CIE L*a*b* (CMC's views: lightness L versus colour ab). sRGB primaries and the D65 white point as in
# IEC 61966-2-1; the matrix is the sRGB -> XYZ matrix tabulated by B. Lindbloom (brucelindbloom.com),
# whose rows sum to the white point, so white maps to exactly (100, 0, 0).
SRGB_TO_XYZ = ((0.4124564, 0.3575761, 0.1804375),
               (0.2126729, 0.7151522, 0.0721750),
               (0.0193339, 0.1191920, 0.9503041))
D65_WHITE = (0.95047, 1.0, 1.08883)        # XYZ of the D65 reference white, Y = 1
LAB_EPSILON = (6 / 29) ** 3                 # CIE 1976: below this f(t) is linear instead of a cube root


def rgb_to_lab(images: torch.Tensor) -> torch.Tensor:
    """sRGB in [0, 1] -> CIE L*a*b* (D65 white). [B, 3, H, W] -> [B, 3, H, W] with channels L, a, b.

    L (lightness) lies in [0, 100]; a (green-red) and b (blue-yellow) span about [-86.2, 98.2] and
    [-107.9, 94.5] for sRGB colours. Steps: undo the sRGB gamma (linear light), multiply by
    SRGB_TO_XYZ, divide by the white point, then with f(t) = t^(1/3) (t^(1/3) -> t / (3 (6/29)^2) + 4/29
    below LAB_EPSILON): L = 116 f(Y) - 16, a = 500 (f(X) - f(Y)), b = 200 (f(Y) - f(Z)).
    Batched, on the images' device; differentiable.
    """
    _check_float(images)
    linear = torch.where(images <= 0.04045, images / 12.92, ((images + 0.055) / 1.055) ** 2.4)   # [B, 3, H, W]
    matrix = torch.tensor(SRGB_TO_XYZ, dtype=images.dtype, device=images.device)
    white = torch.tensor(D65_WHITE, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    with torch.autocast(images.device.type, enabled=False):       # float32 inside a bf16 autocast too
        xyz = torch.einsum("ij,bjhw->bihw", matrix, linear) / white                              # X/Xn, Y/Yn, Z/Zn
    # The clamp keeps the cube root's gradient finite where torch.where picks the linear branch.
    f = torch.where(xyz > LAB_EPSILON, xyz.clamp(min=LAB_EPSILON) ** (1 / 3), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    fx, fy, fz = f.unbind(dim=1)                                                                 # [B, H, W]
    return torch.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], dim=1)


@_checks_images
def color_jitter(images: torch.Tensor, brightness: float = 0.4, contrast: float = 0.4, saturation: float = 0.4,
                 hue: float = 0.1, p: float = 0.8, generator: torch.Generator | None = None) -> torch.Tensor:
    """With probability p per image, change brightness, contrast, saturation and hue, in random order.

    Like torchvision's ColorJitter: the brightness/contrast/saturation factors are uniform in
    [max(0, 1 - strength), 1 + strength] and the hue shift is uniform in [-hue, hue]. The order
    of the four adjustments is drawn per image, as BYOL (Table 6) describes ("the order ... is
    randomly selected for each patch"): we loop over the 4 positions x 4 adjustments, each time
    adjusting the images that have that adjustment at that position.
    """
    _check_options(brightness=brightness, contrast=contrast, saturation=saturation, hue=hue, p=p)
    batch, device = images.shape[0], images.device
    jittered = _uniform(0, 1, (batch,), device, generator) < p                                 # [B] bool
    adjustments = [  # (adjust, per-image factors [B], strength)
        (adjust_brightness, _uniform(max(0, 1 - brightness), 1 + brightness, (batch,), device, generator), brightness),
        (adjust_contrast, _uniform(max(0, 1 - contrast), 1 + contrast, (batch,), device, generator), contrast),
        (adjust_saturation, _uniform(max(0, 1 - saturation), 1 + saturation, (batch,), device, generator), saturation),
        (adjust_hue, _uniform(-hue, hue, (batch,), device, generator), hue)]
    order = _uniform(0, 1, (batch, 4), device, generator).argsort(dim=1)   # [B, 4] a permutation per image
    for position in range(4):
        adjustment_here = torch.where(jittered, order[:, position], -1)      # [B], -1: image not jittered
        for index, (adjust, factors, strength) in enumerate(adjustments):
            if strength > 0:
                due = adjustment_here == index                                # [B] bool: the images due
                _apply_to(due, images, lambda some, which: adjust(some, factors[which]))
    return images


@_checks_images
def random_grayscale(images: torch.Tensor, p: float = 0.2, generator: torch.Generator | None = None) -> torch.Tensor:
    """Replace each image by its grayscale version (3 equal channels) with probability p."""
    _check_options(p=p)
    return _apply_to(_choose(p, images, generator), images, lambda some, which: rgb_to_grayscale(some).expand_as(some))


# ----------------------------------------------------------------------------------------------
# Blur and solarisation (SimCLR on ImageNet; BYOL's asymmetric views)
def default_kernel_size(image_size: int) -> int:
    """The odd kernel size nearest to 10% of the image side (SimCLR): 23 for 224, 3 for 32."""
    return max(3, 2 * round((BLUR_KERNEL_FRACTION * image_size - 1) / 2) + 1)


def blur(images: torch.Tensor, sigmas, kernel_size: int) -> torch.Tensor:
    """Gaussian blur of image i with standard deviation sigmas[i] (pixels), reflect padding.

    The 2-D Gaussian is separable: one vertical and one horizontal 1-D convolution. A grouped
    convolution with one group per (image, channel) gives every image its own kernel.
    """
    _check_float(images)
    _check_options(kernel_size=kernel_size)
    batch, channels, height, width = images.shape
    if batch == 0:
        return images.clone()
    radius = kernel_size // 2
    if radius >= min(height, width):
        raise SSLMinimalError(f"kernel_size must be smaller than twice the image side ({height}x{width}) "
                              f"for reflect padding, got {kernel_size}")
    offsets = torch.arange(kernel_size, dtype=images.dtype, device=images.device) - radius     # [k]
    sigmas = _per_image(sigmas, images)
    kernels = torch.exp(-offsets**2 / (2 * sigmas[:, None] ** 2))                              # [B, k]
    kernels = (kernels / kernels.sum(dim=1, keepdim=True)).repeat_interleave(channels, dim=0)  # [B*3, k]
    groups = batch * channels
    flat = F.pad(images.reshape(1, groups, height, width), (radius,) * 4, mode="reflect")
    flat = F.conv2d(flat, kernels.view(groups, 1, kernel_size, 1), groups=groups)             # vertical
    flat = F.conv2d(flat, kernels.view(groups, 1, 1, kernel_size), groups=groups)             # horizontal
    return flat.view(batch, channels, height, width)


@_checks_images
def gaussian_blur(images: torch.Tensor, p: float = 0.5, sigma: tuple[float, float] = BLUR_SIGMA,
                  kernel_size: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """With probability p per image, blur with sigma uniform in `sigma` (SimCLR: p 0.5, sigma 0.1-2.0).

    kernel_size None: `default_kernel_size` of the image (10% of its side, odd). Only the chosen
    images are convolved.
    """
    _check_options(p=p, sigma=sigma, kernel_size=kernel_size)
    kernel_size = kernel_size or default_kernel_size(min(images.shape[2:]))
    chosen = _choose(p, images, generator)
    sigmas = _uniform(sigma[0], sigma[1], (images.shape[0],), images.device, generator)          # [B]
    return _apply_to(chosen, images, lambda some, which: blur(some, sigmas[which], kernel_size))


@_checks_images
def solarize(images: torch.Tensor, p: float = 0.2, threshold: float = 0.5,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """With probability p per image, invert pixels >= threshold: x -> 1 - x (BYOL Table 6)."""
    _check_options(p=p)
    return _apply_to(_choose(p, images, generator), images,
                     lambda some, which: torch.where(some >= threshold, 1 - some, some))


# ----------------------------------------------------------------------------------------------
# Cutout and rotation: two of the transformations of SimCLR's Fig. 4-5 ablation (Chen et al. 2020)
def erase(images: torch.Tensor, boxes: torch.Tensor, fill: float = CUTOUT_FILL) -> torch.Tensor:
    """Paint box i = (top, left, height, width) of image i with the grey level `fill` (boxes may
    reach past the border; only the part inside the image is painted). Like torchvision's `erase`."""
    _check_float(images)
    batch, _, height, width = images.shape
    if boxes.shape != (batch, 4):
        raise SSLMinimalError(f"boxes must have shape [{batch}, 4] (top, left, height, width), got {list(boxes.shape)}")
    top, left, box_height, box_width = boxes.to(images.device).unbind(dim=1)                   # each [B]
    rows = torch.arange(height, device=images.device)
    columns = torch.arange(width, device=images.device)
    inside_rows = (rows >= top[:, None]) & (rows < (top + box_height)[:, None])                # [B, H]
    inside_columns = (columns >= left[:, None]) & (columns < (left + box_width)[:, None])      # [B, W]
    mask = inside_rows[:, None, :, None] & inside_columns[:, None, None, :]                    # [B, 1, H, W]
    return images.masked_fill(mask, fill)


@_checks_images
def cutout(images: torch.Tensor, side: int = CUTOUT_SIDE, p: float = 1.0, fill: float = CUTOUT_FILL,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """With probability p per image, paint a side x side square grey (DeVries & Taylor 2017, "Improved
    Regularization of Convolutional Neural Networks with Cutout", arXiv 1708.04552): the square is
    centred on a uniformly random pixel and clipped at the border, so it may cover less than side^2."""
    _check_options(p=p)
    if not (isinstance(side, int) and side > 0):
        raise SSLMinimalError(f"side must be a positive int (the square's side in pixels), got {side!r}")
    batch, _, height, width = images.shape
    centre_row = torch.floor(_uniform(0, 1, (batch,), images.device, generator) * height).long()   # [B]
    centre_column = torch.floor(_uniform(0, 1, (batch,), images.device, generator) * width).long()
    boxes = torch.stack([centre_row - side // 2, centre_column - side // 2,
                         torch.full_like(centre_row, side), torch.full_like(centre_row, side)], dim=1)
    return _apply_to(_choose(p, images, generator), images, lambda some, which: erase(some, boxes[which], fill))


@_checks_images
def rotate90(images: torch.Tensor, p: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """With probability p per image, rotate it by 90, 180 or 270 degrees counter-clockwise (chosen
    uniformly), SimCLR's "rotate {90, 180, 270}" (Chen et al. 2020, Fig. 4). Images must be square."""
    _check_options(p=p)
    if images.shape[2] != images.shape[3]:
        raise SSLMinimalError(f"rotate90 needs square images [B, 3, S, S], got {list(images.shape)}")
    chosen = _uniform(0, 1, (images.shape[0],), images.device, generator) < p                 # [B] bool
    turns = torch.floor(_uniform(1, 4, (images.shape[0],), images.device, generator)).long()  # [B] in {1, 2, 3}
    for quarter_turns in (1, 2, 3):
        _apply_to(chosen & (turns == quarter_turns), images, lambda some, which: some.rot90(quarter_turns, dims=(2, 3)))
    return images


# ----------------------------------------------------------------------------------------------
# Augmentation: a named, printable list of random ops
class Step:
    """One op with its fixed options, e.g. Step(horizontal_flip, p=0.5); options are checked now."""

    def __init__(self, op: Callable[..., torch.Tensor], **options):
        _check_options(**options)
        self.op, self.options = op, options

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Run the op on a float batch in [0, 1] that the caller checked and owns (see _checks_images)."""
        return getattr(self.op, "unchecked", self.op)(images, **self.options, generator=generator)

    def __repr__(self) -> str:
        def show(value):
            return f"({', '.join(f'{v:.4g}' for v in value)})" if isinstance(value, tuple) else repr(value)
        return f"{self.op.__name__}({', '.join(f'{k}={show(v)}' for k, v in self.options.items())})"


class Augmentation(nn.Module):
    """A named sequence of random ops: `augment(images)` -> float views in [0, 1], same batch size.

    Accepts uint8 (0..255) or float [0, 1] images [B, 3, H, W]; `print(augment)` lists the ops.
    """

    def __init__(self, name: str, steps: list[Step], reference: str = ""):
        super().__init__()
        self.name, self.steps, self.reference = name, list(steps), reference

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        images = _float_copy(images)      # checked once; the steps may then change it in place
        # Always float32, also inside fit's bf16 autocast: the blur's convolution would return bf16.
        with torch.autocast(images.device.type, enabled=False):
            for step in self.steps:
                images = step(images, generator)
        return images

    def __repr__(self) -> str:
        source = f"  # {self.reference}" if self.reference else ""
        lines = [f"Augmentation({self.name!r}){source}"] + [f"  {i}. {step}" for i, step in enumerate(self.steps, 1)]
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Recipes of the papers. Each takes the output image size and keyword overrides.
def instdisc(image_size: int = 32, scale: tuple[float, float] = (0.2, 1.0), jitter: float = 0.4,
             grayscale_p: float = 0.2, flip_p: float = 0.5) -> Augmentation:
    """Wu et al. 2018, "Unsupervised Feature Learning via Non-Parametric Instance Discrimination",
    arXiv 1805.01978. Values from the authors' code (lemniscate.pytorch): RandomResizedCrop scale
    (0.2, 1), RandomGrayscale p=0.2, ColorJitter(0.4, 0.4, 0.4, 0.4) always applied, horizontal flip."""
    return Augmentation("instdisc", [
        Step(random_resized_crop, size=image_size, scale=scale),
        Step(random_grayscale, p=grayscale_p),
        Step(color_jitter, brightness=jitter, contrast=jitter, saturation=jitter, hue=jitter, p=1.0),
        Step(horizontal_flip, p=flip_p)], "Wu et al. 2018, arXiv 1805.01978")


def invaspread(image_size: int = 32, scale: tuple[float, float] = (0.2, 1.0), jitter: float = 0.4,
               grayscale_p: float = 0.2, flip_p: float = 0.5) -> Augmentation:
    """Ye et al. 2019, "Unsupervised Embedding Learning via Invariant and Spreading Instance Feature",
    arXiv 1904.03436. Same family as InstDisc; the authors' code (Unsupervised_Embedding_Learning)
    uses RandomResizedCrop scale (0.2, 1), ColorJitter(0.4, 0.4, 0.4, 0.4), RandomGrayscale p=0.2, flip."""
    return Augmentation("invaspread", [
        Step(random_resized_crop, size=image_size, scale=scale),
        Step(color_jitter, brightness=jitter, contrast=jitter, saturation=jitter, hue=jitter, p=1.0),
        Step(random_grayscale, p=grayscale_p),
        Step(horizontal_flip, p=flip_p)], "Ye et al. 2019, arXiv 1904.03436")


def simclr(image_size: int = 32, scale: tuple[float, float] = (0.08, 1.0), strength: float = 0.5,
           jitter_p: float = 0.8, grayscale_p: float = 0.2, blur_p: float | None = None) -> Augmentation:
    """Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual Representations",
    arXiv 2002.05709, Appendix A: random crop (scale 0.08-1) + resize, flip, colour distortion of
    strength s = ColorJitter(0.8s, 0.8s, 0.8s, 0.2s) with p=0.8 then grayscale p=0.2; s=1 on
    ImageNet, s=0.5 on CIFAR-10 (Appendix B.9). Gaussian blur (p=0.5, sigma 0.1-2.0, kernel 10% of
    the side) is used for ImageNet-size images only: blur_p None means 0.5 if image_size >= 224
    else 0 (CIFAR-10 has no blur); pass blur_p=0.5 e.g. for STL-10."""
    blur_p = (0.5 if image_size >= 224 else 0.0) if blur_p is None else blur_p
    steps = [Step(random_resized_crop, size=image_size, scale=scale),
             Step(horizontal_flip, p=0.5),
             Step(color_jitter, brightness=0.8 * strength, contrast=0.8 * strength,
                  saturation=0.8 * strength, hue=0.2 * strength, p=jitter_p),
             Step(random_grayscale, p=grayscale_p)]
    if blur_p > 0:
        steps.append(Step(gaussian_blur, p=blur_p, sigma=BLUR_SIGMA, kernel_size=default_kernel_size(image_size)))
    return Augmentation("simclr", steps, "Chen et al. 2020, arXiv 2002.05709, Appendix A")


def _byol(view: int, image_size: int, scale: tuple[float, float], blur_p: float, solarize_p: float) -> Augmentation:
    return Augmentation(f"byol_view{view}", [
        Step(random_resized_crop, size=image_size, scale=scale),
        Step(horizontal_flip, p=0.5),
        Step(color_jitter, brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1, p=0.8),
        Step(random_grayscale, p=0.2),
        Step(gaussian_blur, p=blur_p, sigma=BLUR_SIGMA, kernel_size=default_kernel_size(image_size)),
        Step(solarize, p=solarize_p, threshold=0.5)], f"Grill et al. 2020, arXiv 2006.07733, Table 6, view {view}")


def byol_view1(image_size: int = 32, scale: tuple[float, float] = (0.08, 1.0), blur_p: float = 1.0,
               solarize_p: float = 0.0) -> Augmentation:
    """Grill et al. 2020, "Bootstrap Your Own Latent", arXiv 2006.07733, Table 6, first view T:
    crop scale 0.08-1, flip 0.5, colour jitter (brightness 0.4, contrast 0.4, saturation 0.2, hue
    0.1) p=0.8 in random order, grayscale 0.2, Gaussian blur p=1.0 (sigma 0.1-2.0, kernel 10% of the
    side: 23 at 224, 3 at 32), solarisation p=0.0."""
    return _byol(1, image_size, scale, blur_p, solarize_p)


def byol_view2(image_size: int = 32, scale: tuple[float, float] = (0.08, 1.0), blur_p: float = 0.1,
               solarize_p: float = 0.2) -> Augmentation:
    """Grill et al. 2020, arXiv 2006.07733, Table 6, second view T': as view 1 but Gaussian blur
    p=0.1 and solarisation (x -> 1 - x for x >= 0.5) p=0.2. The asymmetry is the paper's."""
    return _byol(2, image_size, scale, blur_p, solarize_p)


def dino_local(image_size: int = 16, scale: tuple[float, float] = (0.05, 0.4), blur_p: float = 0.5) -> Augmentation:
    """Caron et al. 2021, "Emerging Properties in Self-Supervised Vision Transformers", arXiv 2104.14294,
    main_dino.py DataAugmentationDINO: DINO's small local crops (its two global crops are BYOL's two
    views at scale 0.4-1). Crop scale 0.05-0.4 resized to `image_size` (96 px for 224 px images; 16 px
    for 32 px ones), flip 0.5, colour jitter (0.4, 0.4, 0.2, 0.1) p=0.8, grayscale 0.2, Gaussian blur
    p=0.5, no solarisation."""
    return Augmentation("dino_local", [
        Step(random_resized_crop, size=image_size, scale=scale),
        Step(horizontal_flip, p=0.5),
        Step(color_jitter, brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1, p=0.8),
        Step(random_grayscale, p=0.2),
        Step(gaussian_blur, p=blur_p, sigma=BLUR_SIGMA, kernel_size=default_kernel_size(image_size))],
        "Caron et al. 2021, arXiv 2104.14294, main_dino.py (local crops)")


def minimal(image_size: int = 32, scale: tuple[float, float] = (0.08, 1.0),
            ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> Augmentation:
    """Crop + flip only, no colour: the ablation of SimCLR (Chen et al. 2020) Fig. 5-6, where crops
    alone let the network match views by their colour histograms. Also the supervised baseline's
    augmentation; `ratio=(1, 1)` keeps the crops square (on `shapes` a stretched circle is an ellipse,
    another class)."""
    return Augmentation("minimal", [Step(random_resized_crop, size=image_size, scale=scale, ratio=ratio),
                                    Step(horizontal_flip, p=0.5)], "ablation, Chen et al. 2020, Fig. 5")


def moco_v1(image_size: int = 32, scale: tuple[float, float] = (0.2, 1.0), jitter: float = 0.4,
            grayscale_p: float = 0.2, flip_p: float = 0.5) -> Augmentation:
    """He et al. 2019, "Momentum Contrast for Unsupervised Visual Representation Learning", arXiv
    1911.05722, Sec. 4 "Data augmentation": crop (scale 0.2-1) + resize, grayscale p=0.2, colour
    jitter, flip; the official code (facebookresearch/moco) uses ColorJitter(0.4, 0.4, 0.4, 0.4)
    always applied, i.e. InstDisc's recipe."""
    steps = instdisc(image_size, scale, jitter, grayscale_p, flip_p).steps
    return Augmentation("moco_v1", steps, "He et al. 2019, arXiv 1911.05722 (= InstDisc's recipe)")


def moco_v2(image_size: int = 32, scale: tuple[float, float] = (0.2, 1.0), jitter_p: float = 0.8,
            grayscale_p: float = 0.2, blur_p: float = 0.5) -> Augmentation:
    """Chen, Fan, Girshick, He 2020, "Improved Baselines with Momentum Contrastive Learning", arXiv
    2003.04297: MoCo v1's crop plus SimCLR's stronger colour distortion and Gaussian blur. Official
    code: crop scale (0.2, 1), ColorJitter(0.4, 0.4, 0.4, 0.1) p=0.8, grayscale p=0.2, blur
    sigma 0.1-2.0 p=0.5, flip. The blur kernel is 10% of the side (3 px at 32 px)."""
    return Augmentation("moco_v2", [
        Step(random_resized_crop, size=image_size, scale=scale),
        Step(color_jitter, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1, p=jitter_p),
        Step(random_grayscale, p=grayscale_p),
        Step(gaussian_blur, p=blur_p, sigma=BLUR_SIGMA, kernel_size=default_kernel_size(image_size)),
        Step(horizontal_flip, p=0.5)], "Chen et al. 2020, arXiv 2003.04297")


def cpc(image_size: int = 32, scale: tuple[float, float] = ((256 / 300) ** 2, 1.0),
        grayscale_p: float = 1.0) -> Augmentation:
    """van den Oord et al. 2018, "Representation Learning with Contrastive Predictive Coding", arXiv
    1807.03748, Sec. 3.3: a 256 px crop of a 300 px image (area fraction (256/300)^2 ~ 0.73, here as
    a random resized crop), horizontal flip p=0.5, converted to greyscale. (The paper's extra
    60/64 px sub-crop of each patch is left out.)"""
    return Augmentation("cpc", [
        Step(random_resized_crop, size=image_size, scale=scale),
        Step(horizontal_flip, p=0.5),
        Step(random_grayscale, p=grayscale_p)], "van den Oord et al. 2018, arXiv 1807.03748, Sec. 3.3")


def cmc(image_size: int = 32, scale: tuple[float, float] = (0.2, 1.0)) -> Augmentation:
    """Tian et al. 2019, "Contrastive Multiview Coding", arXiv 1906.05849: the official code's
    ImageNet Lab pipeline is a random resized crop (scale 0.2-1) and a flip; no colour jitter,
    because the two views *are* the colour channels (L vs ab) of the same crop."""
    return Augmentation("cmc", [Step(random_resized_crop, size=image_size, scale=scale),
                                Step(horizontal_flip, p=0.5)], "Tian et al. 2019, arXiv 1906.05849")


def mae(image_size: int = 32, scale: tuple[float, float] = (0.2, 1.0), flip_p: float = 0.5) -> Augmentation:
    """He et al. 2021, "Masked Autoencoders Are Scalable Vision Learners", arXiv 2111.06377, Appendix
    A.1 (Table 8: "RandomResizedCrop") and the official code (facebookresearch/mae, main_pretrain.py):
    random resized crop with scale (0.2, 1) and a horizontal flip, nothing else; masking is the
    augmentation that matters. (The official crop resizes bicubically; ours, like every recipe here, bilinearly.)"""
    return Augmentation("mae", [Step(random_resized_crop, size=image_size, scale=scale),
                                Step(horizontal_flip, p=flip_p)], "He et al. 2021, arXiv 2111.06377, Appendix A.1")


def clip(image_size: int = 32, scale: tuple[float, float] = (0.8, 1.0)) -> Augmentation:
    """Radford et al. 2021, "Learning Transferable Visual Models From Natural Language Supervision", arXiv
    2103.00020, Sec. 2.5: "A random square crop from resized images is the only data augmentation used
    during training." No flip and no colour change: the captions say "left", "right" and colours. The
    scale (0.8, 1) is ours (the paper does not give one), kept large so the captions stay true."""
    return Augmentation("clip", [Step(random_resized_crop, size=image_size, scale=scale, ratio=(1.0, 1.0))],
                        "Radford et al. 2021, arXiv 2103.00020, Sec. 2.5")


RECIPES: dict[str, Callable[..., Augmentation]] = {
    "instdisc": instdisc, "invaspread": invaspread, "simclr": simclr,
    "byol_view1": byol_view1, "byol_view2": byol_view2, "dino_local": dino_local, "minimal": minimal,
    "moco_v1": moco_v1, "moco_v2": moco_v2, "cpc": cpc, "cmc": cmc, "mae": mae, "clip": clip}


def recipe(name: str, image_size: int = 32, **overrides) -> Augmentation:
    """Build the recipe `name` for images of side `image_size`, e.g. recipe("simclr", 32, strength=1.0)."""
    if name not in RECIPES:
        raise unknown_name("augmentation recipe", name, RECIPES)
    options = list(inspect.signature(RECIPES[name]).parameters)[1:]
    for key in overrides:
        if key not in options:
            raise SSLMinimalError(f"unknown option {key!r} for augmentation recipe {name!r}; "
                                  f"valid options are: {', '.join(options)}")
    return RECIPES[name](image_size, **overrides)


def multi_crop(images: torch.Tensor, global_size: int, local_size: int, num_global: int = 2, num_local: int = 6,
               global_scale: tuple[float, float] = (0.14, 1.0), local_scale: tuple[float, float] = (0.05, 0.14),
               augment: Callable[..., torch.Tensor] | None = None,
               generator: torch.Generator | None = None) -> list[torch.Tensor]:
    """Multi-crop (Caron et al. 2020, SwAV, arXiv 2006.09882, Sec. 3.2): num_global large views and
    num_local small low-resolution views of every image. Defaults: SwAV's 2x224 (scale 0.14-1) +
    6x96 (scale 0.05-0.14). After its crop every view goes through `augment`; None means SwAV's
    flip + colour distortion (ColorJitter(0.8, 0.8, 0.8, 0.2) p=0.8, grayscale p=0.2; SwAV adds
    Gaussian blur p=0.5 on ImageNet - pass your own `augment` to include it).
    Returns [global views [B, 3, global_size, global_size]..., local views [B, 3, local_size, local_size]...].
    """
    images = _float_copy(images)
    _check_options(global_size=global_size, local_size=local_size, global_scale=global_scale, local_scale=local_scale)
    if augment is None:
        augment = Augmentation("swav", [
            Step(horizontal_flip, p=0.5),
            Step(color_jitter, brightness=0.8, contrast=0.8, saturation=0.8, hue=0.2, p=0.8),
            Step(random_grayscale, p=0.2)], "Caron et al. 2020, arXiv 2006.09882")
    crops = [(global_size, global_scale)] * num_global + [(local_size, local_scale)] * num_local
    with torch.autocast(images.device.type, enabled=False):          # float32 inside a bf16 autocast too
        return [augment(random_resized_crop.unchecked(images, size, scale, generator=generator), generator=generator)
                for size, scale in crops]


# ----------------------------------------------------------------------------------------------
# Many batches on several CPU cores: threads that each augment whole batches, like DataLoader workers
def augment_batches(augment: Callable[..., torch.Tensor], images: torch.Tensor, batch_size: int,
                    threads: int | None = None, seed: int = 0) -> Iterator[torch.Tensor]:
    """Yield `augment` of images[0:batch_size], images[batch_size:2 * batch_size], ... in order.

    A batch of 32 x 32 images is a few hundred short tensor ops, too short for torch's intra-op
    threads to split well (on 2 cores: 0.85-1.5x one thread). A DataLoader's workers instead give
    each process whole batches; here each of `threads` Python threads (default:
    torch.get_num_threads()) augments whole batches with one torch thread, which on 2 cores gave
    1.3-1.9x one thread (benchmarks/augmentation_throughput.py, BENCHMARKS.md section 3). Torch ops
    release Python's GIL, so the threads run at once. Batch k draws its randomness from its own
    generator, seeded from `seed` and k, so the views are the same for any number of threads.
    `augment` is an Augmentation (any callable taking `generator=`). CPU images only (on a GPU one
    call per batch is already fast). The caller's torch thread count is restored when the
    iteration ends.
    """
    check_images(images)
    if images.device.type != "cpu":
        raise SSLMinimalError(f"augment_batches runs on CPU threads, got images on {images.device}; "
                              f"on a GPU call the augmentation on each batch directly")
    if not (isinstance(batch_size, int) and batch_size > 0):
        raise SSLMinimalError(f"batch_size must be a positive int, got {batch_size!r}")
    threads = torch.get_num_threads() if threads is None else threads
    if not (isinstance(threads, int) and threads > 0):
        raise SSLMinimalError(f"threads must be a positive int (CPU threads to augment with), got {threads!r}")
    starts = range(0, images.shape[0], batch_size)
    seeds = torch.randint(0, 2**62, (len(starts),), generator=torch.Generator().manual_seed(seed)).tolist()

    def one_batch(k: int) -> torch.Tensor:
        # Sets this thread's count (and torch's default for new threads, restored below).
        torch.set_num_threads(1)
        generator = torch.Generator().manual_seed(seeds[k])
        return augment(images[starts[k]:starts[k] + batch_size], generator=generator)

    caller_threads = torch.get_num_threads()
    pool = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="augment")
    try:
        pending = collections.deque()
        for k in range(len(starts)):
            pending.append(pool.submit(one_batch, k))
            if len(pending) > 2 * threads:          # keep every thread busy, at most 2 batches ahead each
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        torch.set_num_threads(caller_threads)
