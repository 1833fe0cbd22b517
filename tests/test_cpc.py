"""CPC: the patch grid, the causal context network, the pairing of predictions with targets k rows
below, the InfoNCE loss against a hand computation, the evaluation features, and a short run."""

import math

import pytest
import torch
from torch import nn

import ssl_minimal
from ssl_minimal import augmentations, data
from ssl_minimal.checks import SSLMinimalError
from ssl_minimal.methods.cpc import extract_patches, jitter_patches


def test_patch_grid_of_a_hand_example():
    image = torch.arange(36.0).view(1, 1, 6, 6)          # rows 0..5 hold 0-5, 6-11, ..., 30-35
    patches = extract_patches(image, size=4, stride=2)   # a 2x2 grid of 4x4 patches, 50% overlap
    assert patches.shape == (1, 2, 2, 1, 4, 4)
    top_left = [[0, 1, 2, 3], [6, 7, 8, 9], [12, 13, 14, 15], [18, 19, 20, 21]]
    top_right = [[2, 3, 4, 5], [8, 9, 10, 11], [14, 15, 16, 17], [20, 21, 22, 23]]
    bottom_left = [[12, 13, 14, 15], [18, 19, 20, 21], [24, 25, 26, 27], [30, 31, 32, 33]]
    assert patches[0, 0, 0, 0].tolist() == top_left
    assert patches[0, 0, 1, 0].tolist() == top_right     # grid index [row, column]
    assert patches[0, 1, 0, 0].tolist() == bottom_left


def test_cifar_images_give_a_3x3_grid_of_grey_16px_patches_or_the_papers_7x7_grid():
    images = torch.rand(2, 3, 32, 32)
    grey = augmentations.rgb_to_grayscale(images)
    patches = ssl_minimal.build("cpc").encoder.patches(images)                  # 16 px patches, stride 8
    assert patches.shape == (2, 3, 3, 1, 16, 16)
    assert torch.equal(patches[:, 1, 2], grey[:, :, 8:24, 16:32])
    patches = ssl_minimal.build("cpc", patch_size=8).encoder.patches(images)    # the paper's proportions
    assert patches.shape == (2, 7, 7, 1, 8, 8)
    assert torch.equal(patches[:, 2, 5], grey[:, :, 8:16, 20:28])
    assert torch.equal(patches[:, 6, 0], grey[:, :, 24:32, 0:8])


def test_context_row_t_depends_only_on_rows_up_to_t():
    model = ssl_minimal.build("cpc")
    z = torch.randn(2, model.encoder.output_dim, 7, 7, requires_grad=True)
    c = model.context(z)
    for t in range(7):
        (gradient,) = torch.autograd.grad(c[:, :, t].sum(), z, retain_graph=True)
        assert torch.all(gradient[:, :, t + 1:] == 0), f"c at row {t} sees rows below it"
        assert gradient[:, :, t].abs().sum() > 0
        if t > 0:   # and it does see the rows above (three blocks: up to three rows up)
            assert gradient[:, :, t - 1].abs().sum() > 0 and gradient[:, :, max(0, t - 3)].abs().sum() > 0


