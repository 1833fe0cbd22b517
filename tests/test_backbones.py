"""Tests for the backbones: the Encoder's input checks, and the Vision Transformer's attention, positions and sizes."""

import pytest
import torch

from ssl_minimal import backbones
from ssl_minimal.checks import SSLMinimalError


def test_encoder_checks_shape_and_values_of_every_cpu_batch():
    encoder = backbones.build_encoder("small_convnet", width=8)
    assert encoder(torch.rand(2, 3, 32, 32)).shape == (2, encoder.output_dim)
    with pytest.raises(SSLMinimalError, match=r"float in \[0, 1\]"):       # still checked after the first call
        encoder(torch.rand(2, 3, 32, 32) * 255)
    with pytest.raises(SSLMinimalError, match=r"\[B, 3, H, W\]"):
        encoder(torch.rand(2, 32, 32))


def test_encoder_reads_pixel_values_off_the_cpu_only_at_its_first_call(monkeypatch):
    # On a GPU, reading min/max makes the CPU wait for the device: done once, not at every step.
    # ("meta" tensors stand in for a GPU here: same code path, no device needed.)
    calls = []
    monkeypatch.setattr(backbones, "check_images", lambda images, **options: calls.append(options["check_values"]))
    encoder = backbones.build_encoder("small_convnet", width=8).to("meta")
    for _ in range(3):
        encoder(torch.empty(2, 3, 32, 32, device="meta"))
    assert calls == [True, False, False]


# ----------------------------------------------------------------------------------------------
# Vision Transformer
def _vit(**options):
    torch.manual_seed(0)
    return backbones.VisionTransformer(**{"dim": 32, "depth": 2, "heads": 4, "patch_size": 8, **options})


def test_attention_with_weights_equals_the_fused_kernel_and_rows_are_distributions():
    attention = backbones.Attention(32, heads=4)
    x = torch.randn(3, 5, 32)
    fused, none = attention(x)
    explicit, weights = attention(x, return_attention=True)
    assert none is None and weights.shape == (3, 4, 5, 5)
    assert torch.allclose(fused, explicit, atol=1e-5)
    assert torch.allclose(weights.sum(-1), torch.ones(3, 4, 5), atol=1e-5)
    # by hand for head 0: softmax(q k^T / sqrt(d)) with q, k the first 8 channels of each third of qkv
    qkv = attention.qkv(x)
    q, k = qkv[..., 0:8], qkv[..., 32:40]
    assert torch.allclose(weights[:, 0], (q @ k.transpose(1, 2) / 8 ** 0.5).softmax(-1), atol=1e-5)


def test_vit_output_is_the_final_cls_state_and_sees_every_patch():
    vit = _vit()
    images = torch.rand(2, 3, 32, 32)
    features = vit(images)
    assert features.shape == (2, 32) and vit.output_dim == 32
    assert torch.allclose(features, vit.transform(vit.embed(images))[:, 0])
    changed = images.clone()
    changed[:, :, 24:, 24:] = 0                      # only the last of the 4 x 4 patches
    assert not torch.allclose(vit(changed), features, atol=1e-4)
    assert vit.embed(images).shape == (2, 16, 32)    # (32 / 8)^2 = 16 patch tokens


def test_last_self_attention_is_the_last_blocks_softmax():
    vit = _vit()
    images = torch.rand(2, 3, 32, 32)
    weights = vit.last_self_attention(images)
    assert weights.shape == (2, 4, 17, 17)           # [B, heads, 1 + N, 1 + N]
    assert torch.allclose(weights.sum(-1), torch.ones(2, 4, 17), atol=1e-5)
    x = torch.cat([vit.cls_token.expand(2, -1, -1), vit.embed(images)], dim=1)
    x = vit.blocks[0](x)
    _, expected = vit.blocks[1].attention(vit.blocks[1].norm1(x), return_attention=True)
    assert torch.allclose(weights, expected, atol=1e-6)


def test_sincos_position_embedding_by_hand_and_fixed():
    table = backbones.sincos_position_embedding(grid_size=3, dim=8)     # [9, 8]: 2 frequencies per sin/cos
    row, column = 1, 2                                                  # token 1 * 3 + 2 = 5
    frequencies = torch.tensor([1.0, 1.0 / 100])                        # 1 / 10000^(k / 2), k = 0, 1
    expected = torch.cat([torch.sin(row * frequencies), torch.cos(row * frequencies),
                          torch.sin(column * frequencies), torch.cos(column * frequencies)])
    assert torch.allclose(table[5], expected, atol=1e-6)
    assert len(set(map(tuple, table.tolist()))) == 9                    # every position differs
    vit = _vit(position_embedding="sincos")
    assert "position" in dict(vit.named_buffers()) and "position" not in dict(vit.named_parameters())
    with pytest.raises(SSLMinimalError, match="divisible by 4"):
        backbones.sincos_position_embedding(2, 6)


