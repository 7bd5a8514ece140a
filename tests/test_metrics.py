"""Image metrics (PSNR, SSIM, Frechet distance) and the shipped Fashion-MNIST feature extractor."""

import math

import numpy as np
import pytest
import torch
import torch.distributed as dist
from safetensors.torch import save_file

from fullvq_hf.evaluation import load_feature_extractor
from fullvq_hf.metrics import (
    FeatureStatistics,
    FrechetDistance,
    frechet_distance,
    psnr,
    ssim,
)

# ------------------------------------------------------------------------------------------------ PSNR


def test_psnr_known_mse_and_identical_images():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 2, 8, 8, generator=g) * 1.6 - 0.8
    y = x + torch.tensor([0.1, -0.2, 0.0]).view(3, 1, 1, 1)  # MSE 0.01, 0.04, 0
    out = psnr(x, y)
    assert out.shape == (3,)
    assert math.isclose(float(out[0]), 10 * math.log10(4 / 0.01), abs_tol=1e-3)  # 26.02 dB
    assert math.isclose(float(out[1]), 10 * math.log10(4 / 0.04), abs_tol=1e-3)  # 20.00 dB
    assert math.isinf(float(out[2])) and float(out[2]) > 0  # identical images: +inf, documented
    # data_range 1 (pixels in [0, 1]): the same MSE is 20 log10(2) dB less
    assert math.isclose(float(psnr(x, y, data_range=1.0)[0]), 20.0, abs_tol=1e-3)


def test_psnr_and_ssim_reject_bad_input():
    x = torch.zeros(1, 1, 16, 16)
    with pytest.raises(ValueError, match="same shape"):
        psnr(x, torch.zeros(1, 1, 16, 15))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        psnr(x[0], x[0])
    with pytest.raises(ValueError, match="float"):
        ssim(x.long(), x.long())
    with pytest.raises(ValueError, match="smaller than the 11x11"):
        ssim(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="odd"):
        ssim(x, x, window_size=4)


# ------------------------------------------------------------------------------------------------ SSIM


def _photos():
    """Real photos from scikit-image, cropped small, as [-1, 1] float64 (C, H, W)."""
    data = pytest.importorskip("skimage.data")
    cam = data.camera()[200:248, 220:272]  # grey, 48x52
    astro = data.astronaut()[40:80, 180:224]  # RGB, 40x44
    coffee = data.coffee()[100:140, 200:240]  # RGB, 40x40
    to = lambda a: torch.from_numpy(a.astype(np.float64) / 127.5 - 1.0)  # noqa: E731
    return [to(cam)[None], to(astro).permute(2, 0, 1), to(coffee).permute(2, 0, 1)]


