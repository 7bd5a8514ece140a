"""Schedules, discriminator, GAN losses, adaptive weight and perceptual loss of fullvq_hf.training (tiny, CPU)."""

import json
import logging
import math
import warnings

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from fullvq_hf.training import losses, schedules
from fullvq_hf.training.losses import (
    NO_PERCEPTUAL_MESSAGE,
    PatchGANDiscriminator,
    PerceptualLoss,
    adaptive_gan_weight,
    build_perceptual_loss,
    hinge_d_loss,
    hinge_g_loss,
    non_saturating_d_loss,
    non_saturating_g_loss,
)
from fullvq_hf.training.schedules import constant, cosine, get_scheduler, learning_annealing, scale_lr


# ---------------------------------------------------------------------------------------------------- schedules
@pytest.mark.parametrize("decay", ["linear", "cosine"])
def test_learning_annealing_key_steps(decay):
    total, warmup = 110, 10  # progress p = (step - 10) / 99: hold while p < 0.3 (steps 10..39), decay to step 109
    f = lambda s: learning_annealing(s, total, warmup, decay=decay)  # noqa: E731
    assert f(0) == pytest.approx(0.005)
    assert f(5) == pytest.approx(0.005 + 0.995 * 0.5)
    assert f(10) == pytest.approx(1.0)  # end of warm-up
    assert f(25) == 1.0 and f(39) == 1.0  # hold, end of hold (p = 29/99 < 0.3)
    assert f(40) < 1.0  # p = 30/99 >= 0.3
    # midpoint of the decay (p = 0.65) is step 74.35; linear and cosine both give (1 + end) / 2 there
    mid = (learning_annealing(74, total, warmup, decay=decay) + learning_annealing(75, total, warmup, decay=decay)) / 2
    assert mid == pytest.approx((1 + 0.01) / 2, abs=0.012)
    assert f(109) == pytest.approx(0.01)  # last step
    assert f(200) == pytest.approx(0.01)
    values = [f(s) for s in range(total)]
    assert all(a >= b for a, b in zip(values[10:], values[11:]))  # monotone after warm-up


def test_learning_annealing_exact_midpoint_and_shapes():
    lin = learning_annealing(91, 122, 1, hold_fraction=0.5, decay="linear")  # decay 61 .. 121, midpoint 91
    cos = learning_annealing(91, 122, 1, hold_fraction=0.5, decay="cosine")
    assert lin == pytest.approx(0.505) and cos == pytest.approx(0.505)
    q_lin = learning_annealing(76, 122, 1, hold_fraction=0.5, decay="linear")  # a quarter in
    q_cos = learning_annealing(76, 122, 1, hold_fraction=0.5, decay="cosine")
    assert q_lin == pytest.approx(1 - 0.99 * 0.25)
    assert q_cos == pytest.approx(0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert learning_annealing(0, 10, 0) == 1.0  # no warm-up


def test_constant_and_cosine():
    assert constant(0, 4) == pytest.approx(0.005)
    assert constant(2, 4) == pytest.approx(0.5025)
    assert constant(4, 4) == 1.0 and constant(10**6, 4) == 1.0
    assert constant(0, 0) == 1.0
    assert cosine(0, 22, 1) == pytest.approx(0.005)
    assert cosine(1, 22, 1) == pytest.approx(1.0)
    assert cosine(11, 22, 1) == pytest.approx(0.5)  # middle of the decay 1 .. 21
    assert cosine(6, 22, 1) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert cosine(21, 22, 1) == pytest.approx(0.0) and cosine(99, 22, 1) == pytest.approx(0.0)
    assert cosine(21, 22, 1, end_factor=0.1) == pytest.approx(0.1)


def test_schedule_errors():
    with pytest.raises(ValueError, match="warmup_steps=10 leaves no step"):
        learning_annealing(0, 10, 10)
    with pytest.raises(ValueError, match="hold_fraction"):
        learning_annealing(0, 10, 1, hold_fraction=1.5)
    with pytest.raises(ValueError, match="decay must be one of"):
        learning_annealing(0, 10, 1, decay="step")
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match=r"Unknown lr schedule 'poly'.*annealing"):
        get_scheduler("poly", opt, 10, 1)
    with pytest.raises(ValueError, match="hold_fraction"):
        get_scheduler("cosine", opt, 10, 1, hold_fraction=0.5)
    assert scale_lr(1e-4, 256) == pytest.approx(2e-4)
    assert scale_lr(1e-4, 64, reference_batch=256) == pytest.approx(2.5e-5)


