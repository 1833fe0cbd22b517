"""Pictures for the course: training curves, embeddings, image grids, retrieval and augmentations.

Every function returns a matplotlib `Figure` and shows nothing by itself. In a notebook the figure
appears when it is the last value of a cell (or with `display(fig)`); in a script save it:

    fig = plot_history(history)
    save_figure(fig, "figures/instdisc_curves.png")

The figures are closed in pyplot right after they are built, so they never pile up in pyplot's
list of open figures (no "more than 20 figures" warning in a loop) and a notebook shows each one
once, not twice.

Images are [N, 3, H, W] tensors, uint8 in 0..255 or float in [0, 1], as everywhere in ssl_minimal.
"""

from __future__ import annotations

import inspect
import math
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Callable, Mapping, Sequence

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F

from .checks import SSLMinimalError, check_features, check_images, unknown_name


def _choose_backend() -> None:
    """Draw to files (Agg) when nothing chose a backend and there is no screen (a server, CI).

    Notebooks (ipykernel sets MPLBACKEND), an explicit `matplotlib.use(...)` and desktops keep theirs."""
    try:
        chosen = matplotlib.get_backend(auto_select=False)          # matplotlib >= 3.10
    except TypeError:
        chosen = matplotlib.rcParams._get_backend_or_none()         # older matplotlib
    has_screen = sys.platform in ("darwin", "win32") or bool(os.environ.get("DISPLAY")
                                                              or os.environ.get("WAYLAND_DISPLAY"))
    if chosen is None and not os.environ.get("MPLBACKEND") and not has_screen:
        matplotlib.use("Agg")


_choose_backend()
import matplotlib.pyplot as plt  # noqa: E402  (after the backend choice)
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import PercentFormatter  # noqa: E402

FIGURE_DPI = 150                 # save_figure's resolution (the course's figures/ folder)
CELL_INCHES = 1.3                # side of one image in image grids
MAX_GRID_IMAGES = 400            # more axes than this make matplotlib very slow; pass a slice
LOSS_SMOOTHING_POINTS = 50       # plot_history draws a running mean of the loss over ~len/50 steps
EMBEDDING_METHODS = ("umap", "tsne", "pca")
UMAP_NEIGHBOURS = 15             # umap-learn's default n_neighbors
TSNE_PERPLEXITY = 30.0           # scikit-learn's default perplexity
QUERY_COLOUR = "tab:blue"
MATCH_COLOUR = "tab:green"
MISMATCH_COLOUR = "tab:red"
UNLABELLED_COLOUR = "lightgrey"


# ----------------------------------------------------------------------------------------------
# Helpers
def _new_figure(rows: int, columns: int, figsize: tuple[float, float], **options) -> tuple[Figure, np.ndarray]:
    """A figure with a rows x columns array of axes, already closed in pyplot (see the module docstring)."""
    figure, axes = plt.subplots(rows, columns, figsize=figsize, squeeze=False, **options)
    plt.close(figure)
    return figure, axes


def _as_image(image: torch.Tensor) -> np.ndarray:
    """One image [3, H, W] (uint8 or float in [0, 1]) -> numpy [H, W, 3] float in [0, 1] for imshow."""
    image = image.detach().cpu()
    image = image.float() / 255 if image.dtype == torch.uint8 else image.float()
    return image.clamp(0, 1).permute(1, 2, 0).numpy()


def _show(axis, image: torch.Tensor, title: str | None = None, border: str | None = None,
          border_width: float = 3.0) -> None:
    """Draw an image without ticks; an optional coloured frame marks queries and (mis)matches."""
    axis.imshow(_as_image(image), interpolation="nearest")
    axis.set_xticks([])
    axis.set_yticks([])
    for spine in axis.spines.values():
        spine.set_visible(border is not None)
        if border is not None:
            spine.set_edgecolor(border)
            spine.set_linewidth(border_width)
    if title:
        axis.set_title(title, fontsize=7)


def _check_image_count(count: int, what: str) -> None:
    if count > MAX_GRID_IMAGES:
        raise SSLMinimalError(f"{what} would draw {count} images; at most {MAX_GRID_IMAGES} fit in one figure, "
                              f"pass a slice such as images[:64]")


def _class_name(label: int, classes: Sequence[str] | None) -> str:
    if label < 0:
        return "unlabelled"
    return classes[label] if classes is not None and label < len(classes) else str(label)


