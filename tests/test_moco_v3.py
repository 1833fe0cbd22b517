"""MoCo v3: Algorithm 1's symmetrised ctr loss with 2 tau, keys without gradient from the momentum
encoder (backbone + projector, no predictor), the cosine m schedule, the frozen random patch projection."""

import math

import pytest
import torch
import torch.nn.functional as F

import ssl_minimal
from ssl_minimal import distributed, losses
from ssl_minimal.backbones import sincos_position_embedding
from ssl_minimal.checks import SSLMinimalError
from ssl_minimal.momentum import cosine_momentum
from ssl_minimal.training import load_checkpoint

TINY_VIT = {"dim": 32, "depth": 1, "heads": 2}


def _model(**options):
    torch.manual_seed(0)
    return ssl_minimal.build("moco_v3", backbone_options=TINY_VIT, hidden_dim=32, projection_dim=16, **options)


def _query_and_key(model):
    query = list(model.encoder.parameters()) + list(model.projector.parameters())
    key = list(model.key_encoder.parameters()) + list(model.key_projector.parameters())
    return query, key


def _hand_ctr(q, k, tau, offset=0):
    """2 tau * mean_i -log(exp(q_i.k_{offset+i} / tau) / sum_j exp(q_i.k_j / tau)), one number at a time."""
    total = 0.0
    for i in range(q.shape[0]):
        scores = [math.exp(float(q[i] @ k[j]) / tau) for j in range(k.shape[0])]
        total -= math.log(scores[offset + i] / sum(scores))
    return 2 * tau * total / q.shape[0]


def test_contrastive_loss_matches_hand_computation_with_2_tau():
    generator = torch.Generator().manual_seed(0)
    q = F.normalize(torch.randn(3, 5, generator=generator), dim=1)
    k = F.normalize(torch.randn(6, 5, generator=generator), dim=1)     # a global batch of 2 processes
    for offset in (0, 3):
        expected = _hand_ctr(q, k, 0.2, offset)
        assert math.isclose(losses.moco_v3_contrastive_loss(q, k, 0.2, offset).item(), expected, rel_tol=1e-5)
    # one process: 2 tau times the in-batch InfoNCE already in losses.py
    assert torch.allclose(losses.moco_v3_contrastive_loss(q, k[:3], 0.5),
                          2 * 0.5 * losses.info_nce_in_batch(q, k[:3], 0.5), atol=1e-6)


def test_training_step_is_algorithm_1_symmetrised_loss(tiny_dataset):
    model = _model()
    with torch.no_grad():                      # make the key encoder differ from the query encoder
        for p in model.key_projector.parameters():
            p.add_(torch.randn_like(p))
    images = tiny_dataset.images[:8]
    torch.manual_seed(4)
    loss = model.training_step(images, torch.arange(8))
    torch.manual_seed(4)
    x1, x2 = model.augment(images), model.augment_prime(images)
    with torch.no_grad():
        q1, q2 = (F.normalize(model.predictor(model.projector(model.encoder(x))), dim=1) for x in (x1, x2))
        k1, k2 = (F.normalize(model.key_projector(model.key_encoder(x)), dim=1) for x in (x1, x2))
    expected = _hand_ctr(q1, k2, 0.2) + _hand_ctr(q2, k1, 0.2)        # ctr(q1, k2) + ctr(q2, k1)
    assert math.isclose(loss.item(), expected, rel_tol=1e-4)


def test_each_process_finds_its_positives_at_rank_times_batch(tiny_dataset, monkeypatch):
    """Several processes: the keys of every process are the negatives; labels are rank * N + i."""
    model = _model()
    other_keys = F.normalize(torch.randn(8, 16, generator=torch.Generator().manual_seed(1)), dim=1)
    monkeypatch.setattr(distributed, "gather", lambda k: torch.cat([other_keys, k]))   # this process is rank 1
    monkeypatch.setattr(distributed, "rank", lambda: 1)
    q = F.normalize(torch.randn(8, 16, generator=torch.Generator().manual_seed(2)), dim=1)
    k = F.normalize(torch.randn(8, 16, generator=torch.Generator().manual_seed(3)), dim=1)
    expected = _hand_ctr(q, torch.cat([other_keys, k]), 0.2, offset=8)
    assert math.isclose(model.ctr(q, k).item(), expected, rel_tol=1e-5)


def test_keys_get_no_gradient_and_the_predictor_is_on_the_query_side_only(tiny_dataset):
    model = _model()
    model.training_step(tiny_dataset.images[:8], torch.arange(8)).backward()
    query, key = _query_and_key(model)
    assert all(p.grad is None and not p.requires_grad for p in key)
    assert all(p.grad is not None for p in query + list(model.predictor.parameters()) if p.requires_grad)
    assert sum(p.grad.abs().sum() for p in model.predictor.parameters()) > 0
    # f_k is backbone + projector: exactly the query side's tensors without the predictor
    assert [p.shape for p in key] == [p.shape for p in query]
    assert sum(p.numel() for p in model.parameters()) == (2 * sum(p.numel() for p in query)
                                                          + sum(p.numel() for p in model.predictor.parameters()))


def test_key_encoder_is_the_moving_average_with_the_cosine_m(tiny_dataset):
    model = _model()
    optimizer = torch.optim.SGD(model.parameter_groups(), lr=0.5)
    model.training_step(tiny_dataset.images[:16], torch.arange(16)).backward()
    optimizer.step()
    query, key = _query_and_key(model)
    before = [p.clone() for p in key]
    assert not all(torch.equal(a, b) for a, b in zip(query, before))      # the query encoder moved
    model.after_optimizer_step(0.3)
    m = cosine_momentum(0.99, 0.3)
    assert model.m == pytest.approx(1 - 0.01 * (math.cos(math.pi * 0.3) + 1) / 2)
    for old, new, current in zip(before, key, query):
        assert torch.allclose(new, m * old + (1 - m) * current, atol=1e-6)
    model.after_optimizer_step(0.0)
    assert model.m == pytest.approx(0.99)
    model.after_optimizer_step(1.0)
    assert model.m == pytest.approx(1.0)