@pytest.mark.parametrize("name", ["annealing", "annealing-cosine", "constant", "cosine"])
def test_scheduler_values_and_json_state_round_trip(name):
    def make():
        opt = torch.optim.SGD([nn.Parameter(torch.zeros(2))], lr=0.1)
        return opt, get_scheduler(name, opt, total_steps=30, warmup_steps=4)

    opt, sched = make()
    start = 0.005  # every schedule warms up from 0.005 (FVQ's wp0)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * start)
    lrs = []
    for _ in range(12):
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs[3] == pytest.approx(0.1)  # step 4 = end of warm-up
    # the trainers' checkpoints: the scheduler state as JSON (no pickle)
    state = json.loads(json.dumps(sched.state_dict()))

    opt2, sched2 = make()
    opt2.load_state_dict(opt.state_dict())
    sched2.load_state_dict(state)
    for _ in range(25):
        for o, s in ((opt, sched), (opt2, sched2)):
            o.step()
            s.step()
        assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
        assert sched2.get_last_lr() == sched.get_last_lr()
    if name != "constant":
        assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * (0.0 if name == "cosine" else 0.01))


def _official_lin(step, total, warmup, lr_t=0.3, cos=False):
    """FVQ's combined_lr_lambda (vq_train_qbridge_lr.py:166-189), restated from its definition: wp0 = 0.005,
    wpe = 0.01, warm-up over ``warmup`` steps, progress pasd = (step - W) / (total - 1 - W), 1 while pasd < lrT,
    then 'lin': wpe + (1 - wpe) * (1 - pasd) / (1 - lrT), or 'cos' over (pasd - lrT) / (1 - lrT)."""
    if step < warmup:
        return 0.005 + 0.995 * step / max(1, warmup)
    pasd = (step - warmup) / (total - 1 - warmup)
    if pasd < lr_t:
        return 1.0
    if cos:
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * (pasd - lr_t) / (1 - lr_t)))
    return 0.01 + 0.99 * (1 - pasd) / (1 - lr_t)


@pytest.mark.parametrize("decay", ["linear", "cosine"])
@pytest.mark.parametrize(("total", "warmup", "hold"), [(110, 10, 0.3), (30, 4, 0.3), (1000, 0, 0.3), (7, 1, 0.3),
                                                       (3, 1, 0.3), (400, 40, 0.05), (97, 13, 0.0)])  # fmt: skip
def test_annealing_scheduler_is_the_official_schedule_at_every_step(total, warmup, hold, decay):
    """get_scheduler('annealing') = FVQ's 'lin' mode ('annealing-cosine' = 'cos'), warm-up included (from 0.005,
    not WSD's 0.01), with the hold ending at a fractional progress (--lrT / hold_fraction)."""
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    name = "annealing-cosine" if decay == "cosine" else "annealing"
    sched = get_scheduler(name, opt, total, warmup, hold_fraction=hold)
    factors = []
    for _ in range(total):
        factors.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    official = [_official_lin(s, total, warmup, hold, cos=decay == "cosine") for s in range(total)]
    assert factors == pytest.approx(official, abs=1e-12)
    assert factors == pytest.approx([learning_annealing(s, total, warmup, hold_fraction=hold, decay=decay)
                                     for s in range(total)], abs=1e-15)  # fmt: skip
    assert factors[-1] == pytest.approx(0.01)
    assert json.loads(json.dumps(sched.state_dict()))["lr_lambdas"][0]["hold_fraction"] == hold