FIGURES_DIR_VARIABLE = "SSL_FIGURES_DIR"   # where notebooks save figures; the test run points it at a temporary folder
SMOKE_FIGURES_DIR = Path(tempfile.gettempdir()) / "ssl_minimal_smoke_figures"   # smoke runs' figures, unless told


def figures_dir(budget=None) -> Path:
    """The folder notebooks save their figures in: $SSL_FIGURES_DIR if set; else, at the smoke budget, a
    temporary folder (SMOKE_FIGURES_DIR, announced in one printed line), so that a smoke run never
    overwrites the committed figures/ made at the cpu or gpu budget; else the repository's figures/
    (found from the notebooks/ folder or the repository root), else ./figures.

    budget: a budget name or `Budget`; None reads $SSL_BUDGET as `get_budget` does. The repository's
    conftest.py sets SSL_FIGURES_DIR to a temporary folder for the whole test run."""
    budget_name = getattr(budget, "name", budget) or os.environ.get("SSL_BUDGET", "auto")
    if os.environ.get(FIGURES_DIR_VARIABLE):
        folder = Path(os.environ[FIGURES_DIR_VARIABLE])
    elif str(budget_name).lower() == "smoke":
        folder = SMOKE_FIGURES_DIR
        print(f"smoke budget: figures are saved in {folder}, not in the course's figures/ "
              f"(set {FIGURES_DIR_VARIABLE} to choose the folder)")
    elif Path("../figures").is_dir() and Path("../notebooks").is_dir():
        folder = Path("../figures")
    else:
        folder = Path("figures")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def save_figure(figure: Figure, path: str | Path, dpi: int = FIGURE_DPI) -> Path:
    """Save `figure` as a PNG (or any format matplotlib knows from the suffix), creating parent folders."""
    if not isinstance(figure, Figure):
        raise SSLMinimalError(f"save_figure expects a matplotlib Figure (what the plot_* functions return), "
                              f"got {type(figure).__name__}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


# ----------------------------------------------------------------------------------------------
# Training curves
def _field(history, key: str):
    """history[key] for a dict, history.key for a History object; None when absent."""
    if isinstance(history, Mapping):
        return history.get(key)
    return getattr(history, key, None)


def _running_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Mean of the last `window` values at every point (shorter at the start)."""
    cumulative = np.cumsum(np.insert(values, 0, 0.0))
    ends = np.arange(1, len(values) + 1)
    starts = np.maximum(ends - window, 0)
    return (cumulative[ends] - cumulative[starts]) / (ends - starts)


def plot_history(history, baseline: float | None = None) -> Figure:
    """Loss curve, kNN accuracy curve and (when recorded) the learning rate of one training run.

    history: the `History` returned by `fit`, or a dict with its keys: `step` (or `epoch`) and
    `loss`; optionally `knn_step` (or `knn_epoch`) with `knn_accuracy`, `lr`, and
    `baseline_knn_accuracy`. `baseline` (default: the history's `baseline_knn_accuracy`, the
    same encoder at random initialisation) is drawn as a dashed line: SSL must beat it.
    """
    loss = _field(history, "loss")
    x_name = "step" if _field(history, "step") else "epoch"
    x = _field(history, x_name)
    if loss is None or x is None:
        raise SSLMinimalError("history must have 'loss' and 'step' (or 'epoch') entries (a History from fit, or "
                              f"a dict with those keys), got {type(history).__name__} without them")
    if len(loss) == 0 or len(loss) != len(x):
        raise SSLMinimalError(f"history needs one loss per {x_name}: got {len(loss)} losses and {len(x)} "
                              f"{x_name} values" + ("; train for at least one step first" if not loss else ""))
    knn_accuracy = list(_field(history, "knn_accuracy") or [])
    knn_x_name = "knn_step" if _field(history, "knn_step") else "knn_epoch"
    knn_x = list(_field(history, knn_x_name) or [])
    if len(knn_accuracy) != len(knn_x):
        raise SSLMinimalError(f"history has {len(knn_accuracy)} knn_accuracy values but {len(knn_x)} {knn_x_name} "
                              f"values; they must have the same length")
    baseline = _field(history, "baseline_knn_accuracy") if baseline is None else baseline
    lr = list(_field(history, "lr") or [])
    panels = ["loss"]
    if knn_accuracy or baseline is not None:
        panels.append("knn")
    if len(lr) == len(x):                      # a History records one learning rate per step
        panels.append("lr")

    figure, axes = _new_figure(1, len(panels), figsize=(4.5 * len(panels), 3.4), layout="constrained")
    axes = dict(zip(panels, axes[0]))

    loss = np.asarray(loss, dtype=float)
    window = max(1, len(loss) // LOSS_SMOOTHING_POINTS)
    axis = axes["loss"]
    if window > 1:
        axis.plot(x, loss, color="tab:blue", alpha=0.3, linewidth=0.8, label="per step")
        axis.plot(x, _running_mean(loss, window), color="tab:blue", label=f"running mean ({window} steps)")
        axis.legend(fontsize=8)
    else:
        axis.plot(x, loss, color="tab:blue", marker="." if len(loss) < 30 else None)
    axis.set(xlabel=x_name, ylabel="training loss", title="loss")

    if "knn" in axes:
        axis = axes["knn"]
        if knn_accuracy:
            axis.plot(knn_x, knn_accuracy, marker="o", color="tab:orange", label="kNN top-1")
        if baseline is not None:
            axis.axhline(baseline, linestyle="--", color="grey", label=f"random init ({baseline:.1%})")
        axis.yaxis.set_major_formatter(PercentFormatter(1.0))
        axis.set(xlabel=knn_x_name.removeprefix("knn_"), ylabel="kNN top-1 accuracy", title="kNN accuracy (k=200)")
        axis.legend(fontsize=8)

    if "lr" in axes:
        axes["lr"].plot(x, lr, color="tab:green")
        axes["lr"].set(xlabel=x_name, ylabel="learning rate", title="learning rate")
    return figure


# ----------------------------------------------------------------------------------------------
# Embeddings
def _known_options(reducer: type, options: dict) -> dict:
    """The options, after checking that `reducer`'s constructor accepts each of them."""
    valid = inspect.signature(reducer).parameters
    for key in options:
        if key not in valid:
            raise SSLMinimalError(f"unknown option {key!r} for {reducer.__name__}; valid options are: "
                                  f"{', '.join(name for name in valid if name != 'self')}")
    return options


def _reduce_to_2d(features: torch.Tensor, method: str, seed: int, options: dict) -> np.ndarray:
    """[n, D] -> [n, 2] with UMAP (McInnes et al. 2018, arXiv 1802.03426), t-SNE (van der Maaten &
    Hinton 2008) or PCA. Features are L2-normalised first, so distances follow cosine similarity,
    the geometry the kNN classifier and the contrastive losses use."""
    points = F.normalize(features.detach().float().cpu(), dim=1)
    n = points.shape[0]
    if method == "pca":
        centred = points - points.mean(dim=0)
        _, _, right = torch.linalg.svd(centred, full_matrices=False)              # right: [min(n, D), D]
        return (centred @ right[:2].T).numpy()
    if method == "tsne":
        from sklearn.manifold import TSNE
        options = {"perplexity": min(TSNE_PERPLEXITY, (n - 1) / 3), **options}   # perplexity < number of points
        return TSNE(n_components=2, init="pca", random_state=seed, **_known_options(TSNE, options)).fit_transform(
            points.numpy())
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=ImportWarning)       # "Tensorflow not installed; ParametricUMAP..."
        warnings.filterwarnings("ignore", message=".*n_jobs.*")        # a fixed random_state makes UMAP single-threaded
        import umap   # slow to import (numba): only when asked for
        options = {"n_neighbors": min(UMAP_NEIGHBOURS, n - 1), **options}
        reducer = umap.UMAP(n_components=2, random_state=seed, **_known_options(umap.UMAP, options))
        return reducer.fit_transform(points.numpy())


