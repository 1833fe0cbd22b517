"""One figure per augmentation recipe: a few real CIFAR-10 test images, each followed by random views.

    SSL_DATA_DIR=/work/shared/data python benchmarks/make_figures.py [--output figures] [--images 4] [--views 8]

Writes OUTPUT/augmentations_<recipe>.png for every recipe in ssl_minimal.augmentations.RECIPES
(the embedded "shapes" images are used when CIFAR-10 is not on disk). Views are seeded, so the
figures are the same on every run.
"""

from __future__ import annotations

import argparse

import ssl_minimal
from ssl_minimal import augmentations, visualize

IMAGE_INDICES_SEED = 3   # which test images are shown (one per class, classes in order)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="figures")
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--views", type=int, default=8)
    args = parser.parse_args()
    name = ssl_minimal.data.course_dataset()
    test = ssl_minimal.data.load(name, "test")
    picked = test.subset(10 * args.images, seed=IMAGE_INDICES_SEED)
    # first image of each of the first `images` classes: varied content
    rows = [int((picked.labels == c).nonzero()[0]) for c in range(args.images)]
    images = picked.images[rows]
    for recipe in augmentations.RECIPES:
        augment = augmentations.recipe(recipe, images.shape[-1])
        figure = visualize.plot_augmentation_grid(images, augment, num_views=args.views, seed=0)
        ops = ", ".join(step.op.__name__ for step in augment.steps)
        figure.suptitle(f"recipe '{recipe}' ({augment.reference}) on {name}\n{ops}", fontsize=9)
        figure.tight_layout(rect=(0, 0, 1, 0.93))
        path = visualize.save_figure(figure, f"{args.output}/augmentations_{recipe}.png")
        print(path)


if __name__ == "__main__":
    main()