def test_annealing_of_fvq_16384_sh_in_steps():
    """FVQ-16384.sh on ImageNet-1k: 1,281,167 images // 128 = 10,009 steps an epoch (drop_last), 40 epochs,
    warmup_ep 4: warm-up 40,036 steps, hold until p >= 0.3, 0.01 at step 400,359."""
    total, warmup = 40 * 10009, 4 * 10009
    f = lambda s: learning_annealing(s, total, warmup)  # noqa: E731
    assert f(0) == 0.005 and f(warmup) == 1.0
    hold_end = warmup + math.ceil(0.3 * (total - 1 - warmup))  # first step with p >= 0.3
    assert f(hold_end - 1) == 1.0 and f(hold_end) < 1.0
    for s in (0, 20018, warmup, hold_end - 1, hold_end, 300000, total - 1):
        assert f(s) == pytest.approx(_official_lin(s, total, warmup), abs=1e-12)


# ---------------------------------------------------------------------------------------------------- discriminator
def test_discriminator_shapes_and_keys():
    torch.manual_seed(0)
    disc = PatchGANDiscriminator(in_channels=3, ndf=8, n_layers=3)
    assert disc(torch.randn(2, 3, 32, 32)).shape == (2, 1, 2, 2)
    assert disc(torch.randn(2, 3, 64, 64)).shape == (2, 1, 6, 6)
    keys = list(disc.state_dict())
    assert all(k.startswith("main.") for k in keys)
    # LlamaGen / taming NLayerDiscriminator(n_layers=3) with BatchNorm: convs at 0, 2, 5, 8, 11, norms at 3, 6, 9
    bn = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    expected = ["main.0.weight", "main.0.bias"]
    for conv, norm in ((2, 3), (5, 6), (8, 9)):
        expected += [f"main.{conv}.weight"] + [f"main.{norm}.{b}" for b in bn]
    expected += ["main.11.weight", "main.11.bias"]
    assert keys == expected
    shapes = {k: tuple(v.shape) for k, v in disc.state_dict().items()}
    assert shapes["main.2.weight"] == (16, 8, 4, 4) and shapes["main.8.weight"] == (64, 32, 4, 4)
    assert shapes["main.11.weight"] == (1, 64, 4, 4)
    w = disc.main[5].weight.detach()
    assert abs(float(w.mean())) < 0.01 and float(w.std()) == pytest.approx(0.02, rel=0.1)
    assert float(disc.main[3].bias.detach().abs().max()) == 0.0


def test_discriminator_other_norms_and_errors():
    group = PatchGANDiscriminator(in_channels=1, ndf=4, n_layers=2, norm="group")
    assert group(torch.randn(1, 1, 16, 16)).shape == (1, 1, 2, 2)
    plain = PatchGANDiscriminator(ndf=4, n_layers=2, norm="none")
    assert "main.2.bias" in plain.state_dict() and isinstance(plain.main[3], nn.Identity)
    with pytest.raises(ValueError, match="norm must be one of"):
        PatchGANDiscriminator(norm="instance")
    with pytest.raises(ValueError, match="3 channels"):
        plain(torch.randn(1, 16, 16, 3))
    with pytest.raises(ValueError, match=r"too small.*n_layers <= 1"):
        plain(torch.randn(1, 3, 8, 8))