def _distortions(x: torch.Tensor, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    noisy = (x + 0.15 * torch.randn(x.shape, generator=g, dtype=x.dtype)).clamp(-1, 1)
    k = torch.ones(x.shape[0], 1, 3, 3, dtype=x.dtype) / 9
    blurred = torch.nn.functional.conv2d(torch.nn.functional.pad(x[None], (1, 1, 1, 1), mode="replicate"), k, groups=x.shape[0])[0]
    return [noisy, blurred, (x * 0.7 + 0.2).clamp(-1, 1), x]


def test_ssim_matches_skimage_on_real_photos():
    metrics = pytest.importorskip("skimage.metrics")
    for i, x in enumerate(_photos()):
        ys = _distortions(x, seed=i)
        xs = torch.stack([x] * len(ys))
        ours = ssim(xs.float(), torch.stack(ys).float())
        assert ours.shape == (len(ys),) and ours.dtype == torch.float32
        for j, y in enumerate(ys):
            ref = metrics.structural_similarity(
                x.permute(1, 2, 0).numpy(),
                y.permute(1, 2, 0).numpy(),
                gaussian_weights=True,
                sigma=1.5,
                use_sample_covariance=False,
                data_range=2.0,
                channel_axis=-1,
            )
            assert abs(float(ours[j]) - ref) < 1e-3, (i, j, float(ours[j]), ref)
        assert math.isclose(float(ours[-1]), 1.0, abs_tol=1e-6)  # identical
        assert float(ours[0]) < 0.9  # noise hurts


# ------------------------------------------------------------------------------------------------ Frechet distance


def _gaussian_stats(seed: int, n: int, d: int, shift: float = 0.0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(d, d)) / math.sqrt(d)
    x = rng.normal(size=(n, d)) @ a + shift
    return x.mean(0), np.cov(x, rowvar=False)


def test_frechet_distance_of_identical_gaussians_is_zero_even_when_singular():
    mu, sigma = _gaussian_stats(0, 500, 16)
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-6
    mu, sigma = _gaussian_stats(1, 8, 32)  # 8 samples in 32-d: rank 7
    assert np.linalg.matrix_rank(sigma) < 32
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-6
    t_mu, t_sigma = torch.from_numpy(mu).float(), torch.from_numpy(sigma).float()  # tensors work too
    assert abs(frechet_distance(t_mu, t_sigma, t_mu, t_sigma)) < 1e-5


def test_frechet_distance_is_symmetric_and_matches_closed_forms():
    mu1, s1 = _gaussian_stats(2, 400, 12)
    mu2, s2 = _gaussian_stats(3, 300, 12, shift=0.5)
    d12, d21 = frechet_distance(mu1, s1, mu2, s2), frechet_distance(mu2, s2, mu1, s1)
    assert d12 > 1.0 and math.isclose(d12, d21, rel_tol=1e-9)
    # 1-D: (m1 - m2)^2 + s1 + s2 - 2 sqrt(s1 s2)
    m1, v1, m2, v2 = 0.3, 2.0, -1.2, 0.5
    expected = (m1 - m2) ** 2 + v1 + v2 - 2 * math.sqrt(v1 * v2)
    assert math.isclose(frechet_distance(np.array([m1]), np.array([[v1]]), np.array([m2]), np.array([[v2]])), expected, rel_tol=1e-12)
    # commuting (diagonal) covariances: |dm|^2 + sum (sqrt a - sqrt b)^2
    a, b = np.array([1.0, 4.0, 0.0, 2.5]), np.array([0.25, 9.0, 1.0, 2.5])
    dm = np.array([1.0, 0.0, -2.0, 0.5])
    expected = float(dm @ dm + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum())
    assert math.isclose(frechet_distance(dm, np.diag(a), np.zeros(4), np.diag(b)), expected, rel_tol=1e-12)


def test_frechet_distance_matches_scipy_sqrtm():
    linalg = pytest.importorskip("scipy.linalg")
    mu1, s1 = _gaussian_stats(4, 200, 24)
    mu2, s2 = _gaussian_stats(5, 200, 24, shift=0.2)
    covmean = linalg.sqrtm(s1 @ s2).real
    ref = float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))
    assert math.isclose(frechet_distance(mu1, s1, mu2, s2), ref, rel_tol=1e-8)


def test_frechet_distance_retries_with_eps_when_the_square_root_fails(monkeypatch):
    import fullvq_hf.metrics as metrics

    mu1, s1 = _gaussian_stats(6, 100, 6)
    mu2, s2 = _gaussian_stats(7, 100, 6, shift=0.3)
    exact = frechet_distance(mu1, s1, mu2, s2)
    real = metrics._trace_sqrt_product
    calls = []

    def flaky(a, b):  # the first attempt fails, as sqrtm can on nearly singular products
        calls.append(1)
        return math.nan if len(calls) == 1 else real(a, b)

    monkeypatch.setattr(metrics, "_trace_sqrt_product", flaky)
    assert math.isclose(frechet_distance(mu1, s1, mu2, s2), exact, rel_tol=1e-4) and len(calls) == 2
    assert abs(frechet_distance(mu1, s1, mu1, s1)) < 1e-6


def test_frechet_distance_rejects_bad_shapes_and_nan():
    mu, sigma = np.zeros(3), np.eye(3)
    with pytest.raises(ValueError, match=r"sigma2 must have shape \(3, 3\)"):
        frechet_distance(mu, sigma, mu, np.eye(4))
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(mu, sigma, np.array([0.0, np.nan, 0.0]), sigma)


