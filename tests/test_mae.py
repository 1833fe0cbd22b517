"""MAE: patches in the ViT's order, per-sample random masking, the encoder sees only visible patches,
the loss counts masked patches only (Sec. 3), the paper's optimiser reaches fit."""

import statistics

import pytest
import torch

import ssl_minimal
from ssl_minimal import augmentations, losses
from ssl_minimal.backbones import sincos_position_embedding
from ssl_minimal.checks import SSLMinimalError
from ssl_minimal.methods.mae import MAE, Decoder, patchify, random_masking, unpatchify
from ssl_minimal.training import fit, load_checkpoint

SMALL = dict(backbone_options={"dim": 32, "depth": 1, "heads": 2}, decoder_dim=32, decoder_depth=1, decoder_heads=2)


def _model(**options):
    torch.manual_seed(0)
    return ssl_minimal.build("mae", **{**SMALL, **options})


def _seeded(seed=0):
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------------------------
# Patches and masking
def test_patchify_orders_patches_row_major_and_pixels_row_column_channel():
    image = torch.arange(3 * 4 * 4).float().view(1, 3, 4, 4)           # value = c * 16 + y * 4 + x
    patches = patchify(image, 2)
    assert patches.shape == (1, 4, 12)
    # patch 1 is the top-right one: rows 0-1, columns 2-3, each pixel's 3 channels in a row
    expected = [image[0, c, y, x].item() for y in (0, 1) for x in (2, 3) for c in range(3)]
    assert patches[0, 1].tolist() == expected
    assert patches[0, 2, :3].tolist() == [image[0, c, 2, 0].item() for c in range(3)]   # bottom-left patch
    images = torch.rand(2, 3, 8, 8)
    assert torch.equal(unpatchify(patchify(images, 4), 4), images)
    with pytest.raises(SSLMinimalError, match="multiple of 3"):
        patchify(images, 3)


def test_patch_order_is_the_vit_token_order():
    """Target patch i is what the ViT's token i sees: its patch embedding is a linear map of patchify's row i."""
    vit = _model().vit
    images = torch.rand(2, 3, 32, 32)
    tokens = vit.patch_embedding(images).flatten(2).transpose(1, 2)                 # [B, N, D]
    weight = vit.patch_embedding.weight.permute(0, 2, 3, 1).flatten(1)    # [D, p*p*3] as (row, column, channel)
    assert torch.allclose(tokens, patchify(images, 8) @ weight.t() + vit.patch_embedding.bias, atol=1e-5)


def test_random_masking_keeps_a_fixed_number_of_different_patches_per_image():
    B, N = 8, 64                      # 64 patches: two equal masks of 16 are all but impossible
    tokens = torch.arange(N).float().view(1, N, 1).expand(B, N, 2)               # token value = its patch index
    visible, mask, ids_restore = random_masking(tokens, 0.75, _seeded())
    keep = round(N * 0.25)
    assert visible.shape == (B, keep, 2) and mask.shape == (B, N)
    assert torch.equal(mask.sum(dim=1), torch.full((B,), N - keep, dtype=mask.dtype))
    assert len({tuple(row.tolist()) for row in mask}) == B                       # a different mask per image
    for b in range(B):
        kept = visible[b, :, 0].long()
        assert sorted(kept.tolist()) == (mask[b] == 0).nonzero().squeeze(1).tolist()   # mask = exactly the dropped
        assert sorted(ids_restore[b].tolist()) == list(range(N))                 # a permutation
        assert torch.equal(ids_restore[b, kept], torch.arange(keep))            # visible token j sits at position j
    assert random_masking(tokens, 0.9, _seeded())[0].shape[1] == 6               # round(64 * 0.1) = 6
    assert torch.equal(random_masking(tokens, 0.75, _seeded())[1], mask)         # the generator decides