def test_predictions_are_paired_with_the_patch_k_rows_below_in_the_same_image_and_column():
    model = ssl_minimal.build("cpc", patch_size=8, prediction_steps=(1, 3))    # a 7x7 grid
    dim = model.encoder.output_dim
    code = torch.zeros(2, dim, 7, 7)        # channel 0 of position (b, row, column) holds 100 b + 10 row + column
    code[:, 0] = (100 * torch.arange(2).view(2, 1, 1) + 10 * torch.arange(7).view(1, 7, 1)
                  + torch.arange(7).view(1, 1, 7)).float()
    with torch.no_grad():
        for W in model.W:
            W.weight.copy_(torch.eye(dim))                    # W_k c = c, so a prediction shows where it came from
    for step, k in enumerate((1, 3)):
        predictions, targets = model.predictions_and_targets(code, code, step)
        assert predictions.shape == targets.shape == (2 * (7 - k) * 7, dim)
        sources = {(int(p) // 100, int(p) // 10 % 10, int(p) % 10) for p in predictions[:, 0]}
        assert sources == {(b, t, col) for b in range(2) for t in range(7 - k) for col in range(7)}
        assert torch.equal(targets[:, 0], predictions[:, 0] + 10 * k)       # same image, same column, k rows below


def test_loss_matches_a_hand_computation_of_eq_4():
    model = ssl_minimal.build("cpc", prediction_steps=(1, 2))
    generator = torch.Generator().manual_seed(0)
    dim, batch, rows = 3, 2, 3
    model.W = nn.ModuleList([nn.Linear(dim, dim, bias=False) for _ in range(2)])
    z, c = torch.randn(batch, dim, rows, rows, generator=generator), torch.randn(batch, dim, rows, rows, generator=generator)
    expected = 0.0
    for step, k in enumerate((1, 2)):
        W = model.W[step].weight.detach()
        candidates = [(b, t, col) for b in range(batch) for t in range(k, rows) for col in range(rows)]
        total = 0.0
        for b in range(batch):
            for t in range(rows - k):
                for col in range(rows):
                    prediction = W @ c[b, :, t, col]                                   # W_k c_t
                    scores = {j: math.exp(float(prediction @ z[j[0], :, j[1], j[2]])) for j in candidates}
                    total -= math.log(scores[(b, t + k, col)] / sum(scores.values()))   # Eq. 4
        expected += total / (batch * (rows - k) * rows) / 2                            # mean over rows, then over k
    assert math.isclose(model.cpc_loss(z, c).item(), expected, rel_tol=1e-5)


def test_training_step_is_the_loss_of_the_jittered_grid_and_trains_every_part(tiny_dataset):
    model = ssl_minimal.build("cpc", dataset=tiny_dataset)
    images = tiny_dataset.images[:4]
    torch.manual_seed(3)
    loss = model.training_step(images, torch.arange(4))
    torch.manual_seed(3)
    with torch.no_grad():
        z = model.encoder.embed(jitter_patches(model.encoder.patches(model.augment(images))))
        expected = model.cpc_loss(z, model.context(z))
    assert torch.allclose(loss, expected, atol=1e-5)
    loss.backward()
    for part in (model.encoder.patch_encoder, model.context, model.W):   # no stop-gradient anywhere
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())


def test_jitter_keeps_a_random_square_sub_crop_of_each_patch():
    torch.manual_seed(0)
    assert torch.all(jitter_patches(torch.ones(20, 1, 16, 16)).sum(dim=(-2, -1)) == 15 * 15)   # 60/64 of the side
    kept = jitter_patches(torch.ones(50, 1, 8, 8), keep=7 / 8)
    assert torch.all(kept.sum(dim=(-2, -1)) == 49)                       # 7x7 of the 8x8 pixels
    rows, columns = kept.amax(dim=-1), kept.amax(dim=-2)                 # [50, 1, 8] each
    assert torch.all(rows.sum(-1) == 7) and torch.all(columns.sum(-1) == 7)
    assert len({tuple(r.tolist()) for r in rows[:, 0]}) == 2            # the sub-crop starts at row 0 or 1


def test_evaluation_features_are_the_mean_patch_embedding_of_the_grey_image():
    model = ssl_minimal.build("cpc").eval()
    images = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        features = model.encoder(images)
        grid = model.encoder.embed(model.encoder.patches(images))        # [3, 256, 7, 7]
        grey = augmentations.rgb_to_grayscale(images).expand(-1, 3, -1, -1)
        assert features.shape == (3, model.encoder.output_dim)
        torch.testing.assert_close(features, grid.mean(dim=(2, 3)))
        torch.testing.assert_close(model.encoder(grey), features, atol=1e-5, rtol=0)   # trained on grey: colour-blind
    assert ssl_minimal.evaluate.extract_features(model.encoder, images).shape == (3, model.encoder.output_dim)


def test_prediction_steps_beyond_the_grid_are_reported():
    with pytest.raises(SSLMinimalError, match=r"row offsets in 1\.\.2 \(the grid has 3 rows\)"):
        ssl_minimal.build("cpc", prediction_steps=(1, 3))
    with pytest.raises(SSLMinimalError, match=r"row offsets in 1\.\.6"):
        ssl_minimal.build("cpc", patch_size=8, prediction_steps=(0, 1))


@pytest.mark.slow
def test_a_short_run_lowers_the_loss():
    train = data.load("shapes", "train").subset(256, seed=0)
    torch.manual_seed(0)
    model = ssl_minimal.build("cpc", dataset=train, backbone_options={"width": 8})
    history = ssl_minimal.fit(model, train, "smoke", epochs=4, batch_size=32, learning_rate=2e-3, progress=False)
    first, last = sum(history.loss[:4]) / 4, sum(history.loss[-4:]) / 4
    assert last < first - 0.5, f"loss {first:.2f} -> {last:.2f}"