# ---------------------------------------------------------------------------------------------------- GAN losses
def test_gan_losses_known_values():
    real = torch.tensor([2.0, 0.5, -1.0])  # relu(1 - x) = 0, 0.5, 2 -> mean 5/6
    fake = torch.tensor([-2.0, 0.0, 1.0])  # relu(1 + x) = 0, 1, 2 -> mean 1
    assert hinge_d_loss(real, fake).item() == pytest.approx(0.5 * (5 / 6 + 1))
    assert hinge_g_loss(fake).item() == pytest.approx(1 / 3)
    sp = torch.nn.functional.softplus
    assert non_saturating_d_loss(real, fake).item() == pytest.approx(0.5 * (sp(-real).mean() + sp(fake).mean()).item())
    assert non_saturating_g_loss(torch.zeros(4)).item() == pytest.approx(math.log(2))


def test_adaptive_gan_weight_matches_hand_computation():
    torch.manual_seed(0)
    decoder = nn.Linear(4, 3)  # "last layer" of a tiny decoder
    x, target = torch.randn(5, 4), torch.randn(5, 3)
    out = decoder(x)
    rec = (out - target).pow(2).mean()
    gan = -(out * torch.tensor([1.0, -2.0, 0.5])).mean()
    # by hand: d rec / dW = 2 (out - target)^T x / 15, d gan / dW = -c^T x / 15 with c the per-column weights
    g_rec = (2 * (out - target)).t().detach() @ x / 15
    g_gan = -(torch.tensor([1.0, -2.0, 0.5])[:, None] * x.sum(0)[None, :]) / 15
    expected = g_rec.norm() / (g_gan.norm() + 1e-4)
    weight = adaptive_gan_weight(rec, gan, decoder.weight)
    assert not weight.requires_grad and weight.shape == ()
    assert weight.item() == pytest.approx(expected.item(), rel=1e-5)
    assert adaptive_gan_weight(rec, gan, decoder.weight, max_weight=1e-3).item() == pytest.approx(1e-3)
    (rec + weight * gan).backward()  # the graph is still usable
    assert decoder.weight.grad is not None
    with torch.no_grad():
        assert adaptive_gan_weight(rec, gan, decoder.weight).item() == 1.0
    other = nn.Parameter(torch.ones(1))
    assert adaptive_gan_weight(decoder(x).sum(), other * 2, decoder.weight).item() == 1.0  # not in gan's graph


# ---------------------------------------------------------------------------------------------------- perceptual
@pytest.fixture(scope="module")
def perceptual():
    torch.manual_seed(0)
    return PerceptualLoss()


def test_perceptual_loss_values_and_gradient(perceptual):
    g = torch.Generator().manual_seed(1)
    a = torch.rand(2, 3, 16, 16, generator=g) * 2 - 1
    b = torch.rand(2, 3, 16, 16, generator=g) * 2 - 1
    assert perceptual(a, a).item() == 0.0
    d_ab, d_ba = perceptual(a, b), perceptual(b, a)
    assert d_ab.item() > 0 and d_ab.item() == pytest.approx(d_ba.item(), rel=1e-5)
    assert perceptual(a, b, reduction="none").shape == (2,)
    x = a.clone().requires_grad_(True)
    perceptual(x, b).backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
    assert all(not p.requires_grad for p in perceptual.parameters()) and not perceptual.training
    perceptual.train()
    assert not perceptual.training
    gray = perceptual(a[:, :1], b[:, :1])
    assert gray.item() == pytest.approx(perceptual(a[:, :1].expand(-1, 3, -1, -1), b[:, :1].repeat(1, 3, 1, 1)).item())
    with pytest.raises(ValueError, match="3 \\(or 1\\) channels"):
        perceptual(a[:, :2], b[:, :2])
    with pytest.raises(ValueError, match="at least 16 px"):
        perceptual(a[..., :8, :8], b[..., :8, :8])