def plot_embedding(features: torch.Tensor, labels: torch.Tensor | None = None, classes: Sequence[str] | None = None,
                   method: str = "umap", max_points: int = 2000, seed: int = 0, title: str | None = None,
                   **reducer_options) -> Figure:
    """2-D map of features [N, D], one colour per class: do the classes form clusters?

    method: "umap" (about 10 s for 2,000 points on 2 CPU cores, plus ~15 s of numba compilation the
    first time in a process), "tsne" (about a minute for 2,000 points) or "pca" (instant, linear,
    shows less). At most `max_points` random samples (fixed by `seed`) are drawn. Labels of -1
    (unlabelled) are drawn in grey. Extra keyword arguments go to `umap.UMAP` or
    `sklearn.manifold.TSNE` (e.g. n_neighbors=30, perplexity=50).
    """
    check_features(features, "features")
    if method not in EMBEDDING_METHODS:
        raise unknown_name("embedding method", method, EMBEDDING_METHODS)
    if labels is not None:
        if not isinstance(labels, torch.Tensor) or labels.shape != (features.shape[0],) or labels.is_floating_point():
            given = list(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
            raise SSLMinimalError(f"labels must be an integer tensor of shape [{features.shape[0]}] (one per feature "
                                  f"row), got {given}")
        if classes is not None and labels.numel() and int(labels.max()) >= len(classes):
            raise SSLMinimalError(f"labels go up to {int(labels.max())} but only {len(classes)} class names were given")
    minimum = 5
    if features.shape[0] < minimum or features.shape[1] < 2:
        raise SSLMinimalError(f"plot_embedding needs at least {minimum} points with at least 2 dimensions, got "
                              f"features {list(features.shape)}")
    generator = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(features.shape[0], generator=generator)[:max_points].sort().values
    if method == "pca" and reducer_options:
        raise SSLMinimalError(f"method='pca' takes no options, got {sorted(reducer_options)}")
    xy = _reduce_to_2d(features[chosen.to(features.device)], method, seed, reducer_options)         # [n, 2]
    point_labels = (labels.cpu()[chosen] if labels is not None else torch.zeros(len(chosen), dtype=torch.long)).numpy()

    figure, axes = _new_figure(1, 1, figsize=(6.5, 5.0), layout="constrained")
    axis = axes[0, 0]
    present = sorted(set(point_labels.tolist()))
    num_colours = max(present) + 1 if present and max(present) >= 0 else 1
    colours = plt.get_cmap("tab10" if num_colours <= 10 else "tab20" if num_colours <= 20 else "turbo")
    point_size = max(2.0, 30.0 / math.sqrt(len(xy) / 100))
    for label in present:
        mask = point_labels == label
        colour = UNLABELLED_COLOUR if label < 0 else colours(label % colours.N if num_colours <= 20
                                                             else label / max(num_colours - 1, 1))
        axis.scatter(xy[mask, 0], xy[mask, 1], s=point_size, color=colour, label=_class_name(label, classes),
                     alpha=0.8, linewidths=0)
    if labels is not None and len(present) <= 20:
        axis.legend(fontsize=7, markerscale=2, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    axis.set_xticks([])
    axis.set_yticks([])
    axis.set_title(title or f"{method.upper() if method != 'tsne' else 't-SNE'} of {len(xy)} feature vectors")
    return figure


# ----------------------------------------------------------------------------------------------
# Images
def image_grid(images: torch.Tensor, nrow: int = 8, titles: Sequence[str] | None = None,
               title: str | None = None) -> Figure:
    """Images [N, 3, H, W] (uint8 or float in [0, 1]) in a grid with `nrow` images per row (as
    torchvision.utils.make_grid), each with an optional title."""
    check_images(images, "images")
    count = images.shape[0]
    if count == 0:
        raise SSLMinimalError("images is empty (shape [0, 3, H, W]); pass at least one image")
    if not isinstance(nrow, int) or nrow < 1:
        raise SSLMinimalError(f"nrow (images per row) must be a positive integer, got {nrow!r}")
    if titles is not None and len(titles) != count:
        raise SSLMinimalError(f"titles must have one entry per image ({count}), got {len(titles)}")
    _check_image_count(count, "image_grid")
    columns = min(nrow, count)
    rows = math.ceil(count / columns)
    figure, axes = _new_figure(rows, columns, figsize=(CELL_INCHES * columns, CELL_INCHES * rows
                                                       + (0.25 * rows if titles else 0)))
    for index, axis in enumerate(axes.flat):
        if index < count:
            _show(axis, images[index], titles[index] if titles is not None else None)
        else:
            figure.delaxes(axis)                       # the last row may be shorter
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return figure


def plot_neighbours(query_images: torch.Tensor, neighbours: torch.Tensor,
                    gallery_images: torch.Tensor | None = None, query_labels: torch.Tensor | None = None,
                    neighbour_labels: torch.Tensor | None = None, gallery_labels: torch.Tensor | None = None,
                    similarities: torch.Tensor | None = None, classes: Sequence[str] | None = None) -> Figure:
    """Retrieval grid: one row per query, the query in the first (blue-framed) column, its k
    neighbours to the right, most similar first.

    neighbours: either the neighbour images [M, k, 3, H, W], or integer indices [M, k] into
    `gallery_images` [N, 3, H, W] (what `evaluate.nearest_neighbours` returns; then
    `gallery_labels` [N] gives the neighbours' labels). With `query_labels` [M] and neighbour
    labels ([M, k], or via the gallery), each neighbour is framed green when its label matches the
    query's and red when it does not. `similarities` [M, k] are written above the neighbours.
    """
    check_images(query_images, "query_images")
    num_queries = query_images.shape[0]
    if not isinstance(neighbours, torch.Tensor):
        raise SSLMinimalError(f"neighbours must be a tensor: images [M, k, 3, H, W] or indices [M, k], "
                              f"got {type(neighbours).__name__}")
    if neighbours.dim() == 2 and not neighbours.is_floating_point() and neighbours.dtype != torch.uint8:
        if gallery_images is None:
            raise SSLMinimalError("neighbours are indices [M, k], so pass gallery_images [N, 3, H, W] too "
                                  "(the images the indices point into)")
        check_images(gallery_images, "gallery_images")
        if neighbours.numel() and (neighbours.min() < 0 or neighbours.max() >= gallery_images.shape[0]):
            raise SSLMinimalError(f"neighbour indices must be in [0, {gallery_images.shape[0] - 1}] (rows of "
                                  f"gallery_images), got values in [{int(neighbours.min())}, {int(neighbours.max())}]")
        indices = neighbours.cpu()
        neighbour_images = gallery_images[indices.to(gallery_images.device)]    # [M, k, 3, H, W]
        if neighbour_labels is None and gallery_labels is not None:
            neighbour_labels = gallery_labels.cpu()[indices]                     # [M, k]
    elif neighbours.dim() == 5 and neighbours.shape[2] == 3:
        neighbour_images = neighbours
        check_images(neighbour_images.flatten(0, 1), "neighbours (as images)")
    else:
        raise SSLMinimalError(f"neighbours must be images [M, k, 3, H, W] or integer indices [M, k], "
                              f"got {neighbours.dtype} {list(neighbours.shape)}")
    if neighbour_images.shape[0] != num_queries:
        raise SSLMinimalError(f"there are {num_queries} query images but neighbours for "
                              f"{neighbour_images.shape[0]} queries ({list(neighbours.shape)}); one row per query")
    k = neighbour_images.shape[1]
    for name, value, shape in (("query_labels", query_labels, (num_queries,)),
                               ("neighbour_labels", neighbour_labels, (num_queries, k)),
                               ("similarities", similarities, (num_queries, k))):
        if value is not None and tuple(value.shape) != shape:
            raise SSLMinimalError(f"{name} must have shape {list(shape)}, got {list(value.shape)}")
    _check_image_count(num_queries * (k + 1), "plot_neighbours")

    figure, axes = _new_figure(num_queries, k + 1, figsize=(CELL_INCHES * (k + 1), (CELL_INCHES + 0.2) * num_queries))
    for row in range(num_queries):
        query_label = int(query_labels[row]) if query_labels is not None else None
        query_title = "query" + (f"\n{_class_name(query_label, classes)}" if query_label is not None else "")
        _show(axes[row, 0], query_images[row], query_title, border=QUERY_COLOUR, border_width=4.0)
        for column in range(k):
            lines, border = [], None
            if similarities is not None:
                lines.append(f"{float(similarities[row, column]):.2f}")
            if neighbour_labels is not None:
                label = int(neighbour_labels[row, column])
                lines.append(_class_name(label, classes))
                if query_label is not None:
                    border = MATCH_COLOUR if label == query_label else MISMATCH_COLOUR
            _show(axes[row, column + 1], neighbour_images[row, column], "\n".join(lines) or None, border=border)
    figure.tight_layout()
    return figure


def plot_augmentation_grid(images: torch.Tensor, augmentation: Callable[[torch.Tensor], torch.Tensor] | str,
                           num_views: int = 8, seed: int | None = 0) -> Figure:
    """What the network sees: one row per image, the original then `num_views` random views.

    augmentation: any callable mapping a batch [B, 3, H, W] (uint8 or float in [0, 1]) to float views
    in [0, 1] (e.g. an `augmentations.Augmentation`), or a recipe name such as "simclr". With a `seed`
    the views are the same every time, and torch's global random state is left as it was.
    """
    check_images(images, "images")
    if images.shape[0] == 0:
        raise SSLMinimalError("images is empty (shape [0, 3, H, W]); pass at least one image")
    if not isinstance(num_views, int) or num_views < 1:
        raise SSLMinimalError(f"num_views must be a positive integer, got {num_views!r}")
    if isinstance(augmentation, str):
        from . import augmentations
        augmentation = augmentations.recipe(augmentation, images.shape[-1])
    if not callable(augmentation):
        raise SSLMinimalError(f"augmentation must be a callable (e.g. augmentations.recipe('simclr', 32)) or a "
                              f"recipe name, got {type(augmentation).__name__}")
    _check_image_count(images.shape[0] * (num_views + 1), "plot_augmentation_grid")

    cuda_devices = [images.device] if images.device.type == "cuda" else []
    views = []
    with torch.random.fork_rng(devices=cuda_devices, enabled=seed is not None), torch.no_grad():
        if seed is not None:
            torch.manual_seed(seed)
        for _ in range(num_views):
            view = augmentation(images)                                            # [B, 3, h, w]
            if not isinstance(view, torch.Tensor) or view.dim() != 4 or view.shape[:2] != images.shape[:2]:
                given = list(view.shape) if isinstance(view, torch.Tensor) else type(view).__name__
                raise SSLMinimalError(f"augmentation must return a batch [{images.shape[0]}, 3, h, w] for images "
                                      f"{list(images.shape)}, got {given}")
            check_images(view, "augmentation output")
            views.append(view)

    rows, columns = images.shape[0], num_views + 1
    figure, axes = _new_figure(rows, columns, figsize=(CELL_INCHES * columns, CELL_INCHES * rows + 0.3))
    for row in range(rows):
        _show(axes[row, 0], images[row], "original" if row == 0 else None, border=QUERY_COLOUR)
        for column, view in enumerate(views, start=1):
            _show(axes[row, column], view[row], f"view {column}" if row == 0 else None)
    figure.tight_layout()
    return figure


def plot_attention_maps(images: torch.Tensor, maps: torch.Tensor, overlay: bool = False) -> Figure:
    """One row per image: the image, then what [CLS] attends to in each head (DINO's Fig. 3), e.g.
    `plot_attention_maps(images, ssl_minimal.methods.dino.attention_maps(model, images))`. maps: [N, heads, g, g],
    drawn over the image's area (each patch a block); overlay=True draws them over the image itself."""
    check_images(images, "images")
    if not (isinstance(maps, torch.Tensor) and maps.dim() == 4 and maps.shape[0] == images.shape[0]):
        given = list(maps.shape) if isinstance(maps, torch.Tensor) else type(maps).__name__
        raise SSLMinimalError(f"maps must be a tensor [N, heads, g, g] with one entry per image ({images.shape[0]}), "
                              f"got {given}; compute them with ssl_minimal.methods.dino.attention_maps(method, images)")
    _check_image_count(images.shape[0] * (maps.shape[1] + 1), "plot_attention_maps")
    rows, columns = images.shape[0], maps.shape[1] + 1
    figure, axes = _new_figure(rows, columns, figsize=(CELL_INCHES * columns, CELL_INCHES * rows + 0.3))
    side = images.shape[-1]
    for row in range(rows):
        _show(axes[row, 0], images[row], "image" if row == 0 else None)
        for head in range(maps.shape[1]):
            axis = axes[row, head + 1]
            if overlay:
                axis.imshow(_as_image(images[row]))
            axis.imshow(maps[row, head].detach().float().cpu().numpy(), cmap="inferno", interpolation="nearest",
                        extent=(-0.5, side - 0.5, side - 0.5, -0.5), alpha=0.6 if overlay else 1.0)
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(f"head {head}", fontsize=7)
    figure.tight_layout()
    return figure
