"""The papers' evaluation protocol: centre crops without resizing, the FID Inception network and the Inception Score,
Inception FID as a streaming metric, LPIPS (AlexNet / VGG16), their weight files and the `fullvq eval` options.

No pretrained weights exist on these machines: the networks are checked with random weights (shapes, the FID
variant's pooling, key layouts) and the maths against closed forms.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from torch import nn

from fullvq_hf.data import ImageTransform
from fullvq_hf.evaluation.inception import (
    FIDInceptionV3,
    InceptionA,
    InceptionE,
    InceptionMetrics,
    inception_score,
    resize_bilinear_tf1,
)
from fullvq_hf.evaluation.lpips import LPIPS, lpips_canonical_keys
from fullvq_hf.metrics import FeatureStatistics, frechet_distance


def same_tensors(a: dict, b: dict) -> bool:
    """Every tensor of ``a`` is in ``b``, bit for bit."""
    return all(k in b and torch.equal(v, b[k]) for k, v in a.items())


@pytest.fixture(scope="module")
def inception():
    torch.manual_seed(0)
    net = FIDInceptionV3()
    # kaiming init keeps activations O(1) through the 94 random conv layers (PyTorch's default init shrinks them)
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    return net


# ------------------------------------------------------------------------------------------ FID Inception network


def test_fid_inception_layout_matches_pytorch_fid(inception):
    sd = inception.state_dict()
    # torchvision Inception3 without AuxLogits, with a 1008-way classifier: 23,850,960 parameters
    assert sum(p.numel() for p in inception.parameters()) == 23_850_960
    assert sum(1 for k in sd if k.endswith("num_batches_tracked")) == 94  # 94 conv-BN blocks
    assert tuple(sd["Conv2d_1a_3x3.conv.weight"].shape) == (32, 3, 3, 3)
    assert tuple(sd["Mixed_6b.branch7x7_2.conv.weight"].shape) == (128, 128, 1, 7)
    assert tuple(sd["Mixed_7c.branch3x3dbl_3b.conv.weight"].shape) == (384, 384, 3, 1)
    assert tuple(sd["fc.weight"].shape) == (1008, 2048) and tuple(sd["fc.bias"].shape) == (1008,)
    assert not any(k.startswith("AuxLogits") for k in sd) and all(m.eps == 1e-3 for m in inception.modules()
                                                                   if isinstance(m, nn.BatchNorm2d))  # fmt: skip
    assert not any(p.requires_grad for p in inception.parameters())
    inception.train()
    assert not inception.training  # always eval: BatchNorm must use the stored statistics


def _block_shapes(net, x):
    names = ("Conv2d_4a_3x3", "Mixed_5b", "Mixed_5d", "Mixed_6a", "Mixed_6e", "Mixed_7a", "Mixed_7c")
    shapes = {}
    hooks = [getattr(net, n).register_forward_hook(lambda m, i, o, n=n: shapes.update({n: tuple(o.shape)}))
             for n in names]  # fmt: skip
    try:
        with torch.no_grad():
            feats = net.pool_features(x)
    finally:
        for h in hooks:
            h.remove()
    return shapes, feats


def test_fid_inception_forward_at_the_smallest_input(inception):
    """The network on its smallest input, 75x75 (fast on CPU): every block's output shape, finite features."""
    shapes, feats = _block_shapes(inception, torch.randn(2, 3, 75, 75, generator=torch.Generator().manual_seed(0)))
    assert shapes == {
        "Conv2d_4a_3x3": (2, 192, 15, 15), "Mixed_5b": (2, 256, 7, 7), "Mixed_5d": (2, 288, 7, 7),
        "Mixed_6a": (2, 768, 3, 3), "Mixed_6e": (2, 768, 3, 3), "Mixed_7a": (2, 1280, 1, 1), "Mixed_7c": (2, 2048, 1, 1),
    }  # fmt: skip
    assert feats.shape == (2, 2048) and torch.isfinite(feats).all() and feats.abs().max() > 1e-3


@pytest.mark.slow
def test_fid_inception_forward_shapes_at_299(inception):
    images = torch.rand(1, 1, 40, 56, generator=torch.Generator().manual_seed(0)) * 2 - 1  # grey, any size
    shapes, _ = _block_shapes(inception, inception.preprocess(images))
    assert shapes == {
        "Conv2d_4a_3x3": (1, 192, 71, 71), "Mixed_5b": (1, 256, 35, 35), "Mixed_5d": (1, 288, 35, 35),
        "Mixed_6a": (1, 768, 17, 17), "Mixed_6e": (1, 768, 17, 17), "Mixed_7a": (1, 1280, 8, 8),
        "Mixed_7c": (1, 2048, 8, 8),
    }  # fmt: skip
    with torch.no_grad():
        feats, logits = inception.features_and_logits(images)
    assert feats.shape == (1, 2048) and logits.shape == (1, 1008)


