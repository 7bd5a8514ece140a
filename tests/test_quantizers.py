"""Quantizer invariants: straight-through gradients, VQBridge init and gradient flow, frozen codebooks."""

import pytest
import torch
import torch.nn.functional as F
from helpers import randomize_bridge, tiny_fvq

from fullvq_hf import (
    FrozenCodebookQuantizer,
    SimVQQuantizer,
    VectorQuantizer,
    VQBridge,
    VQBridgeQuantizer,
    bridge_grid,
)
from fullvq_hf.models.quantizers import entropy_loss
from fullvq_hf.models.vqbridge import parse_bridge_preset


def latents(b=2, d=8, h=4, w=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, d, h, w, generator=g).requires_grad_(True)


@pytest.mark.parametrize(
    "make",
    [
        lambda: VectorQuantizer(64, 8),
        lambda: VQBridgeQuantizer(64, 8, bridge_patch_size=2, bridge_hidden_size=16),
        lambda: FrozenCodebookQuantizer(64, 8, codebook_feature_dim=12),
        lambda: SimVQQuantizer(64, 8),
        lambda: VectorQuantizer(64, 8, use_l2_norm=True),
        lambda: VectorQuantizer(64, 8, entropy_loss_weight=0.1),
    ],
)
def test_quantizer_outputs_and_straight_through(make):
    torch.manual_seed(0)
    q = make()
    z = latents()
    out = q(z)
    assert out.quantized.shape == z.shape and out.indices.shape == (2, 4, 4)
    assert out.indices.dtype == torch.long
    codebook = q.get_codebook().detach()
    # the forward value is the chosen code
    flat = out.quantized.detach().permute(0, 2, 3, 1).reshape(-1, 8)
    assert torch.allclose(flat, codebook[out.indices.reshape(-1)], atol=1e-6)
    # straight-through: d(sum quantized)/dz == 1 everywhere (cosine mode: through the normalisation)
    (out.quantized.sum()).backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    if not q.use_l2_norm:
        assert torch.allclose(z.grad, torch.ones_like(z.grad))
    assert torch.isfinite(out.loss) and 0 < out.perplexity <= 64 and 0 < out.batch_usage <= 1


def test_losses_match_their_definitions():
    torch.manual_seed(0)
    q = VectorQuantizer(32, 4, beta=0.25, codebook_loss_weight=1.0)
    z = latents(d=4)
    out = q(z)
    zf = z.detach().permute(0, 2, 3, 1).reshape(-1, 4)
    zq = q.get_codebook().detach()[out.indices.reshape(-1)]
    assert torch.allclose(out.codebook_loss, F.mse_loss(zq, zf))
    assert torch.allclose(out.commitment_loss, F.mse_loss(zf, zq))
    assert torch.allclose(out.loss, out.codebook_loss + 0.25 * out.commitment_loss)


def test_vqbridge_starts_at_an_all_zero_projected_codebook():
    torch.manual_seed(0)
    q = VQBridgeQuantizer(256, 8, bridge_patch_size=4, bridge_hidden_size=32)
    assert q.embedding.weight.abs().sum() > 0
    assert torch.equal(q.get_codebook(), torch.zeros(256, 8))


def test_bridge_and_raw_codebook_get_gradient_and_every_code_moves():
    torch.manual_seed(0)
    q = VQBridgeQuantizer(64, 8, bridge_patch_size=2, bridge_hidden_size=16)
    opt = torch.optim.Adam(q.parameters(), lr=1e-2)
    z = latents().detach()
    for step in range(2):
        opt.zero_grad()
        out = q(z)
        out.loss.backward()
        # step 0: the recover layer is zero so only it gets gradient; from step 1 on, everything does
        assert q.qbridge.final_layer.linear.weight.grad.abs().sum() > 0
        if step == 1:
            assert q.embedding.weight.grad.abs().sum() > 0
            assert q.qbridge.x_embedder.proj.weight.grad.abs().sum() > 0
            # every code receives gradient, not only the selected ones (no dead codes by construction)
            assert (q.embedding.weight.grad.abs().sum(1) > 0).all()
        opt.step()


