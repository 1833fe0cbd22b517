"""Figures: the right panels, images and colours, drawn from the data given; bad inputs fail clearly."""

from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure

from ssl_minimal import visualize
from ssl_minimal.checks import SSLMinimalError
from ssl_minimal.training import History


def images_in(figure):
    return [image for axis in figure.axes for image in axis.images]


def flip_everything(images):
    """A deterministic 'augmentation': horizontal flip, as float in [0, 1]."""
    images = images.float() / 255 if images.dtype == torch.uint8 else images
    return images.flip(-1)


# ----------------------------------------------------------------------------------------------
# plot_history
def test_plot_history_from_history_object():
    history = History(step=[1, 2, 3, 4], epoch=[0.5, 1.0, 1.5, 2.0], loss=[4.0, 3.0, 2.5, 2.0],
                      lr=[0.1, 0.1, 0.05, 0.0], knn_step=[0, 2, 4], knn_epoch=[0.0, 1.0, 2.0],
                      knn_accuracy=[0.2, 0.4, 0.5], baseline_knn_accuracy=0.2)
    figure = visualize.plot_history(history)
    assert isinstance(figure, Figure)
    loss_axis, knn_axis, lr_axis = figure.axes
    assert loss_axis.lines[0].get_ydata().tolist() == [4.0, 3.0, 2.5, 2.0]
    assert knn_axis.lines[0].get_xdata().tolist() == [0, 2, 4]             # kNN plotted against steps
    assert knn_axis.lines[0].get_ydata().tolist() == [0.2, 0.4, 0.5]
    dashed = [line for line in knn_axis.lines if line.get_linestyle() == "--"]
    assert len(dashed) == 1 and dashed[0].get_ydata()[0] == 0.2          # the random-init baseline
    assert lr_axis.lines[0].get_ydata().tolist() == [0.1, 0.1, 0.05, 0.0]


def test_plot_history_from_dict_with_epochs_and_baseline_argument():
    history = {"step": [1, 2, 3], "loss": [3.0, 2.0, 1.0], "knn_epoch": [0.0, 1.0], "knn_accuracy": [0.1, 0.3]}
    figure = visualize.plot_history(history, baseline=0.15)
    assert len(figure.axes) == 2                                        # no lr recorded: no lr panel
    knn_axis = figure.axes[1]
    assert knn_axis.get_xlabel() == "epoch"
    assert knn_axis.lines[0].get_xdata().tolist() == [0.0, 1.0]
    assert [line.get_ydata()[0] for line in knn_axis.lines if line.get_linestyle() == "--"] == [0.15]
    # a long run also shows a running mean of the noisy loss
    long_loss = list(np.linspace(5, 1, 500) + np.random.default_rng(0).normal(0, 0.2, 500))
    figure = visualize.plot_history({"step": list(range(500)), "loss": long_loss})
    assert len(figure.axes) == 1 and len(figure.axes[0].lines) == 2
    smoothed = figure.axes[0].lines[1].get_ydata()
    assert np.std(np.diff(smoothed)) < np.std(np.diff(long_loss)) / 3


def test_plot_history_errors():
    with pytest.raises(SSLMinimalError, match="'loss' and 'step'"):
        visualize.plot_history({"knn_accuracy": [0.1]})
    with pytest.raises(SSLMinimalError, match="3 losses and 2 step"):
        visualize.plot_history({"step": [1, 2], "loss": [1.0, 2.0, 3.0]})
    with pytest.raises(SSLMinimalError, match="2 knn_accuracy values but 1 knn_step"):
        visualize.plot_history({"step": [1], "loss": [1.0], "knn_step": [0], "knn_accuracy": [0.1, 0.2]})


# ----------------------------------------------------------------------------------------------
# plot_embedding
def two_clusters(n=30, dim=8):
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(n, dim, generator=generator) * 0.1
    labels = torch.arange(n) % 2
    features[labels == 1] += 3.0
    return features, labels