def test_fid_inception_logits_leave_out_the_bias(inception, monkeypatch):
    """IS logits are ``features @ fc.weight.T`` (the reference); ``logits_bias=True`` adds the bias. The feature
    path is replaced by a fixed tensor here: the 299 px forward is covered by the slow test."""
    feats = torch.randn(3, 2048, generator=torch.Generator().manual_seed(0))
    monkeypatch.setattr(inception, "forward", lambda images: feats)
    f, logits = inception.features_and_logits(torch.zeros(3, 3, 8, 8))
    assert f is feats and logits.shape == (3, 1008)
    torch.testing.assert_close(logits, feats @ inception.fc.weight.T)
    torch.testing.assert_close(inception.features_and_logits(None, logits_bias=True)[1], logits + inception.fc.bias)


def test_fid_variant_pool_branches():
    """TensorFlow's average pool does not count the zero padding; the last E block max-pools."""
    block = InceptionA(4, pool_features=4).eval()
    with torch.no_grad():
        block.branch_pool.conv.weight.copy_(torch.eye(4).view(4, 4, 1, 1))
    x = torch.ones(1, 4, 5, 5)
    out = block(x)[:, -4:]  # the pool branch: identity conv, BN with unit statistics
    torch.testing.assert_close(out, torch.full_like(out, 1 / math.sqrt(1 + 1e-3)))  # corners too (not 4/9)

    x = torch.rand(1, 6, 4, 4, generator=torch.Generator().manual_seed(1))
    for pool, expected in (("max", nn.functional.max_pool2d(x, 3, 1, 1)),
                           ("avg", nn.functional.avg_pool2d(x, 3, 1, 1, count_include_pad=False))):  # fmt: skip
        block = InceptionE(6, pool=pool).eval()
        with torch.no_grad():
            block.branch_pool.conv.weight.zero_()
            block.branch_pool.conv.weight[:6, :, 0, 0] = torch.eye(6)
        torch.testing.assert_close(block(x)[:, -192:-186], expected / math.sqrt(1 + 1e-3))
    with pytest.raises(ValueError, match="'avg' or 'max'"):
        InceptionE(6, pool="min")


def test_resize_bilinear_tf1_closed_forms():
    x = torch.tensor([[[[1.0, 3.0]]]])
    # upsampling 2 -> 4 samples at 0, 0.5, 1, 1.5 (no half-pixel offset; the last one clamps at the border)
    torch.testing.assert_close(resize_bilinear_tf1(x, (1, 4)), torch.tensor([[[[1.0, 2.0, 3.0, 3.0]]]]))
    # PyTorch's align_corners=False resize differs (half-pixel centres): the reason for the protocol option
    assert not torch.allclose(nn.functional.interpolate(x, size=(1, 4), mode="bilinear", align_corners=False),
                              resize_bilinear_tf1(x, (1, 4)))  # fmt: skip
    # downsampling 4 -> 2 picks pixels 0 and 2 (no averaging); same size is the identity
    y = torch.arange(16.0).view(1, 1, 4, 4)
    torch.testing.assert_close(resize_bilinear_tf1(y, 2), y[:, :, ::2, ::2])
    torch.testing.assert_close(resize_bilinear_tf1(y, 4), y)
    # 3 -> 5 in 2-D: separable, sample points 0, 0.6, 1.2, 1.8, 2.4 on each axis
    z = torch.rand(2, 3, 3, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    pts = torch.tensor([0, 0.6, 1.2, 1.8, 2.4], dtype=torch.float64)
    lo, frac = pts.floor().long(), pts - pts.floor()
    hi = (lo + 1).clamp(max=2)
    w = torch.zeros(5, 3, dtype=torch.float64)
    w[torch.arange(5), lo] += 1 - frac
    w[torch.arange(5), hi] += frac
    torch.testing.assert_close(resize_bilinear_tf1(z, 5), w @ z @ w.T)


def test_preprocess_protocols(inception):
    net = inception
    img = torch.full((2, 3, 8, 8), 0.1)  # 8-bit value round(1.1 * 127.5) = round(140.25) = 140
    out = net.preprocess(img)
    assert out.shape == (2, 3, 299, 299)
    torch.testing.assert_close(out, torch.full_like(out, (140 - 128) / 128))
    try:
        net.protocol = "pytorch-fid"
        torch.testing.assert_close(net.preprocess(img), torch.full_like(out, 2 * 140 / 255 - 1))
        net.quantize = False
        torch.testing.assert_close(net.preprocess(img), torch.full_like(out, 0.1))
    finally:
        net.protocol, net.quantize = "torch-fidelity", True
    grey = net.preprocess(torch.zeros(1, 1, 8, 8))  # grey is repeated to RGB
    assert grey.shape == (1, 3, 299, 299)
    # out-of-range pixels are clamped like 8-bit files
    torch.testing.assert_close(net.preprocess(torch.full((1, 3, 4, 4), 3.0)), torch.full((1, 3, 299, 299), 127 / 128))
    with pytest.raises(ValueError, match="protocol"):
        FIDInceptionV3(protocol="tf2")
    with pytest.raises(ValueError, match=r"\(B, 3 or 1, H, W\)"):
        net.preprocess(torch.zeros(3, 8, 8))
    with pytest.raises(ValueError, match="float"):
        net.preprocess(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))