def test_plain_codebook_gets_gradient_only_on_selected_codes():
    torch.manual_seed(0)
    q = VectorQuantizer(64, 8)
    out = q(latents())
    out.loss.backward()
    touched = (q.embedding.weight.grad.abs().sum(1) > 0).nonzero().flatten()
    assert set(touched.tolist()) == set(out.indices.unique().tolist())


@pytest.mark.parametrize("cls,kwargs", [(FrozenCodebookQuantizer, {"codebook_feature_dim": 12}), (SimVQQuantizer, {})])
def test_frozen_codebooks_get_no_gradient_and_do_not_change(cls, kwargs):
    torch.manual_seed(0)
    q = cls(64, 8, **kwargs)
    frozen = q.frozen_codebook.clone()
    assert "frozen_codebook" not in dict(q.named_parameters())
    assert "frozen_codebook" in q.state_dict()
    opt = torch.optim.Adam(q.parameters(), lr=1e-1)
    proj = next(q.parameters()).detach().clone()
    for _ in range(3):
        opt.zero_grad()
        q(latents()).loss.backward()
        opt.step()
    assert torch.equal(q.frozen_codebook, frozen)
    assert not torch.equal(next(q.parameters()), proj)  # the projector does train


def test_chunked_entropy_loss_equals_dense():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(40, 6, generator=g, requires_grad=True)
    codebook = torch.randn(30, 6, generator=g, requires_grad=True)

    def dense(z, c, t=0.5):
        logits = -torch.cdist(z, c).pow(2) / t
        probs, log_probs = logits.softmax(-1), logits.log_softmax(-1)
        avg = probs.mean(0)
        return -(probs * log_probs).sum(-1).mean() + (avg * torch.log(avg + 1e-5)).sum()

    ref = dense(z, codebook)
    ref_grads = torch.autograd.grad(ref, (z, codebook))
    ours = entropy_loss(z, codebook, temperature=0.5, max_elements=60)  # 2 tokens per block
    grads = torch.autograd.grad(ours, (z, codebook))
    assert torch.allclose(ours, ref, atol=1e-5)
    for a, b in zip(grads, ref_grads):
        assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize(
    "k,p,grid",
    [(16384, 4, (128, 128)), (65536, 8, (256, 256)), (262144, 8, (512, 512)), (32768, 8, (128, 256)), (100000, 4, (200, 500)), (48, 2, (6, 8)), (8, 2, (2, 4))],
)
def test_bridge_grid_rule(k, p, grid):
    assert bridge_grid(k, p) == grid


def test_bridge_grid_rejects_sizes_not_divisible_by_patch_squared():
    with pytest.raises(ValueError, match=r"divisible by bridge_patch_size\*\*2 = 64.*codebook_size 960 or 1024"):
        bridge_grid(1000, 8)
    with pytest.raises(ValueError, match="bridge_patch_size"):
        tiny_fvq(codebook_size=100, bridge_patch_size=4)


def test_bridge_layout_is_row_major_patches():
    """Codes sharing a bridge token are the p x p blocks of the row-major (H, W) grid."""
    torch.manual_seed(0)
    base = torch.randn(48, 3)
    changed = base.clone()
    changed[9] += 1.0  # grid (6, 8): row 1, col 1 -> the patch of codes 0, 1, 8, 9
    # without transformer blocks (depth 0) a code only influences the codes of its own patch
    bridge_no_attn = VQBridge(48, 3, patch_size=2, hidden_size=8, depth=0)
    torch.nn.init.normal_(bridge_no_attn.final_layer.linear.weight)
    d0 = (bridge_no_attn(changed) - bridge_no_attn(base)).abs().sum(1)
    assert set((d0 > 0).nonzero().flatten().tolist()) == {0, 1, 8, 9}


def test_bridge_presets():
    assert parse_bridge_preset("L/8") == {"bridge_hidden_size": 256, "bridge_patch_size": 8}
    with pytest.raises(ValueError, match="Unknown VQBridge preset"):
        parse_bridge_preset("Q/3")


def test_fvq_model_projected_codebook_is_used_for_search():
    torch.manual_seed(0)
    m = randomize_bridge(tiny_fvq()).eval()
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    h = m.encode(x).latents
    idx = m.tokenize(x)
    codebook = m.get_codebook()
    d = torch.cdist(h.permute(0, 2, 3, 1).reshape(-1, 8), codebook)
    assert torch.equal(idx.reshape(-1), d.argmin(1))