def test_perceptual_weights_round_trip(tmp_path, perceptual):
    g = torch.Generator().manual_seed(2)
    vgg = {
        k: torch.randn(v.shape, generator=g) * 0.05
        for k, v in perceptual.state_dict().items()
        if k.startswith("features.")
    }
    assert len(vgg) == 26 and vgg["features.28.weight"].shape == (512, 512, 3, 3)
    # torchvision layout, with its classifier (ignored) and without lin weights -> uniform 1 / C
    file = tmp_path / "vgg16.safetensors"
    save_file({**vgg, "classifier.0.weight": torch.zeros(2, 2)}, str(file))
    loaded = PerceptualLoss.from_pretrained(str(file))
    state = loaded.state_dict()
    assert all(torch.equal(state[k], v) for k, v in vgg.items())
    assert not loaded.has_learned_lin
    assert torch.allclose(state["lin2.model.1.weight"], torch.full((1, 256, 1, 1), 1 / 256))
    # LPIPS lin weights in a second .pth file (LPIPS key layout) are merged
    lin = {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1, generator=g) for k, c in enumerate((64, 128, 256, 512, 512))}
    torch.save(lin, tmp_path / "vgg_lpips.pth")
    both = PerceptualLoss.from_pretrained([file, tmp_path / "vgg_lpips.pth"])
    assert both.has_learned_lin
    assert all(torch.equal(both.state_dict()[k], v) for k, v in {**vgg, **lin}.items())
    # save_pretrained -> one file -> identical module
    path = both.save_pretrained(tmp_path / "out")
    again = build_perceptual_loss(str(tmp_path / "out"))
    assert path.name == "vgg16_lpips.safetensors" and again.has_learned_lin
    assert all(torch.equal(again.state_dict()[k], v) for k, v in both.state_dict().items())


def test_perceptual_weights_errors(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        PerceptualLoss.from_pretrained(str(tmp_path / "missing.safetensors"))
    with pytest.raises(ValueError, match="Hub repo"):  # offline in tests: a cache miss, no network
        PerceptualLoss.from_pretrained("no-such-owner/no-such-repo/vgg.safetensors")
    lin_only = tmp_path / "lin.safetensors"
    save_file({"lin0.model.1.weight": torch.ones(1, 64, 1, 1)}, str(lin_only))
    with pytest.raises(ValueError, match="lacks VGG16 weights.*only LPIPS lin weights"):
        PerceptualLoss.from_pretrained(lin_only)
    bad = tmp_path / "bad.safetensors"
    save_file({"features.0.weight": torch.ones(64, 3, 1, 1)}, str(bad))
    with pytest.raises(ValueError, match="lacks VGG16 weights"):
        PerceptualLoss.from_pretrained(bad)


def test_build_perceptual_loss_none_warns_once(monkeypatch, caplog):
    monkeypatch.setattr(losses, "_warned_no_perceptual", False)
    with pytest.warns(UserWarning, match=r"no perceptual weights given \(--perceptual-weights\)"):
        assert build_perceptual_loss(None) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert build_perceptual_loss(None) is None  # silent the second time
    monkeypatch.setattr(losses, "_warned_no_perceptual", False)
    log = logging.getLogger("test-trainer")
    with caplog.at_level(logging.WARNING, logger="test-trainer"):
        build_perceptual_loss(None, logger=log)
        build_perceptual_loss(None, logger=log)
    assert [r.getMessage() for r in caplog.records] == [NO_PERCEPTUAL_MESSAGE]


def test_schedules_module_exports():
    assert set(schedules.SCHEDULES) == {"annealing", "annealing-cosine", "constant", "cosine", "linear"}


def test_linear_schedule_decays_from_one_to_end_factor_after_warmup():
    from fullvq_hf.training.schedules import linear

    assert linear(0, 11, 1) == pytest.approx(0.005)
    assert [linear(s, 11, 1) for s in (1, 10, 20)] == pytest.approx([1.0, 0.0, 0.0])
    assert linear(6, 11, 1, end_factor=0.1) == pytest.approx(1.0 - 0.9 * 5 / 9)
    sched = get_scheduler("linear", torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=2.0), 11, 1)
    assert sched.get_last_lr()[0] == pytest.approx(0.01)