def test_inception_weights_roundtrip_in_the_pytorch_fid_layout(inception, tmp_path):
    sd = {k: v for k, v in inception.state_dict().items() if not k.endswith("num_batches_tracked")}
    # pytorch-fid's file: torchvision names, no num_batches_tracked; a torchvision-style AuxLogits head is ignored
    path = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    torch.save({**sd, "AuxLogits.fc.weight": torch.zeros(1000, 768)}, path)
    loaded = FIDInceptionV3.from_pretrained(tmp_path, protocol="pytorch-fid")  # the folder holding the file
    assert loaded.protocol == "pytorch-fid" and not loaded.training
    assert same_tensors(sd, loaded.state_dict())
    assert all(int(v) == 0 for k, v in loaded.state_dict().items() if k.endswith("num_batches_tracked"))
    out = inception.save_pretrained(tmp_path / "converted")
    assert out.name == "fid_inception_v3.safetensors"
    again = FIDInceptionV3.from_pretrained(out)
    assert same_tensors(sd, again.state_dict())


def test_inception_weights_errors(inception, tmp_path):
    with pytest.raises(ValueError, match=r"--inception-weights .*no such file.*pt_inception-2015-12-05-6726825d\.pth"):
        FIDInceptionV3.from_pretrained(tmp_path / "missing.pth", option="--inception-weights")
    with pytest.raises(ValueError, match="folder holds no FID Inception weights file"):
        FIDInceptionV3.from_pretrained(tmp_path)
    # a Hub id while offline (tests run with HF_HUB_OFFLINE=1): the fetch fails with the option named
    with pytest.raises(ValueError, match=r"--inception-weights 'someone/fid-inception'.*Hub repo"):
        FIDInceptionV3.from_pretrained("someone/fid-inception", option="--inception-weights")
    sd = {k: v for k, v in inception.state_dict().items() if not k.endswith("num_batches_tracked")}
    net = FIDInceptionV3()
    torchvision_like = {**sd, "fc.weight": torch.zeros(1000, 2048), "fc.bias": torch.zeros(1000)}
    with pytest.raises(ValueError, match=r"wrong shapes.*torchvision's ImageNet Inception-v3 \(1000 classes\)"):
        net.load_weights(torchvision_like)
    partial = {k: v for k, v in sd.items() if not k.startswith("Mixed_7c")}
    with pytest.raises(ValueError, match=r"\d+ missing \(e\.g\. \['Mixed_7c"):
        net.load_weights({**partial, "extra.weight": torch.zeros(1)})
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="Could not read FID Inception weights .*not a safetensors file nor a PyTorch"):
        FIDInceptionV3.from_pretrained(text)
    import argparse

    torch.save({"args": argparse.Namespace(a=1), **sd}, tmp_path / "pickled.pth")  # a Python object inside
    with pytest.raises(ValueError, match="Refusing to load FID Inception weights .*Python objects besides tensors"):
        FIDInceptionV3.from_pretrained(tmp_path / "pickled.pth")


# --------------------------------------------------------------------------------------------- Inception Score