def test_patch_embedding_is_a_frozen_random_projection_unless_asked(tiny_dataset):
    for freeze in (True, False):
        model = _model(freeze_patch_embedding=freeze)
        patch = model.encoder.backbone.patch_embedding
        bound = math.sqrt(6 / (3 * 8 * 8 + 32))               # Xavier uniform, fans 3 p^2 and D (vits.py)
        assert patch.weight.abs().max() <= bound and patch.weight.abs().max() > 0.9 * bound
        assert torch.equal(patch.bias, torch.zeros(32))
        assert patch.weight.requires_grad is not freeze and patch.bias.requires_grad is not freeze
        initial = patch.weight.clone()
        optimizer = torch.optim.AdamW(model.parameter_groups(), lr=1e-2, weight_decay=0.1)
        model.training_step(tiny_dataset.images[:8], torch.arange(8)).backward()
        optimizer.step()
        model.after_optimizer_step(0.5)
        assert torch.equal(patch.weight, initial) is freeze
        key_patch = model.key_encoder.backbone.patch_embedding.weight
        assert torch.allclose(key_patch, initial, rtol=0, atol=1e-7) is freeze   # the EMA of a constant is it


def test_heads_are_the_official_mlps_with_batch_norm_on_every_layer():
    """Projector 3 layers, predictor 2, Linear without bias, BN after each (the last without affine)."""
    model = _model()
    for head, layers in ((model.projector, 3), (model.predictor, 2)):
        linears = [m for m in head if isinstance(m, torch.nn.Linear)]
        norms = [m for m in head if isinstance(m, torch.nn.BatchNorm1d)]
        assert len(linears) == len(norms) == layers and all(m.bias is None for m in linears)
        assert isinstance(head[-1], torch.nn.BatchNorm1d) and not head[-1].affine
        assert all(norm.affine for norm in norms[:-1])
    assert model.projector[-1].num_features == model.predictor[-1].num_features == 16


def test_vit_uses_the_fixed_sincos_position_embedding():
    model = _model()
    vit = model.encoder.backbone
    assert "position" not in dict(vit.named_parameters())
    assert torch.equal(vit.position[0], sincos_position_embedding(4, 32))


def test_paper_recipe_values():
    """Sec. 5 / the official README's ViT commands and main_moco.py; the fit test below checks they reach AdamW."""
    model = ssl_minimal.build("moco_v3")
    assert (model.optimizer, model.learning_rate, model.weight_decay) == ("adamw", 1.5e-4, 0.1)
    assert (model.temperature, model.base_momentum) == (0.2, 0.99)
    assert model.projector[0].out_features == 4096 and model.projector[-1].num_features == 256
    assert model.predictor[0].out_features == 4096 and model.predictor[-1].num_features == 256
    assert model.freeze_patch_embedding and not model.encoder.backbone.patch_embedding.weight.requires_grad
    assert (model.augment.name, model.augment_prime.name) == ("byol_view1", "byol_view2")
    for augment in (model.augment, model.augment_prime):
        assert augment.steps[0].options["scale"] == (0.08, 1.0)
    vit = model.encoder.backbone
    assert model.encoder.name == "small_vit" and vit.init == "moco_v3" and vit.cls_token.abs().max() < 1e-5
    qkv = vit.blocks[0].attention.qkv.weight                 # q, k, v as three [D, D] blocks (vits.py)
    assert qkv.abs().max() > 0.97 * (6 / (128 + 128)) ** 0.5
    # momentum: 0.99 at the start, 1 at the end, the half-cycle cosine between (--moco-m-cos)
    model.after_optimizer_step(0.5)
    assert model.m == pytest.approx(0.995)


def test_a_convnet_backbone_for_the_vit_vs_convnet_comparison(tiny_dataset):
    torch.manual_seed(0)
    model = ssl_minimal.build("moco_v3", backbone="small_convnet", backbone_options={"width": 8},
                              hidden_dim=32, projection_dim=16)
    assert not model.vit and not model.freeze_patch_embedding
    model.training_step(tiny_dataset.images[:8], torch.arange(8)).backward()
    assert all(p.grad is not None for p in model.encoder.parameters())


def test_fit_trains_a_few_steps_with_the_papers_adamw(tiny_dataset, tmp_path):
    model = _model()
    history = ssl_minimal.fit(model, tiny_dataset, "smoke", epochs=1, batch_size=16, progress=False,
                              checkpoint_path=tmp_path / "moco_v3.pt")
    assert len(history.loss) == 4 and all(math.isfinite(loss) for loss in history.loss)
    assert model.m > 0.99
    assert history.lr[0] == pytest.approx(1.5e-4 * 16 / 256)            # lr x BatchSize / 256
    groups = load_checkpoint(tmp_path / "moco_v3.pt")["optimizer"]["param_groups"]
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0] and "betas" in groups[0]


@pytest.mark.parametrize("options, message", [
    ({"temperature": 0.0}, "temperature"),
    ({"base_momentum": 1.5}, "base_momentum"),
    ({"hidden_dim": 0}, "hidden_dim"),
    ({"backbone": "resnet50"}, "Vision Transformer"),
])
def test_bad_options_raise(options, message):
    with pytest.raises(SSLMinimalError, match=message):
        ssl_minimal.build("moco_v3", **options)