def test_plot_embedding_pca_one_colour_per_class_and_separated():
    features, labels = two_clusters()
    labels[0] = -1                                                       # one unlabelled point, in grey
    figure = visualize.plot_embedding(features, labels, classes=["cat", "dog"], method="pca")
    (axis,) = figure.axes
    assert [text.get_text() for text in axis.get_legend().get_texts()] == ["unlabelled", "cat", "dog"]
    unlabelled, cats, dogs = axis.collections
    assert len(unlabelled.get_offsets()) == 1 and len(cats.get_offsets()) == 14 and len(dogs.get_offsets()) == 15
    assert np.allclose(unlabelled.get_facecolors()[0], to_rgba(visualize.UNLABELLED_COLOUR, 0.8))
    # the clusters are far apart along the first principal component
    cat_x, dog_x = cats.get_offsets()[:, 0], dogs.get_offsets()[:, 0]
    assert max(cat_x) < min(dog_x) or max(dog_x) < min(cat_x)


def test_plot_embedding_subsamples_and_tsne_runs():
    features, labels = two_clusters(n=40)
    figure = visualize.plot_embedding(features, labels, method="tsne", max_points=25, max_iter=250)
    assert sum(len(collection.get_offsets()) for collection in figure.axes[0].collections) == 25


@pytest.mark.slow   # umap-learn compiles with numba on first use (~15 s)
def test_plot_embedding_umap_runs():
    features, labels = two_clusters(n=20)
    figure = visualize.plot_embedding(features, labels, method="umap", n_epochs=20)
    assert sum(len(collection.get_offsets()) for collection in figure.axes[0].collections) == 20


def test_plot_embedding_errors():
    features, labels = two_clusters()
    with pytest.raises(SSLMinimalError, match="unknown embedding method 'lda'"):
        visualize.plot_embedding(features, labels, method="lda")
    with pytest.raises(SSLMinimalError, match=r"shape \[30\]"):
        visualize.plot_embedding(features, labels[:10], method="pca")
    with pytest.raises(SSLMinimalError, match="only 1 class names"):
        visualize.plot_embedding(features, labels, classes=["cat"], method="pca")
    with pytest.raises(SSLMinimalError, match=r"\[N, D\]"):
        visualize.plot_embedding(features[0], method="pca")
    with pytest.raises(SSLMinimalError, match="takes no options"):
        visualize.plot_embedding(features, method="pca", perplexity=5)
    with pytest.raises(SSLMinimalError, match="unknown option 'n_neighbors' for TSNE"):
        visualize.plot_embedding(features, method="tsne", n_neighbors=5)


# ----------------------------------------------------------------------------------------------
# image_grid, plot_neighbours, plot_augmentation_grid
def test_image_grid_draws_every_image_once():
    images = torch.randint(0, 256, (10, 3, 4, 5), dtype=torch.uint8)
    figure = visualize.image_grid(images, nrow=4, titles=[f"image {i}" for i in range(10)])
    assert len(figure.axes) == 10                                        # 3 rows of 4, the last row short
    drawn = images_in(figure)
    assert len(drawn) == 10
    assert np.allclose(drawn[7].get_array(), images[7].permute(1, 2, 0).float().numpy() / 255)
    assert figure.axes[7].get_title() == "image 7"


def test_image_grid_errors():
    with pytest.raises(SSLMinimalError, match=r"\[B, 3, H, W\]"):
        visualize.image_grid(torch.rand(10, 32, 32))
    with pytest.raises(SSLMinimalError, match=r"in \[0, 1\]"):
        visualize.image_grid(torch.rand(2, 3, 4, 4) * 2 - 1)
    with pytest.raises(SSLMinimalError, match="one entry per image"):
        visualize.image_grid(torch.rand(2, 3, 4, 4), titles=["a"])
    with pytest.raises(SSLMinimalError, match="at most"):
        visualize.image_grid(torch.rand(visualize.MAX_GRID_IMAGES + 1, 3, 2, 2))