def test_inception_score_closed_forms():
    # uniform predictions: p(y|x) = p(y), KL 0, IS exactly 1
    assert inception_score(torch.zeros(50, 1008), splits=5) == (1.0, 0.0)
    # confident predictions of N distinct classes per chunk: KL = log N, IS = N
    one_hot = torch.full((20, 1008), -math.inf)
    one_hot[torch.arange(20), torch.arange(20)] = 0.0
    mean, std = inception_score(one_hot, splits=1)
    assert math.isclose(mean, 20.0, rel_tol=1e-12) and std == 0.0
    mean, std = inception_score(one_hot, splits=2)  # each chunk: 10 distinct classes
    assert math.isclose(mean, 10.0, rel_tol=1e-12) and std == 0.0
    # the same class everywhere: p(y) is that class, IS 1
    same = torch.full((8, 10), -1e4, dtype=torch.float64)
    same[:, 3] = 0.0
    assert math.isclose(inception_score(same, splits=1)[0], 1.0, rel_tol=1e-12)
    # two chunks of different sharpness: mean and population std of exp(log 4) and exp(log 2)
    mixed = torch.full((8, 8), -math.inf)
    mixed[torch.arange(8), torch.tensor([0, 1, 2, 3, 0, 0, 1, 1])] = 0.0  # chunk 1: IS 4; chunk 2: IS 2
    assert inception_score(mixed, splits=2) == pytest.approx((3.0, 1.0), rel=1e-12)


