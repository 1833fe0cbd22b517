"""CMC: L and ab views, one encoder per view, the two-direction loss (Eq. 3), the concatenated
evaluation features, the memory-bank version, and a short run."""

import math

import pytest
import torch
import torch.nn.functional as F

import ssl_minimal
from ssl_minimal import augmentations, data, losses
from ssl_minimal.checks import SSLMinimalError


def test_views_are_l_and_ab_scaled_as_the_official_code():
    model = ssl_minimal.build("cmc")
    red_and_white = torch.tensor([[1.0, 0, 0], [1, 1, 1]]).view(2, 3, 1, 1)
    l, ab = model.encoder.views(red_and_white)
    assert l.shape == (2, 1, 1, 1) and ab.shape == (2, 2, 1, 1)
    # red is L*a*b* (53.24, 80.09, 67.20); the code maps L by [0, 100], a by [-86.183, 98.233], b by [-107.857, 94.478]
    torch.testing.assert_close(l.flatten(), torch.tensor([0.532408, 1.0]), atol=1e-4, rtol=0)
    torch.testing.assert_close(ab[0].flatten(), torch.tensor([(80.0925 + 86.183) / 184.416, (67.2032 + 107.857) / 202.335]),
                               atol=1e-4, rtol=0)
    torch.testing.assert_close(ab[1].flatten(), torch.tensor([86.183 / 184.416, 107.857 / 202.335]), atol=1e-4, rtol=0)


def test_each_view_has_its_own_encoder_with_one_or_two_input_channels():
    model = ssl_minimal.build("cmc")
    first_l = model.encoder.encoder_l.backbone.layers[0][0]
    first_ab = model.encoder.encoder_ab.backbone.layers[0][0]
    assert first_l.in_channels == 1 and first_ab.in_channels == 2
    assert not {id(p) for p in model.encoder.encoder_l.parameters()} & {id(p) for p in model.encoder.encoder_ab.parameters()}


def test_gradient_flows_into_both_encoders(tiny_dataset):
    model = ssl_minimal.build("cmc", dataset=tiny_dataset)
    model.training_step(tiny_dataset.images[:8], torch.arange(8)).backward()
    for encoder in (model.encoder.encoder_l, model.encoder.encoder_ab):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in encoder.parameters())


def test_training_step_is_both_directions_of_the_cross_view_loss(tiny_dataset):
    model = ssl_minimal.build("cmc", dataset=tiny_dataset)
    images = tiny_dataset.images[:6]
    torch.manual_seed(2)
    loss = model.training_step(images, torch.arange(6))
    torch.manual_seed(2)
    with torch.no_grad():
        l, ab = model.encoder.views(model.augment(images))
        v1 = F.normalize(model.head_l(model.encoder.encoder_l(l)), dim=1)
        v2 = F.normalize(model.head_ab(model.encoder.encoder_ab(ab)), dim=1)

    def one_direction(anchors, others):   # Eq. 2: anchor view picks its own other view among the batch's
        total = 0.0
        for i in range(6):
            scores = [math.exp(float(anchors[i] @ others[j]) / model.temperature) for j in range(6)]
            total -= math.log(scores[i] / sum(scores))
        return total / 6

    by_hand = one_direction(v1, v2) + one_direction(v2, v1)           # Eq. 3: L(V1, V2) = L^{V1,V2} + L^{V2,V1}
    assert math.isclose(loss.item(), by_hand, rel_tol=1e-4)
    assert math.isclose(losses.cmc_loss(v2, v1, model.temperature).item(), by_hand, rel_tol=1e-4)   # symmetric
    assert not math.isclose(one_direction(v1, v2), one_direction(v2, v1), rel_tol=1e-3)          # both terms matter


def test_evaluation_features_concatenate_both_encoders():
    model = ssl_minimal.build("cmc").eval()
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        features = model.encoder(images)
        l, ab = model.encoder.views(images)
        expected = torch.cat([model.encoder.encoder_l(l), model.encoder.encoder_ab(ab)], dim=1)
    assert features.shape == (3, 256) and model.encoder.output_dim == 256       # 2 x 128 (two half-width nets)
    torch.testing.assert_close(features, expected)
    assert ssl_minimal.evaluate.extract_features(model.encoder, images).shape == (3, 256)


def test_views_follow_rgb_to_lab_for_any_image():
    model = ssl_minimal.build("cmc")
    images = torch.rand(2, 3, 8, 8)
    l, ab = model.encoder.views(images)
    lab = augmentations.rgb_to_lab(images)
    torch.testing.assert_close(l * 100, lab[:, :1], atol=1e-3, rtol=0)
    torch.testing.assert_close(ab[:, :1] * 184.416 - 86.183, lab[:, 1:2], atol=1e-3, rtol=0)


def test_bank_version_uses_the_other_views_bank_and_updates_both(tiny_dataset):
    model = ssl_minimal.build("cmc", dataset=tiny_dataset, negatives="bank", num_negatives=16)
    assert len(model.memory_l) == len(model.memory_ab) == len(tiny_dataset)
    images, indices = tiny_dataset.images[:8], torch.arange(8, 16)
    bank_l, bank_ab = model.memory_l.bank.clone(), model.memory_ab.bank.clone()
    torch.manual_seed(4)
    loss = model.training_step(images, indices)
    torch.manual_seed(4)
    with torch.no_grad():
        v1, v2 = model.embed(model.augment(images))
        noise = model.memory_l.sample_noise_indices(16)
    expected = (losses.info_nce(v1, bank_ab[indices], bank_ab[noise], model.temperature)
                + losses.info_nce(v2, bank_l[indices], bank_l[noise], model.temperature))
    assert torch.allclose(loss, expected, atol=1e-5)
    m = model.memory_l.momentum                                       # v_i <- normalize(m v_i + (1 - m) f_i)
    torch.testing.assert_close(model.memory_l.bank[indices], F.normalize(m * bank_l[indices] + (1 - m) * v1, dim=1))
    torch.testing.assert_close(model.memory_ab.bank[indices], F.normalize(m * bank_ab[indices] + (1 - m) * v2, dim=1))
    loss.backward()                                                   # works after the in-place bank update
    assert not model.memory_l.bank.requires_grad and model.head_l.weight.grad is not None


def test_bad_options_are_reported():
    with pytest.raises(SSLMinimalError, match="valid negativess are: batch, bank"):
        ssl_minimal.build("cmc", negatives="queue")
    with pytest.raises(SSLMinimalError, match="num_samples"):
        ssl_minimal.build("cmc", negatives="bank")


@pytest.mark.slow
def test_a_short_run_lowers_the_loss():
    train = data.load("shapes", "train").subset(512, seed=0)
    torch.manual_seed(0)
    model = ssl_minimal.build("cmc", dataset=train)
    history = ssl_minimal.fit(model, train, "smoke", epochs=3, batch_size=64, progress=False)
    first, last = sum(history.loss[:4]) / 4, sum(history.loss[-4:]) / 4
    assert last < first - 0.5, f"loss {first:.2f} -> {last:.2f}"