def test_plot_neighbours_from_indices_colours_matches():
    gallery = torch.rand(6, 3, 4, 4)
    gallery_labels = torch.tensor([0, 0, 1, 1, 2, 2])
    queries = gallery[[0, 2]]
    neighbours = torch.tensor([[1, 2, 4], [3, 0, 5]])                    # [M=2, k=3]
    figure = visualize.plot_neighbours(queries, neighbours, gallery, query_labels=torch.tensor([0, 1]),
                                       gallery_labels=gallery_labels, similarities=torch.rand(2, 3),
                                       classes=["a", "b", "c"])
    assert len(figure.axes) == 2 * 4 and len(images_in(figure)) == 8
    axes = np.array(figure.axes).reshape(2, 4)
    assert np.allclose(axes[1, 0].images[0].get_array(), gallery[2].permute(1, 2, 0).numpy())
    assert np.allclose(axes[1, 1].images[0].get_array(), gallery[3].permute(1, 2, 0).numpy())

    def border(axis):
        return axis.spines["left"].get_edgecolor()
    assert border(axes[0, 0]) == to_rgba(visualize.QUERY_COLOUR)
    expected = [[visualize.MATCH_COLOUR, visualize.MISMATCH_COLOUR, visualize.MISMATCH_COLOUR],
                [visualize.MATCH_COLOUR, visualize.MISMATCH_COLOUR, visualize.MISMATCH_COLOUR]]
    for row in range(2):
        for column in range(3):
            assert border(axes[row, column + 1]) == to_rgba(expected[row][column])
    assert "b" in axes[0, 2].get_title()


def test_plot_neighbours_from_images_without_labels():
    neighbours = torch.rand(3, 2, 3, 4, 4)
    figure = visualize.plot_neighbours(torch.rand(3, 3, 4, 4), neighbours)
    assert len(figure.axes) == 9 and len(images_in(figure)) == 9
    assert not figure.axes[1].spines["left"].get_visible()               # no labels: no green/red frame