def test_inception_score_matches_the_definition_and_shuffles_like_torch_fidelity():
    logits = torch.randn(30, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3
    p = torch.softmax(logits, 1).numpy()
    scores = []
    for chunk in np.array_split(p, 3):  # 30 rows: equal chunks of 10, as i*N//splits
        q = chunk.mean(0)
        scores.append(np.exp((chunk * (np.log(chunk) - np.log(q))).sum(1).mean()))
    assert inception_score(logits, splits=3) == pytest.approx((np.mean(scores), np.std(scores)), rel=1e-10)
    perm = np.random.RandomState(0).permutation(30)
    assert inception_score(logits, 3, shuffle_seed=0) == pytest.approx(inception_score(logits[perm], 3), rel=1e-12)
    assert inception_score(logits, 1, shuffle_seed=0) == pytest.approx(inception_score(logits, 1), rel=1e-12)
    with pytest.raises(ValueError, match="NaN"):
        inception_score(torch.full((4, 3), math.nan), splits=1)
    with pytest.raises(ValueError, match="at least `splits` \\(10\\)"):
        inception_score(torch.zeros(5, 3))
    with pytest.raises(ValueError, match=r"\(N, num_classes\)"):
        inception_score(torch.zeros(5))


class _TinyInception(nn.Module):
    """A stand-in with FIDInceptionV3's interface (features and logits), small enough for fast wiring tests."""

    feature_dim, num_classes, protocol = 6, 5, "tiny"

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(3, 6)
        self.fc = nn.Linear(6, 5)

    def forward(self, images):
        return self.proj(images.expand(-1, 3, -1, -1).mean(dim=(2, 3)) + images.std(dim=(1, 2, 3))[:, None])

    def features_and_logits(self, images, logits_bias=False):
        feats = self.forward(images)
        return feats, feats @ self.fc.weight.T


def test_inception_metrics_stream_equals_one_shot():
    torch.manual_seed(0)
    net = _TinyInception()
    real, fake = torch.rand(24, 1, 8, 8) * 2 - 1, torch.rand(24, 1, 8, 8) * 1.5 - 0.9
    metric = InceptionMetrics(net, is_splits=3, is_shuffle_seed=None)
    for i in range(0, 24, 7):  # uneven batches
        metric.update(real=real[i : i + 7], fake=fake[i : i + 7])
    out = metric.compute()
    with torch.no_grad():
        fr, (ff, lf) = net(real).double(), net.features_and_logits(fake)
    expected = frechet_distance(fr.mean(0), torch.cov(fr.T), ff.double().mean(0), torch.cov(ff.double().T))
    # float32 features of batches of 7 against one batch of 24: the kernels may block the GEMMs differently (1e-8
    # relative on an AMX Xeon), while a wrong streaming formula (e.g. the biased covariance) is off by percents
    assert out["inception_fid"] == pytest.approx(expected, rel=1e-6) and out["inception_fid"] > 0
    assert (out["inception_score"], out["inception_score_std"]) == pytest.approx(inception_score(lf, 3), rel=1e-6)
    assert out["num_real"] == out["num_fake"] == 24
    same = InceptionMetrics(net, is_splits=2)
    same.update(real=real, fake=real)
    assert same.compute()["inception_fid"] == pytest.approx(0.0, abs=1e-9)  # FID(x, x) = 0


def test_inception_fid_separates_degraded_images_with_random_weights(inception):
    """Through the real network (75 px input): FID(x, x) = 0 and FID(x, blurred x) > 0, symmetric."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 75, 75, generator=g) * 2 - 1
    blurred = nn.functional.avg_pool2d(x, 5, 1, 2, count_include_pad=False)
    with torch.no_grad():
        fx, fb = inception.pool_features(torch.cat([x, blurred])).double()[:, :16].split(3)  # 16 dims: fast maths
    stats = {name: (f.mean(0), torch.cov(f.T)) for name, f in (("x", fx), ("b", fb))}
    assert frechet_distance(*stats["x"], *stats["x"]) == pytest.approx(0.0, abs=1e-6)
    d = frechet_distance(*stats["x"], *stats["b"])
    assert d > 1e-3 and d == pytest.approx(frechet_distance(*stats["b"], *stats["x"]), rel=1e-6)
    streaming = FeatureStatistics(16)
    streaming.update(fx)
    torch.testing.assert_close(streaming.compute()[0], fx.mean(0))


# ------------------------------------------------------------------------------------------------------ LPIPS


@pytest.mark.parametrize(
    ("net", "channels", "sizes"),
    [("alex", (64, 192, 384, 256, 256), (15, 7, 3, 3, 3)), ("vgg", (64, 128, 256, 512, 512), (64, 32, 16, 8, 4))],
)
def test_lpips_backbone_taps_and_key_layout(net, channels, sizes):
    model = LPIPS(net)
    taps = model.net(torch.zeros(1, 3, 64, 64))
    assert [t.shape[1] for t in taps] == list(channels) and [t.shape[-1] for t in taps] == list(sizes)
    keys = set(model.state_dict())
    first = "net.slice1.0.weight"
    assert first in keys and all(f"lin{k}.model.1.weight" in keys for k in range(5))
    assert not any(k.startswith("scaling") or "shift" in k for k in keys)  # the constants are not weights
    if net == "alex":  # torchvision alexnet().features indices kept as child names
        assert {"net.slice2.3.weight", "net.slice3.6.weight", "net.slice4.8.weight", "net.slice5.10.bias"} <= keys
        assert tuple(model.state_dict()[first].shape) == (64, 3, 11, 11)
    else:
        assert {"net.slice1.2.weight", "net.slice2.7.weight", "net.slice3.14.weight", "net.slice5.28.bias"} <= keys
        assert len([k for k in keys if k.startswith("net.")]) == 26  # 13 convs


def _lpips_reference(model, x, y):
    """The LPIPS formula written out: scale, backbone taps, unit-normalise over channels, weighted squared
    difference, spatial mean, sum over layers."""
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
    total = torch.zeros(x.shape[0])
    for k, (a, b) in enumerate(zip(model.net((x - shift) / scale), model.net((y - shift) / scale))):
        a = a / (a.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        b = b / (b.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        w = getattr(model, f"lin{k}").model[1].weight.view(1, -1, 1, 1)
        total += (w * (a - b) ** 2).sum(1).mean(dim=(1, 2))
    return total


@pytest.mark.parametrize(("net", "size"), [("alex", (32, 36)), ("vgg", (16, 20))])
def test_lpips_distance_properties(net, size):
    torch.manual_seed(0)
    model = LPIPS(net)
    with torch.no_grad():
        for k in range(5):  # learned lin weights are non-negative
            lin = getattr(model, f"lin{k}").model[1].weight
            lin.copy_(torch.rand_like(lin) / lin.shape[1])
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(2, 3, *size, generator=g) * 2 - 1, torch.rand(2, 3, *size, generator=g) * 2 - 1
    d = model(x, y)
    assert d.shape == (2,) and (d > 0).all()
    torch.testing.assert_close(d, _lpips_reference(model, x, y))
    torch.testing.assert_close(model(y, x), d)  # symmetric
    torch.testing.assert_close(model(x, x), torch.zeros(2))  # d(x, x) = 0
    grey = model(x[:, :1], y[:, :1])  # grey images are repeated to RGB
    torch.testing.assert_close(grey, model(x[:, :1].expand(-1, 3, -1, -1), y[:, :1].expand(-1, 3, -1, -1)))
    xg = x.clone().requires_grad_(True)
    model(xg, y).sum().backward()  # usable as a loss: gradients reach the images
    assert xg.grad is not None and xg.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="same shape"):
        model(x, y[:, :, :8])
    with pytest.raises(ValueError, match="at least"):
        model(x[:, :, :8, :8], y[:, :, :8, :8])


def _torchvision_layout(model):
    """Split an LPIPS state dict into torchvision's backbone file (features.{i}.*, with a classifier) and the lpips
    package's lin file (lin{k}.model.1.weight)."""
    sd = model.state_dict()
    backbone = {"features." + k.split(".", 2)[2]: v for k, v in sd.items() if k.startswith("net.")}
    backbone["classifier.1.weight"] = torch.zeros(4, 4)
    lins = {k: v for k, v in sd.items() if k.startswith("lin")}
    return backbone, lins


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_lpips_key_mapping_roundtrip(net):
    """torchvision backbone + lpips lin layouts, and the lpips package's full LPIPS state dict, load exactly."""
    torch.manual_seed(0)
    model = LPIPS(net)
    backbone, lins = _torchvision_layout(model)
    scaling = {"scaling_layer.shift": torch.zeros(1, 3, 1, 1), "scaling_layer.scale": torch.ones(1, 3, 1, 1)}
    for layout in ({**backbone, **lins}, {**model.state_dict(), **scaling}):
        fresh = LPIPS(net)
        fresh.load_weights(layout)
        assert same_tensors(model.state_dict(), fresh.state_dict())
    # the mapping itself: torchvision index -> the LPIPS stage holding it, lin variants -> lin{k}.model.1.weight
    mapped = lpips_canonical_keys(
        {"features.10.bias": torch.zeros(256), "module.lins.2.model.0.weight": torch.zeros(1)}, net
    )
    stage = "5" if net == "alex" else "3"
    assert set(mapped) == {f"net.slice{stage}.10.bias", "lin2.model.1.weight"}


def test_lpips_vgg_equals_the_training_perceptual_loss_on_the_same_weights():
    """The training loss (fullvq_hf.training.losses.PerceptualLoss) is LPIPS-VGG too, written separately: with the
    same torchvision + lpips weights both give the same distances."""
    from fullvq_hf.training.losses import PerceptualLoss

    torch.manual_seed(0)
    model = LPIPS("vgg")
    with torch.no_grad():
        for k in range(5):
            getattr(model, f"lin{k}").model[1].weight.uniform_(0, 0.1)
    backbone, lins = _torchvision_layout(model)
    loss = PerceptualLoss()
    loss.load_weights({**backbone, **lins})
    g = torch.Generator().manual_seed(2)
    x, y = torch.rand(2, 3, 16, 24, generator=g) * 2 - 1, torch.rand(2, 3, 16, 24, generator=g) * 2 - 1
    torch.testing.assert_close(model(x, y), loss(x, y, reduction="none"))


def test_lpips_weight_files_roundtrip(tmp_path):
    torch.manual_seed(0)
    model = LPIPS("alex")
    backbone, lins = _torchvision_layout(model)
    torch.save(backbone, tmp_path / "alexnet-owt-7be5be79.pth")
    torch.save(lins, tmp_path / "alex.pth")
    from_files = LPIPS.from_pretrained([tmp_path / "alexnet-owt-7be5be79.pth", tmp_path / "alex.pth"], net="alex")
    assert same_tensors(model.state_dict(), from_files.state_dict())
    saved = model.save_pretrained(tmp_path / "out")
    assert saved.name == "lpips_alex.safetensors"
    again = LPIPS.from_pretrained(tmp_path / "out", net="alex")  # a folder holding the default name
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    torch.testing.assert_close(again(x, -x), model(x, -x))


def test_lpips_weights_errors(tmp_path):
    torch.manual_seed(0)
    alex = LPIPS("alex")
    backbone, lins = _torchvision_layout(alex)
    save_file(lins, str(tmp_path / "alex_lins.safetensors"))
    save_file({k: v.contiguous() for k, v in backbone.items()}, str(tmp_path / "alexnet.safetensors"))
    with pytest.raises(ValueError, match=r"--lpips-weights .*no alex backbone weights.*alexnet-owt-7be5be79\.pth"):
        LPIPS.from_pretrained(tmp_path / "alex_lins.safetensors", net="alex", option="--lpips-weights")
    with pytest.raises(ValueError, match=r"no learned lin weights.*weights/v0\.1/alex\.pth"):
        LPIPS.from_pretrained(tmp_path / "alexnet.safetensors", net="alex")
    vgg_backbone, vgg_lins = _torchvision_layout(LPIPS("vgg"))
    with pytest.raises(ValueError, match="wrong shapes, not LPIPS-alex"):
        alex.load_weights({**vgg_backbone, **lins})
    with pytest.raises(ValueError, match="no such file"):
        LPIPS.from_pretrained(tmp_path / "nothing.pth", net="vgg")
    with pytest.raises(ValueError, match="net must be one of"):
        LPIPS("squeeze")


# --------------------------------------------------------------------------------------- centre crop, no resize


def test_center_crop_without_resize_as_torchvision():
    arr = np.arange(7 * 10 * 3, dtype=np.uint8).reshape(7, 10, 3)
    t = ImageTransform(4, 3, random_crop=False, flip=False, resize=False)
    out = t(Image.fromarray(arr))
    # offsets round((7-4)/2) = round(1.5) = 2 and round((10-4)/2) = 3: the pixels themselves, no resampling
    expected = torch.from_numpy(arr[2:6, 3:7].astype(np.float32)).permute(2, 0, 1) / 127.5 - 1
    torch.testing.assert_close(out, expected)
    # 5 wide -> 4: round(0.5) = 0 (Python rounding, as torchvision)
    out = ImageTransform(4, 3, random_crop=False, flip=False, resize=False)(Image.fromarray(arr[:5, :5]))
    torch.testing.assert_close(out, torch.from_numpy(arr[:4, :4].astype(np.float32)).permute(2, 0, 1) / 127.5 - 1)
    # smaller than the crop: padded with black, (size - n) // 2 on the top/left
    grey = np.full((3, 6), 200, dtype=np.uint8)
    out = ImageTransform(8, 1, random_crop=False, flip=False, resize=False)(Image.fromarray(grey))
    assert out.shape == (1, 8, 8)
    inside = torch.zeros(8, 8, dtype=torch.bool)
    inside[2:5, 1:7] = True  # top pad (8-3)//2 = 2, left pad (8-6)//2 = 1
    assert torch.all(out[0][inside] == 200 / 127.5 - 1) and torch.all(out[0][~inside] == -1)
    # the default still resizes (the whole shorter side, bicubic)
    assert not torch.equal(ImageTransform(4, 3, random_crop=False, flip=False)(Image.fromarray(arr)), expected)
    with pytest.raises(ValueError, match="random_crop=False"):
        ImageTransform(4, 3, random_crop=True, resize=False)


# ------------------------------------------------------------------------------------------------ fullvq eval


def test_eval_cli_refuses_metrics_without_weights(tmp_path, capsys):
    from fullvq_hf.evaluation.tokenizer_eval import main

    cases = [
        (["--lpips", "alex"], "--lpips alex needs its weights, and nothing is downloaded: pass --lpips-weights"),
        (["--lpips-weights", "x.pth"], "--lpips-weights given without --lpips"),
        (["--inception-weights", str(tmp_path / "pt_inception.pth")], "--inception-weights '.*pt_inception.pth': no such file"),
        (["--lpips", "vgg", "--lpips-weights", str(tmp_path / "vgg.pth")], "--lpips-weights '.*vgg.pth': no such file"),
    ]  # fmt: skip
    for extra, message in cases:
        with pytest.raises(SystemExit) as exc:
            main(["--model", str(tmp_path / "no-model"), *extra], prog="fullvq eval")
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[0].startswith("usage: fullvq eval") and "Traceback" not in "".join(err)
        assert [line for line in err if "error" in line] == [err[-1]] and err[-1].startswith("fullvq eval: error: ")
        assert __import__("re").search(message, err[-1]), err[-1]


def test_evaluate_tokenizer_reports_lpips_and_inception_metrics(tmp_path):
    """The options end to end on a tiny tokenizer: LPIPS from weight files, Inception metrics from a stand-in with
    the network's interface (the real network on CPU is covered above), and the `*_skipped` reasons otherwise."""
    import datasets
    from helpers import tiny_fvq

    from fullvq_hf.evaluation.tokenizer_eval import evaluate_tokenizer

    torch.manual_seed(0)
    model = tiny_fvq(sample_size=32, in_channels=3).eval()
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (40, 36, 3), dtype=np.uint8)) for _ in range(6)]
    ds = datasets.Dataset.from_dict({"image": images}, features=datasets.Features({"image": datasets.Image()}))
    transform = ImageTransform(32, 3, random_crop=False, flip=False, resize=False)
    lpips = LPIPS("alex")
    with torch.no_grad():
        for k in range(5):
            getattr(lpips, f"lin{k}").model[1].weight.uniform_(0, 0.01)
    out = evaluate_tokenizer(model, ds, transform, batch_size=4, progress=False, inception=_TinyInception(),
                             lpips=lpips, is_splits=2)  # fmt: skip
    assert out["num_images"] == 6 and out["lpips_net"] == "alex" and out["inception_protocol"] == "tiny"
    assert out["lpips"] > 0 and out["inception_fid"] > 0 and out["inception_score"] >= 1.0 - 1e-9  # exp(KL) >= 1
    # the LPIPS mean is the mean over images of the module's distances
    pixels = torch.stack([transform(im) for im in images])
    with torch.no_grad():
        rec = model.detokenize(model.tokenize(pixels)).float().clamp(-1, 1)
    assert out["lpips"] == pytest.approx(float(lpips(rec, pixels).mean()), rel=1e-5)
    with pytest.raises(ValueError, match=r"at least 10 images; this evaluation has 6.*--is-splits"):
        evaluate_tokenizer(model, ds, transform, progress=False, inception=_TinyInception())
    plain = evaluate_tokenizer(model, ds, transform, batch_size=4, progress=False)
    assert plain["lpips"] is None and "--lpips" in plain["lpips_skipped"]
    assert plain["inception_fid"] is None and "--inception-weights" in plain["inception_skipped"]