def test_vit_takes_other_image_sizes_by_resizing_its_position_embedding():
    vit = _vit()
    assert torch.equal(vit.position_for(4), vit.position)
    assert vit.position_for(2).shape == (1, 4, 32)
    assert vit(torch.rand(2, 3, 16, 16)).shape == (2, 32)    # a small (local) crop: a 2 x 2 grid
    assert vit(torch.rand(1, 3, 96, 96)).shape == (1, 32)    # STL-10's size
    with pytest.raises(SSLMinimalError, match="multiple of its patch size"):
        vit(torch.rand(1, 3, 20, 20))
    with pytest.raises(SSLMinimalError, match="divisible by the number of heads"):
        _vit(dim=30)
    with pytest.raises(SSLMinimalError, match="position embedding"):
        _vit(position_embedding="rotary")


def test_blocks_are_pre_norm_with_the_residual_stream_left_unnormalised():
    """ViT Eq. 2-3: x + MSA(LN(x)), then x + MLP(LN(x)); a post-norm block LN(x + MSA(x)) differs."""
    torch.manual_seed(0)
    block = backbones.TransformerBlock(16, heads=2)
    with torch.no_grad():                     # LayerNorms that are not the identity, so each one counts
        for norm in (block.norm1, block.norm2):
            norm.weight.uniform_(0.5, 2.0), norm.bias.normal_()
    x = 5 * torch.randn(2, 7, 16) + 3         # a residual stream far from mean 0, std 1
    y = x + block.attention(block.norm1(x))[0]
    assert torch.allclose(block(x), y + block.mlp(block.norm2(y)), atol=1e-5)
    out, weights = block(x, return_attention=True)
    assert torch.allclose(out, block(x), atol=1e-5) and weights.shape == (2, 2, 7, 7)
    # the output is not normalised: it keeps the stream's scale (a post-norm block's would be ~ LN's)
    assert (block(x) - x).abs().mean() < x.abs().mean()


def _qkv_blocks(vit):
    """Every block's fused qkv weight [3D, D] cut into its q, k and v blocks, each [D, D]."""
    return [w for block in vit.blocks for w in block.attention.qkv.weight.detach().chunk(3)]


def _is_uniform(weight, bound):
    """Drawn from U(-bound, bound): max |w| near the bound and std bound / sqrt(3)."""
    return 0.97 * bound < weight.abs().max() <= bound and abs(weight.std() / (bound / 3 ** 0.5) - 1) < 0.05


def test_moco_v3_init_is_xavier_with_q_k_v_as_three_blocks_and_a_tiny_cls_token():
    D = 64
    vit = _vit(dim=D, heads=4, init="moco_v3")
    assert all(_is_uniform(w, (6 / (D + D)) ** 0.5) for w in _qkv_blocks(vit))    # each [D, D]: fans D and D
    for name, module in vit.named_modules():
        if isinstance(module, torch.nn.Linear):
            assert torch.equal(module.bias, torch.zeros_like(module.bias))
            if not name.endswith("qkv"):                                     # Xavier on [out, in]
                assert _is_uniform(module.weight.detach(), (6 / sum(module.weight.shape)) ** 0.5), name
    assert 0 < vit.cls_token.abs().max() < 1e-5 and abs(vit.cls_token.std() / 1e-6 - 1) < 0.3   # std 1e-6
    patch = vit.patch_embedding.weight.detach()                              # [D, 3, 8, 8]: fans 3 * 64 and D
    assert _is_uniform(patch, (6 / (3 * 64 + D)) ** 0.5)
    assert torch.equal(vit.patch_embedding.bias, torch.zeros(D))


def test_mae_init_is_xavier_on_the_fused_qkv_with_cls_std_0_02():
    D = 64
    vit = _vit(dim=D, heads=4, init="mae")
    for weight in (block.attention.qkv.weight.detach() for block in vit.blocks):
        assert _is_uniform(weight, (6 / (3 * D + D)) ** 0.5)                  # one [3D, D] matrix
    assert abs(vit.cls_token.std() / 0.02 - 1) < 0.3
    assert _is_uniform(vit.patch_embedding.weight.detach(), (6 / (3 * 64 + D)) ** 0.5)


def test_default_init_is_deit_normal_std_0_02():
    vit = _vit(dim=64, heads=4)
    assert vit.init == "deit"
    for weight in _qkv_blocks(vit) + [vit.blocks[0].mlp[0].weight.detach()]:
        assert abs(weight.std() / 0.02 - 1) < 0.1 and abs(weight.mean()) < 0.002
    with pytest.raises(SSLMinimalError, match="ViT init"):
        _vit(init="xavier")


def test_vit_encoders_by_name_train():
    encoder = backbones.build_encoder("small_vit")
    assert encoder.output_dim == 128 and encoder.backbone.patch_size == 8
    assert backbones.build_encoder("vit_tiny").backbone.grid_size == 8      # 4 x 4 patches of a 32 x 32 image
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    encoder(images).pow(2).sum().backward()
    assert all(p.grad is not None for p in encoder.parameters() if p.requires_grad)


def test_budgets_give_vit_methods_their_vit_backbone():
    from ssl_minimal.method import Method
    from ssl_minimal.training import get_budget

    class ViTMethod(Method):
        architecture = "vit"

    assert get_budget("cpu").backbone_for(ViTMethod) == "small_vit"
    assert get_budget("gpu").backbone_for(ViTMethod) == "vit_tiny"
    assert get_budget("gpu").backbone_for(Method) == "resnet18"