def test_feature_statistics_streaming_equals_one_shot_and_numpy():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(1000, 10)) * rng.uniform(0.1, 5, size=10) + rng.normal(size=10) * 3
    streamed, once = FeatureStatistics(10), FeatureStatistics(10)
    for chunk in np.array_split(feats, [1, 7, 100, 555, 556]):  # uneven chunks, one of a single row
        streamed.update(torch.from_numpy(chunk).float())
    once.update(torch.from_numpy(feats).float())
    assert streamed.num_samples == once.num_samples == 1000
    f32 = feats.astype(np.float32).astype(np.float64)  # what the float32 tensors hold
    for stats in (streamed, once):
        assert stats.mean.dtype == torch.float64 and stats.cov.shape == (10, 10)
        np.testing.assert_allclose(stats.mean.numpy(), f32.mean(0), rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(stats.cov.numpy(), np.cov(f32, rowvar=False), rtol=1e-9, atol=1e-9)
    streamed.reset()
    with pytest.raises(ValueError, match="at least 2 samples"):
        streamed.compute()
    with pytest.raises(ValueError, match=r"\(N, 10\)"):
        streamed.update(torch.zeros(4, 11))


def test_feature_statistics_all_reduce_under_distributed(monkeypatch):
    """compute() sums count, sum and outer products over ranks in one all_reduce (simulated: two equal ranks;
    tests/test_usage.py runs real processes for the same mechanism)."""
    feats = torch.arange(12, dtype=torch.float64).view(6, 2) ** 2
    stats = FeatureStatistics(2)
    stats.update(feats)
    calls = []

    def all_reduce(tensor, op=None):
        calls.append(tensor.numel())
        tensor.mul_(2)  # the other rank holds the same features

    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(dist, "all_reduce", all_reduce)
    mean, cov = stats.compute()
    both = torch.cat([feats, feats]).numpy()
    assert calls == [1 + 2 + 4]
    np.testing.assert_allclose(mean.numpy(), both.mean(0), rtol=1e-12)
    np.testing.assert_allclose(cov.numpy(), np.cov(both, rowvar=False), rtol=1e-12)
    local_mean, local_cov = stats.compute(sync=False)
    np.testing.assert_allclose(local_cov.numpy(), np.cov(feats.numpy(), rowvar=False), rtol=1e-12)
    assert stats.num_samples == 6 and len(calls) == 1


# ------------------------------------------------------------------------------------------------ feature extractors


class _MeanStd(torch.nn.Module):
    """A toy extractor: per-channel mean and std, (B, 2C)."""

    def forward(self, x):
        return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1)


def test_frechet_distance_metric_with_a_custom_extractor():
    g = torch.Generator().manual_seed(0)
    real = torch.rand(64, 3, 8, 8, generator=g) * 2 - 1
    fake = (torch.rand(64, 3, 8, 8, generator=g) * 2 - 1) * 0.5
    metric = FrechetDistance(_MeanStd())
    metric.update(real=real[:20])
    metric.update(real=real[20:], fake=fake)
    fr, ff = _MeanStd()(real).double(), _MeanStd()(fake).double()
    expected = frechet_distance(fr.mean(0), torch.cov(fr.T), ff.mean(0), torch.cov(ff.T))
    assert math.isclose(metric.compute(), expected, rel_tol=1e-9) and expected > 0.01
    metric.reset(real=False)  # keep the real statistics
    metric.update(fake=real)
    assert metric.compute() < 1e-6
    with pytest.raises(ValueError, match="real=... and/or fake="):
        metric.update()
    with pytest.raises(ValueError, match=r"\(B, F\)"):
        FrechetDistance(torch.nn.Identity()).update(real=real)


def test_frechet_distance_takes_a_module_not_a_name():
    """metrics knows no named networks: a name is an error that points to evaluation.load_feature_extractor."""
    with pytest.raises(ValueError, match="load_feature_extractor"):
        FrechetDistance("fashion-mnist-classifier")


def test_load_feature_extractor_errors(tmp_path):
    for name in ("inception-v3", "pt_inception-2015-12-05", "vgg16", "openai/clip-vit-large-patch14"):
        with pytest.raises(ValueError, match="must be given as a local file"):
            load_feature_extractor(name)
    with pytest.raises(ValueError, match="does not exist"):
        load_feature_extractor(tmp_path / "missing.safetensors")
    other = tmp_path / "inception.safetensors"
    save_file({"w": torch.zeros(2)}, str(other))
    with pytest.raises(ValueError, match="not a Fashion-MNIST classifier"):
        load_feature_extractor(other)


# ------------------------------------------------------------------------------------------------ shipped classifier