@pytest.mark.slow
def test_eval_cli_with_weight_files_end_to_end(tmp_path, inception):
    """`fullvq eval --center-crop --inception-weights F --lpips alex --lpips-weights A B` on a saved tiny model."""
    import datasets
    from helpers import tiny_fvq

    from fullvq_hf.evaluation.tokenizer_eval import main

    tiny_fvq(sample_size=32, in_channels=3).save_pretrained(tmp_path / "model")
    rng = np.random.default_rng(0)
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    inception.save_pretrained(tmp_path / "fid")
    backbone, lins = _torchvision_layout(LPIPS("alex"))
    torch.save(backbone, tmp_path / "alexnet.pth")
    torch.save(lins, tmp_path / "alex.pth")
    out = main(["--model", str(tmp_path / "model"), "--dataset", "imagefolder", "--data-dir", str(folder),
                "--split", "train", "--center-crop", "--inception-weights", str(tmp_path / "fid"), "--is-splits", "2",
                "--lpips", "alex", "--lpips-weights", str(tmp_path / "alexnet.pth"), str(tmp_path / "alex.pth"),
                "--output", str(tmp_path / "results.json")])  # fmt: skip
    assert out["num_images"] == 4 and math.isfinite(out["inception_fid"]) and out["inception_score"] >= 1.0 - 1e-9
    assert math.isfinite(out["lpips"]) and out["inception_protocol"] == "torch-fidelity"
    assert datasets is not None