def test_plot_neighbours_errors():
    queries = torch.rand(2, 3, 4, 4)
    with pytest.raises(SSLMinimalError, match="pass gallery_images"):
        visualize.plot_neighbours(queries, torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(SSLMinimalError, match=r"in \[0, 5\]"):
        visualize.plot_neighbours(queries, torch.full((2, 3), 6), torch.rand(6, 3, 4, 4))
    with pytest.raises(SSLMinimalError, match=r"\[M, k, 3, H, W\]"):
        visualize.plot_neighbours(queries, torch.rand(2, 3, 4, 4))
    with pytest.raises(SSLMinimalError, match="one row per query"):
        visualize.plot_neighbours(queries, torch.rand(3, 2, 3, 4, 4))
    with pytest.raises(SSLMinimalError, match=r"similarities must have shape \[2, 2\]"):
        visualize.plot_neighbours(queries, torch.rand(2, 2, 3, 4, 4), similarities=torch.rand(2, 3))


def test_plot_augmentation_grid_layout_and_views():
    images = torch.randint(0, 256, (3, 3, 4, 4), dtype=torch.uint8)
    figure = visualize.plot_augmentation_grid(images, flip_everything, num_views=4)
    assert len(figure.axes) == 3 * 5 and len(images_in(figure)) == 15
    axes = np.array(figure.axes).reshape(3, 5)
    assert np.allclose(axes[2, 0].images[0].get_array(), images[2].permute(1, 2, 0).numpy() / 255)
    assert np.allclose(axes[2, 3].images[0].get_array(), images[2].flip(-1).permute(1, 2, 0).numpy() / 255)


def test_plot_augmentation_grid_seeded_recipe_is_repeatable_and_leaves_the_rng_alone():
    images = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    state = torch.get_rng_state()
    first = visualize.plot_augmentation_grid(images, "minimal", num_views=3, seed=1)
    second = visualize.plot_augmentation_grid(images, "minimal", num_views=3, seed=1)
    assert torch.equal(torch.get_rng_state(), state)
    for a, b in zip(images_in(first), images_in(second)):
        assert np.array_equal(a.get_array(), b.get_array())
    views = [image.get_array() for image in images_in(first)[1:4]]
    assert not all(np.array_equal(views[0], view) for view in views[1:])    # the views differ


def test_plot_augmentation_grid_errors():
    images = torch.rand(2, 3, 4, 4)
    with pytest.raises(SSLMinimalError, match=r"augmentation must return a batch \[2, 3, h, w\]"):
        visualize.plot_augmentation_grid(images, lambda x: x[:1])
    with pytest.raises(SSLMinimalError, match=r"augmentation output must be float in \[0, 1\]"):
        visualize.plot_augmentation_grid(images, lambda x: x * 10)
    with pytest.raises(SSLMinimalError, match="unknown augmentation recipe"):
        visualize.plot_augmentation_grid(images, "nonsense")
    with pytest.raises(SSLMinimalError, match=r"\[B, 3, H, W\]"):
        visualize.plot_augmentation_grid(torch.rand(3, 4, 4), flip_everything)
    with pytest.raises(SSLMinimalError, match="num_views"):
        visualize.plot_augmentation_grid(images, flip_everything, num_views=0)


# ----------------------------------------------------------------------------------------------
# save_figure
def test_plot_attention_maps_draws_each_head_of_each_image():
    images, maps = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8), torch.rand(2, 3, 4, 4)
    figure = visualize.plot_attention_maps(images, maps)
    assert len(figure.axes) == 2 * 4 and figure.axes[1].get_title() == "head 0"
    drawn = images_in(figure)
    assert len(drawn) == 2 * 4 and np.allclose(drawn[4 + 3].get_array(), maps[1, 2].numpy())   # row 1, head 2
    assert drawn[1].get_extent() == [-0.5, 15.5, 15.5, -0.5]                 # each patch covers its pixels
    assert len(images_in(visualize.plot_attention_maps(images, maps, overlay=True))) == 2 + 2 * 3 * 2
    with pytest.raises(SSLMinimalError, match="one entry per image"):
        visualize.plot_attention_maps(images, maps[:1])


def test_save_figure_creates_folders_and_writes_png(tmp_path):
    figure = visualize.image_grid(torch.rand(2, 3, 4, 4))
    path = visualize.save_figure(figure, tmp_path / "figures" / "nested" / "grid.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(SSLMinimalError, match="matplotlib Figure"):
        visualize.save_figure("not a figure", tmp_path / "x.png")


def test_figures_are_not_left_open_in_pyplot():
    import matplotlib.pyplot as plt
    before = len(plt.get_fignums())
    visualize.image_grid(torch.rand(2, 3, 4, 4))
    assert len(plt.get_fignums()) == before
    assert matplotlib.get_backend()            # a backend was chosen (Agg when there is no screen)


def test_figures_dir_follows_the_environment_variable(tmp_path, monkeypatch):
    """The test run sends notebook figures to a temporary folder, never over the committed figures/."""
    from ssl_minimal import visualize
    monkeypatch.setenv("SSL_FIGURES_DIR", str(tmp_path / "figs"))
    assert visualize.figures_dir() == tmp_path / "figs" and (tmp_path / "figs").is_dir()
    monkeypatch.delenv("SSL_FIGURES_DIR")
    monkeypatch.chdir(tmp_path)
    assert visualize.figures_dir("cpu") == Path("figures")


def test_the_test_run_does_not_write_into_the_repository_figures():
    import os
    repository_figures = Path(__file__).resolve().parents[1] / "figures"
    assert Path(os.environ["SSL_FIGURES_DIR"]).resolve() != repository_figures.resolve()