@pytest.fixture
def one_thread():
    """The classifier's small convs run several times faster on one thread than on two oversubscribed ones."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def classifier():
    from fullvq_hf.evaluation import load_classifier

    return load_classifier()


@pytest.fixture(scope="module")
def test_pixels():
    from fullvq_hf.data import load_fashion_mnist, to_pixels

    try:
        images, labels = load_fashion_mnist("test")
    except FileNotFoundError as e:
        pytest.skip(str(e))
    return to_pixels(images[:4000]), torch.from_numpy(labels[:4000].astype(np.int64))


def test_shipped_weights_are_small_and_documented():
    import json

    from fullvq_hf.evaluation import DEFAULT_WEIGHTS

    assert DEFAULT_WEIGHTS.is_file() and DEFAULT_WEIGHTS.stat().st_size < 2 * 1024 * 1024
    info = json.loads(DEFAULT_WEIGHTS.with_suffix(".json").read_text())["info"]
    assert info["test_accuracy"] >= 0.89 and "fullvq_hf.evaluation.fmnist_classifier" in info["command"]


def test_shipped_classifier_accuracy(classifier, test_pixels, one_thread):
    x, y = test_pixels
    with torch.no_grad():
        logits = torch.cat([classifier(x[i : i + 1000]) for i in range(0, 2000, 1000)])
        feats = classifier.features(x[:8])
    assert logits.shape == (2000, 10) and feats.shape == (8, 128)
    accuracy = float((logits.argmax(1) == y[:2000]).float().mean())
    assert accuracy >= 0.88, accuracy


def test_classifier_rejects_wrong_images(classifier):
    with pytest.raises(ValueError, match="grey"):
        classifier(torch.zeros(2, 3, 32, 32))
    with pytest.raises(ValueError, match="to_pixels"):
        classifier(torch.zeros(2, 1, 28, 28))


def _degrade(x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    k = torch.ones(1, 1, 5, 5) / 25
    blurred = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (2, 2, 2, 2), mode="replicate"), k)
    return (blurred + 0.3 * torch.randn(x.shape, generator=g)).clamp(-1, 1)


def test_frechet_distance_in_classifier_space_separates_real_from_degraded(classifier, test_pixels, one_thread):
    x, _ = test_pixels
    first, second = x[:2000], x[2000:4000]
    metric = FrechetDistance(load_feature_extractor("fashion-mnist-classifier"))
    assert metric.feature_dim == 128
    for i in range(0, 2000, 500):
        metric.update(real=first[i : i + 500], fake=second[i : i + 500])
    real_vs_real = metric.compute()
    metric.reset(real=False)
    for i in range(0, 2000, 500):
        metric.update(fake=_degrade(second[i : i + 500]))
    real_vs_degraded = metric.compute()
    assert real_vs_real * 50 < real_vs_degraded, (real_vs_real, real_vs_degraded)
    # ssim / psnr agree that the degraded images are far from the originals
    assert float(ssim(second[:100], _degrade(second[:100])).mean()) < 0.6
    assert float(psnr(second[:100], _degrade(second[:100])).mean()) < 20


def test_save_load_roundtrip_and_weights_only_file(classifier, tmp_path):
    from fullvq_hf.evaluation import load_classifier, save_classifier

    x = torch.rand(4, 1, 32, 32) * 2 - 1
    path = save_classifier(classifier, tmp_path / "clf.safetensors", info={"note": "copy"})
    assert path.with_suffix(".json").is_file()
    loaded = load_classifier(path)
    with torch.no_grad():
        assert torch.equal(loaded.features(x), classifier.features(x))
    path.with_suffix(".json").unlink()  # the config is in the safetensors metadata too
    extractor = load_feature_extractor(path)
    with torch.no_grad():
        assert torch.equal(extractor(x), classifier.features(x))
    with pytest.raises(ValueError, match=".safetensors"):
        save_classifier(classifier, tmp_path / "clf.pt")


def test_train_classifier_smoke_is_deterministic(one_thread):
    from fullvq_hf.evaluation import train_classifier

    try:
        a = train_classifier(epochs=1, batch_size=32, seed=3, limit=256)
    except FileNotFoundError as e:
        pytest.skip(str(e))
    b = train_classifier(epochs=1, batch_size=32, seed=3, limit=256)
    assert not a.training
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name
    with pytest.raises(ValueError, match="at least 8 optimizer steps"):
        train_classifier(epochs=1, batch_size=64, limit=256)