def test_decoder_puts_every_token_back_at_its_patch_with_its_position():
    """With no blocks, decoder output i = Linear(LayerNorm(embed(encoded token of patch i) + position_i)) for
    a visible patch and Linear(LayerNorm(mask token + position_i)) for a masked one; [CLS] is dropped."""
    torch.manual_seed(0)
    decoder = Decoder(encoder_dim=6, grid_size=2, patch_pixels=5, dim=8, depth=0)
    tokens = torch.randn(3, 4, 6)
    visible, mask, ids_restore = random_masking(tokens, 0.5, _seeded())
    latent = torch.cat([torch.randn(3, 1, 6), visible], dim=1)                   # [CLS] + visible
    out = decoder(latent, ids_restore)
    assert out.shape == (3, 4, 5)
    position = sincos_position_embedding(2, 8)
    for b in range(3):
        for i in range(4):
            token = decoder.mask_token[0, 0] if mask[b, i] else decoder.embed(tokens[b, i])
            assert torch.allclose(out[b, i], decoder.prediction(decoder.norm(token + position[i])), atol=1e-5)


# ---------------------------------------------------------------------------------------------
# The loss
def test_loss_is_the_mean_squared_error_over_masked_patches_only():
    torch.manual_seed(0)
    prediction, target = torch.randn(1, 3, 4), torch.randn(1, 3, 4)
    mask = torch.tensor([[1.0, 0.0, 1.0]])
    by_hand = statistics.mean(statistics.mean((prediction[0, i] - target[0, i]).pow(2).tolist()) for i in (0, 2))
    loss = losses.mae_loss(prediction, target, mask, normalize_target=False)
    assert loss.item() == pytest.approx(by_hand, rel=1e-6)
    changed = target.clone()
    changed[0, 1] += 5                                                           # a visible patch: no effect
    assert torch.equal(losses.mae_loss(prediction, changed, mask, normalize_target=False), loss)
    changed[0, 2] += 5                                                           # a masked patch: counts
    assert losses.mae_loss(prediction, changed, mask, normalize_target=False) != loss


def test_norm_pix_loss_normalises_each_target_patch_by_its_own_mean_and_std():
    torch.manual_seed(0)
    prediction, target, mask = torch.randn(2, 3, 6), torch.rand(2, 3, 6) * 4 + 2, torch.tensor([[1.0, 0, 0], [0, 1, 1]])
    errors = []
    for b, i in [(0, 0), (1, 1), (1, 2)]:
        pixels = target[b, i].tolist()
        mean, var = statistics.mean(pixels), statistics.variance(pixels)         # unbiased, as models_mae.py
        normalised = [(x - mean) / (var + 1e-6) ** 0.5 for x in pixels]
        errors.append(statistics.mean((p - t) ** 2 for p, t in zip(prediction[b, i].tolist(), normalised)))
    assert losses.mae_loss(prediction, target, mask).item() == pytest.approx(statistics.mean(errors), rel=1e-5)
    shifted = target * 3 + 7                                                     # per-patch affine changes: same loss
    assert losses.mae_loss(prediction, shifted, mask).item() == pytest.approx(statistics.mean(errors), rel=1e-4)


def test_a_perfect_decoder_gives_zero_loss_so_the_target_is_the_normalised_crop(tiny_dataset):
    """training_step's target: patchify(Normalize(augmented crop)); a decoder that outputs it scores 0."""
    model = _model(norm_pix_loss=False)
    images = tiny_dataset.images[:4]
    torch.manual_seed(3)
    crops = model.augment(images)
    model.decoder.forward = lambda latent, ids_restore: patchify(model.encoder.normalize(crops), 8)
    torch.manual_seed(3)
    assert model.training_step(images, torch.arange(4)).item() == pytest.approx(0.0, abs=1e-10)


# ---------------------------------------------------------------------------------------------
# The encoder, gradients, options
def test_the_encoder_never_sees_masked_patches():
    model = _model()
    x = torch.randn(2, 3, 32, 32)
    latent, mask, _ = model.encode(x, _seeded())
    assert latent.shape == (2, 1 + 4, 32)                                        # [CLS] + 4 of the 16 patches
    masked_pixels = unpatchify(mask[..., None].expand(2, 16, 8 * 8 * 3), 8)      # [B, 3, H, W]
    changed, _, _ = model.encode(x + 10 * torch.randn_like(x) * masked_pixels, _seeded())
    assert torch.equal(changed, latent)
    moved, _, _ = model.encode(x + 10 * torch.randn_like(x) * (1 - masked_pixels), _seeded())
    assert not torch.allclose(moved, latent)