def test_lpips_weights_from_a_hub_repo(tmp_path):
    """A Hub repo id as the weights source, through the real huggingface_hub client and the loopback Hub."""
    from hub_server import HubServer
    from test_hub import hub_client

    torch.manual_seed(0)
    model = LPIPS("alex")
    path = model.save_pretrained(tmp_path / "lpips_alex.safetensors")
    script = """
    import sys, torch
    from huggingface_hub import HfApi
    from fullvq_hf.evaluation.lpips import LPIPS

    api = HfApi()
    api.create_repo("org/lpips")
    api.upload_file(path_or_fileobj=sys.argv[1], path_in_repo="lpips_alex.safetensors", repo_id="org/lpips")
    x = torch.linspace(-1, 1, 3 * 32 * 32).view(1, 3, 32, 32)
    by_repo = LPIPS.from_pretrained("org/lpips", net="alex")  # the default file name in the repo
    by_file = LPIPS.from_pretrained("org/lpips/lpips_alex.safetensors", net="alex")
    try:
        LPIPS.from_pretrained("org/lpips/other.safetensors", net="alex", option="--lpips-weights")
        error = None
    except ValueError as err:
        error = str(err)
    emit({"by_repo": float(by_repo(x, -x)), "by_file": float(by_file(x, -x)), "error": error})
    """
    with HubServer() as hub:
        out = hub_client(script, endpoint=hub.endpoint, hf_home=tmp_path / "home", args=[str(path)])
    x = torch.linspace(-1, 1, 3 * 32 * 32).view(1, 3, 32, 32)
    expected = float(model(x, -x))
    assert out["by_repo"] == pytest.approx(expected, rel=1e-6) and out["by_file"] == pytest.approx(expected, rel=1e-6)
    assert "--lpips-weights 'org/lpips/other.safetensors'" in out["error"] and "Hub repo 'org/lpips'" in out["error"]