def test_gradients_reach_every_parameter_of_encoder_and_decoder(tiny_dataset):
    model = _model()
    model.training_step(tiny_dataset.images[:8], torch.arange(8)).backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    assert not any(name.endswith("position") for name, _ in model.named_parameters())   # fixed sin-cos


def test_paper_recipe_and_defaults():
    model = ssl_minimal.build("mae")
    recipe = (model.optimizer, model.learning_rate, model.weight_decay, model.adam_betas)
    assert recipe == ("adamw", 1.5e-4, 0.05, (0.9, 0.95))
    assert model.augment.name == "mae" and model.mask_ratio == 0.75 and model.norm_pix_loss
    assert model.encoder.name == "small_vit" and model.architecture == "vit"
    assert torch.equal(model.vit.position[0], sincos_position_embedding(4, 128))   # fixed sin-cos in the encoder
    assert len(model.decoder.blocks) == 2 and model.decoder.embed.out_features == 128
    features = model.encoder(torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8))   # evaluation: whole images
    assert features.shape == (3, 128)
    assert augmentations.recipe("mae").steps[0].options["scale"] == (0.2, 1.0)
    # The default (DeiT) init, as lesson 14 was run; models_mae.py's init on request: Xavier-uniform on the
    # fused qkv [3D, D] (one matrix), [CLS] std 0.02.
    assert model.vit.init == "deit"
    official = MAE(backbone_options={"init": "mae"})
    qkv = official.vit.blocks[0].attention.qkv.weight
    assert official.vit.init == "mae" and 0.97 * (6 / (3 * 128 + 128)) ** 0.5 < qkv.abs().max() <= (6 / 512) ** 0.5


def test_fit_trains_with_the_papers_adamw(tiny_dataset, tmp_path):
    model = _model()
    history = fit(model, tiny_dataset, "smoke", epochs=1, batch_size=16, progress=False,
                  checkpoint_path=tmp_path / "mae.pt")
    assert len(history.loss) == 4 and all(torch.isfinite(torch.tensor(history.loss)))
    groups = load_checkpoint(tmp_path / "mae.pt")["optimizer"]["param_groups"]
    assert [tuple(g["betas"]) for g in groups] == [(0.9, 0.95)] * 2
    assert [g["weight_decay"] for g in groups] == [0.05, 0.0]


@pytest.mark.parametrize("options, message", [
    (dict(mask_ratio=0.0), "mask_ratio must be in"), (dict(mask_ratio=1.0), "mask_ratio must be in"),
    (dict(mask_ratio=-0.5), "mask_ratio must be in"), (dict(decoder_depth=0), "decoder_depth"),
    (dict(backbone="small_convnet"), "not one: use one of small_vit, vit_tiny"),
    (dict(decoder_dim=30), "divisible by 4"), (dict(image_size=36), "multiple of patch_size"),
])
def test_bad_options_raise(options, message):
    with pytest.raises(SSLMinimalError, match=message):
        _model(**options)


def test_a_mask_ratio_that_keeps_no_patch_raises(tiny_dataset):
    with pytest.raises(SSLMinimalError, match="keeps 0 of 16 patches"):
        _model(mask_ratio=0.99).training_step(tiny_dataset.images[:2], torch.arange(2))


# ---------------------------------------------------------------------------------------------
# The figure helper
def test_reconstruct_gives_masked_input_reconstruction_and_mask(tiny_dataset):
    model = _model()
    images = tiny_dataset.images[:3]
    masked, reconstruction, mask = model.reconstruct(images, _seeded())
    assert masked.shape == reconstruction.shape == mask.shape == (3, 3, 32, 32)
    assert torch.allclose(mask.mean(dim=(1, 2, 3)), torch.full((3,), 0.75))
    x = images.float() / 255
    assert torch.equal(masked[mask == 0], x[mask == 0]) and torch.all(masked[mask == 1] == 0.5)
    assert reconstruction.min() >= 0 and reconstruction.max() <= 1
    pasted = model.reconstruct(images, _seeded(), paste_visible=True)[1]
    assert torch.equal(pasted[mask == 0], x[mask == 0]) and torch.equal(pasted[mask == 1], reconstruction[mask == 1])
