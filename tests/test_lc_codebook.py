"""VQGAN-LC feature codebook: encoder loading, patch-feature extraction, k-means, build / save / load, and
installing the result in ``VQGANLCModel``. Uses tiny random CLIP / ViT encoders and scikit-image's photos."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("skimage")
import skimage.data  # noqa: E402
from PIL import Image  # noqa: E402

from fullvq_hf import VQGANLCModel  # noqa: E402
from fullvq_hf.data.lc_codebook import (  # noqa: E402
    build_codebook,
    extract_features,
    kmeans,
    load_codebook_file,
    load_vision_encoder,
    save_codebook,
)
from fullvq_hf.models.quantizers import nearest_codes  # noqa: E402

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "cat")  # camera is grayscale
CLIP_DIM, GRID, POOL = 16, 8, 4  # projection_dim, 32 px / patch 4, pooled grid


def _small(array) -> Image.Image:
    image = Image.fromarray(array)
    image.thumbnail((96, 96))  # the processor resizes to 32 px anyway; keep the test fast
    return image


@pytest.fixture(scope="module")
def photos() -> list[Image.Image]:
    return [_small(getattr(skimage.data, name)()) for name in PHOTOS]


def _tiny_clip_vision_config(**overrides):
    from transformers import CLIPVisionConfig

    kwargs = dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        image_size=32, patch_size=4, projection_dim=CLIP_DIM,
    )
    return CLIPVisionConfig(**{**kwargs, **overrides})


def _clip_processor():
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> str:
    from transformers import CLIPVisionModelWithProjection

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_clip")
    CLIPVisionModelWithProjection(_tiny_clip_vision_config()).save_pretrained(path)
    _clip_processor().save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def clip(clip_dir):
    return load_vision_encoder(clip_dir, device="cpu")


@pytest.fixture(scope="module")
def clip_features(photos, clip) -> torch.Tensor:
    return extract_features(photos, clip, batch_size=4, progress=False)


# ---------------------------------------------------------------------------------------------------- encoder
def test_load_vision_encoder_clip(clip):
    from transformers import CLIPVisionModelWithProjection

    model, processor = clip
    assert isinstance(model, CLIPVisionModelWithProjection)
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())
    assert processor is not None


def test_load_full_clip_checkpoint_uses_top_level_projection_dim(tmp_path, photos):
    """A full CLIP checkpoint (text + vision): only the vision tower is loaded, with the top-level
    projection_dim (here 24, unlike the vision config's own default)."""
    from transformers import CLIPConfig, CLIPModel

    vision = _tiny_clip_vision_config().to_dict()
    text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    torch.manual_seed(1)
    full = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=24)).eval()
    full.save_pretrained(tmp_path)
    _clip_processor().save_pretrained(tmp_path)

    model, processor = load_vision_encoder(tmp_path, device="cpu", dtype="float32")
    assert model.visual_projection.weight.shape == (24, 32)
    torch.testing.assert_close(model.visual_projection.weight, full.visual_projection.weight)
    feats = extract_features(photos[:2], model, processor, progress=False)
    assert feats.shape == (2 * POOL**2, 24)


def test_load_vision_encoder_errors(tmp_path, clip_dir):
    with pytest.raises(ValueError, match="config.json"):
        load_vision_encoder(tmp_path / "does_not_exist")
    # weights but no preprocessor_config.json
    from transformers import CLIPVisionModelWithProjection

    CLIPVisionModelWithProjection.from_pretrained(clip_dir).save_pretrained(tmp_path / "no_processor")
    with pytest.raises(ValueError, match="image processor"):
        load_vision_encoder(tmp_path / "no_processor", device="cpu")
    with pytest.raises(ValueError, match="floating-point"):
        load_vision_encoder(clip_dir, device="cpu", dtype="int8")


# ---------------------------------------------------------------------------------------------------- features
def test_feature_shape(photos, clip_features):
    assert clip_features.shape == (len(photos) * POOL**2, CLIP_DIM)
    assert clip_features.dtype == torch.float32
    assert torch.isfinite(clip_features).all()
    # different photos give different features
    per_image = clip_features.view(len(photos), POOL**2, CLIP_DIM)
    assert (per_image[0] - per_image[1]).abs().max() > 1e-3


def test_features_match_hand_computation(photos, clip, clip_features):
    """post_layernorm + visual_projection on every patch token (CLS dropped), then 2x2 block means of the
    8x8 grid, rows in row-major order of the pooled grid."""
    model, processor = clip
    for i in (0, 4):  # an RGB photo and the grayscale one (converted to RGB)
        pixels = processor(images=[photos[i].convert("RGB")], return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            hidden = model(pixel_values=pixels).last_hidden_state  # (1, 1 + 64, 32)
            tokens = model.visual_projection(model.vision_model.post_layernorm(hidden[:, 1:]))  # (1, 64, 16)
        grid = tokens.reshape(GRID, GRID, CLIP_DIM)
        blocks = grid.reshape(POOL, GRID // POOL, POOL, GRID // POOL, CLIP_DIM).mean(dim=(1, 3))  # (4, 4, 16)
        expected = blocks.reshape(POOL**2, CLIP_DIM)
        torch.testing.assert_close(clip_features[i * POOL**2 : (i + 1) * POOL**2], expected, atol=1e-5, rtol=1e-5)


def test_feature_inputs_agree(photos, clip, clip_features):
    """Single-image batches, a datasets.Dataset with an "image" column and preprocessed pixels all agree."""
    from datasets import Dataset, Features, Value
    from datasets import Image as ImageFeature

    model, processor = clip
    one_by_one = extract_features(iter(photos), model, processor, batch_size=1, progress=False)
    torch.testing.assert_close(one_by_one, clip_features, atol=1e-5, rtol=1e-5)

    ds = Dataset.from_dict(
        {"image": photos, "label": list(range(len(photos)))},
        features=Features({"image": ImageFeature(), "label": Value("int64")}),
    )
    torch.testing.assert_close(extract_features(ds, clip, progress=False), clip_features, atol=1e-5, rtol=1e-5)

    pixels = processor(images=[p.convert("RGB") for p in photos], return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(extract_features(pixels, model, progress=False), clip_features, atol=1e-5, rtol=1e-5)

    with pytest.raises(ValueError, match="rename_column"):
        extract_features(ds.rename_column("image", "img"), clip, progress=False)


def test_extract_features_errors(photos, clip):
    model, _ = clip
    with pytest.raises(ValueError, match="image_processor="):
        extract_features(photos, model, progress=False)
    with pytest.raises(ValueError, match="patch grid"):
        extract_features(photos[:1], clip, pool_size=GRID + 1, progress=False)
    with pytest.raises(ValueError, match="pool_size"):
        extract_features(photos[:1], clip, pool_size=0, progress=False)
    with pytest.raises(ValueError, match="empty"):
        extract_features([], clip, progress=False)
    with pytest.raises(ValueError, match="PIL images"):
        extract_features(["not an image"], clip, progress=False)


def test_non_clip_backbone(tmp_path, photos):
    """Any AutoModel backbone: here a tiny ViT (8x8 patches on 32 px -> 4x4 grid, CLS dropped)."""
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    torch.manual_seed(2)
    config = ViTConfig(
        hidden_size=24, num_hidden_layers=1, num_attention_heads=2, intermediate_size=48, image_size=32, patch_size=8
    )
    ViTModel(config).save_pretrained(tmp_path)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(tmp_path)

    model, processor = load_vision_encoder(tmp_path, device="cpu")
    assert isinstance(model, ViTModel) and not model.training
    feats = extract_features(photos, (model, processor), pool_size=2, progress=False)
    assert feats.shape == (len(photos) * 4, 24)

    pixels = processor(images=[photos[1]], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        tokens = model(pixel_values=pixels).last_hidden_state[0, 1:]  # (16, 24)
    expected = tokens.reshape(2, 2, 2, 2, 24).mean(dim=(1, 3)).reshape(4, 24)
    torch.testing.assert_close(feats[4:8], expected, atol=1e-5, rtol=1e-5)

    codebook = build_codebook(photos, codebook_size=6, encoder=(model, processor), pool_size=2, progress=False)
    assert codebook.shape == (6, 24)


# ---------------------------------------------------------------------------------------------------- k-means
def _blobs(num_blobs=6, dim=8, per_blob=150, noise=0.05, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_blobs, dim, generator=g) * 5
    points = centres.repeat_interleave(per_blob, 0) + noise * torch.randn(num_blobs * per_blob, dim, generator=g)
    return points[torch.randperm(len(points), generator=g)], centres


@pytest.mark.parametrize("init", ["k-means++", "auto"])
def test_kmeans_recovers_blob_centres(init):
    x, true_centres = _blobs()
    found = kmeans(x, len(true_centres), num_iters=30, seed=0, init=init)
    assert found.shape == true_centres.shape and found.dtype == torch.float32
    dists = torch.cdist(true_centres, found)
    # every blob has a centre within the noise, and the matching is one-to-one
    assert dists.min(dim=1).values.max() < 0.05
    assert len(set(dists.argmin(dim=1).tolist())) == len(true_centres)


def test_kmeans_random_init_converges_to_a_fixed_point():
    """Random initialisation may end in a local minimum, but Lloyd's iterations must reach a fixed point:
    every centre is the mean of the points nearest to it."""
    x, true_centres = _blobs(seed=1)
    found = kmeans(x, len(true_centres), num_iters=50, seed=0, init="random")
    # "nearest" as k-means' own exact search decides it: another float kernel (torch.cdist) may break a near-tie
    # the other way (1 of 900 points here), which moves a mean by ~1e-3 without k-means being wrong
    assign = nearest_codes(x, found)[0]
    means = torch.stack([x[assign == j].mean(0) for j in range(len(found))])
    torch.testing.assert_close(found, means, atol=1e-5, rtol=1e-5)


def test_kmeans_chunked_search_gives_same_result():
    """The assignment search walks the distance matrix in blocks of at most max_search_elements values; tiny
    blocks (fewer than k, so both tokens and codes are split) must give the same centres as one big block."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(600, 12, generator=g)
    big = kmeans(x, 40, num_iters=10, seed=7)
    tiny = kmeans(x, 40, num_iters=10, seed=7, max_search_elements=37)
    torch.testing.assert_close(tiny, big, atol=1e-5, rtol=0)
    assert torch.equal(kmeans(x, 40, num_iters=10, seed=7), big)  # deterministic for a seed
    assert not torch.equal(kmeans(x, 40, num_iters=10, seed=8), big)


def test_kmeans_reseeds_empty_clusters():
    """Three distinct points, each repeated: random initialisations that pick duplicates leave clusters empty,
    which must be re-seeded until all three points are centres."""
    points = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = points.repeat_interleave(10, 0)
    for seed in range(8):
        centres = kmeans(x, 3, num_iters=20, seed=seed, init="random")
        assert torch.cdist(points, centres).min(dim=1).values.max() < 1e-6, seed


def test_kmeans_errors():
    x = torch.randn(10, 4)
    with pytest.raises(ValueError, match="not enough features: N=10 < k=11"):
        kmeans(x, 11)
    with pytest.raises(ValueError, match="positive integer"):
        kmeans(x, 0)
    with pytest.raises(ValueError, match=r"\(N, F\)"):
        kmeans(torch.randn(10), 2)
    with pytest.raises(ValueError, match="init"):
        kmeans(x, 2, init="kmeans||")
    with pytest.raises(ValueError, match="NaN"):
        kmeans(torch.full((4, 2), float("nan")), 2)
    torch.testing.assert_close(kmeans(x, 10, num_iters=3).sort(0).values, x.sort(0).values)  # k == N


# ---------------------------------------------------------------------------------------------------- build
def test_build_codebook_per_class(photos, clip, clip_features):
    labels = ["dog", "cat", "dog", "bird", "cat", "bird"]  # not sorted: blocks follow sorted label order
    k = 5
    codebook = build_codebook(photos, labels=labels, codes_per_class=k, encoder=clip, seed=3, progress=False)
    classes = sorted(set(labels))
    assert codebook.shape == (k * len(classes), CLIP_DIM)
    per_image = clip_features.view(len(photos), POOL**2, CLIP_DIM)
    for i, cls in enumerate(classes):
        members = per_image[[j for j, label in enumerate(labels) if label == cls]].reshape(-1, CLIP_DIM)
        expected = kmeans(members, k, seed=3 + i)
        torch.testing.assert_close(codebook[i * k : (i + 1) * k], expected, atol=1e-5, rtol=1e-5)


def test_build_codebook_global_and_label_column(photos, clip):
    from datasets import Dataset, Features, Value
    from datasets import Image as ImageFeature

    codebook = build_codebook(photos, codebook_size=12, encoder=clip, progress=False)
    assert codebook.shape == (12, CLIP_DIM) and codebook.device.type == "cpu"

    ds = Dataset.from_dict(
        {"image": photos, "label": [0, 0, 1, 1, 2, 2]},
        features=Features({"image": ImageFeature(), "label": Value("int64")}),
    )
    assert build_codebook(ds, labels="label", codes_per_class=3, encoder=clip, progress=False).shape == (9, CLIP_DIM)
    by_tensor = build_codebook(ds, labels=torch.tensor([0, 1] * 3), codes_per_class=2, encoder=clip, progress=False)
    assert by_tensor.shape == (4, CLIP_DIM)


def test_build_codebook_errors(photos, clip):
    with pytest.raises(ValueError, match="codebook_size="):
        build_codebook(photos, encoder=clip, progress=False)
    with pytest.raises(ValueError, match="not codebook_size"):
        build_codebook(photos, labels=[0] * 6, codebook_size=4, codes_per_class=2, encoder=clip, progress=False)
    with pytest.raises(ValueError, match="needs labels"):
        build_codebook(photos, codes_per_class=2, encoder=clip, progress=False)
    with pytest.raises(ValueError, match="7 labels for 6 images"):
        build_codebook(photos, labels=[0] * 7, codes_per_class=2, encoder=clip, progress=False)
    with pytest.raises(ValueError, match="Class 1 has only 1 image"):
        build_codebook(photos, labels=[0, 0, 0, 0, 0, 1], codes_per_class=20, encoder=clip, progress=False)
    with pytest.raises(ValueError, match="not enough features"):
        build_codebook(photos, codebook_size=1000, encoder=clip, progress=False)
    with pytest.raises(ValueError, match="column"):
        build_codebook(photos, labels="label", codes_per_class=2, encoder=clip, progress=False)


# ---------------------------------------------------------------------------------------------------- files
def test_save_load_round_trip(tmp_path):
    from safetensors import safe_open

    codebook = torch.randn(50, 16)
    path = save_codebook(codebook, tmp_path / "sub" / "lc.safetensors", encoder_name="openai/clip-vit-large-patch14")
    loaded = load_codebook_file(path)
    assert torch.equal(loaded, codebook) and loaded.dtype == codebook.dtype
    with safe_open(path, framework="pt") as handle:
        meta = handle.metadata()
    assert meta["shape"] == "50x16" and meta["encoder"] == "openai/clip-vit-large-patch14"

    # a directory stands for <dir>/codebook.safetensors
    assert save_codebook(codebook.half(), tmp_path) == os.path.join(tmp_path, "codebook.safetensors")
    assert torch.equal(load_codebook_file(tmp_path), codebook.half())


def test_file_errors(tmp_path):
    from safetensors.torch import save_file

    with pytest.raises(ValueError, match="No codebook file"):
        load_codebook_file(tmp_path / "missing.safetensors")
    save_file({"weights": torch.zeros(2, 2)}, tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match=r"no 'codebook' tensor.*\['weights'\]"):
        load_codebook_file(tmp_path / "other.safetensors")
    (tmp_path / "junk.safetensors").write_text(json.dumps({"not": "safetensors"}))
    with pytest.raises(ValueError, match="safetensors"):
        load_codebook_file(tmp_path / "junk.safetensors")
    with pytest.raises(ValueError, match=r"\(K, F\)"):
        save_codebook(torch.randn(3, 4, 5), tmp_path / "bad.safetensors")
    with pytest.raises(ValueError, match="NaN"):
        save_codebook(torch.full((3, 4), float("inf")), tmp_path / "bad.safetensors")


# ---------------------------------------------------------------------------------------------------- VQGAN-LC
def _pixels(photos, size=32) -> torch.Tensor:
    arrays = [torch.from_numpy(np.array(p.convert("RGB").resize((size, size)))) for p in photos]
    return torch.stack(arrays).permute(0, 3, 1, 2).float() / 127.5 - 1


def test_vqgan_lc_uses_built_codebook(tmp_path, photos, clip):
    codebook = build_codebook(photos, labels=[0, 0, 1, 1, 2, 2], codes_per_class=4, encoder=clip, progress=False)
    path = save_codebook(codebook, tmp_path / "lc.safetensors", encoder_name="tiny-clip")
    torch.manual_seed(0)
    model = VQGANLCModel.from_preset("tiny", codebook_size=12, codebook_feature_dim=CLIP_DIM)
    model.load_codebook(path)
    frozen = model.quantize.frozen_codebook
    assert torch.equal(frozen, codebook)
    assert not frozen.requires_grad
    assert all(p is not frozen for p in model.parameters())

    x = _pixels(photos[:4])
    ids = model.tokenize(x)
    assert ids.shape == (4, 16, 16) and ids.dtype == torch.long
    assert 0 <= int(ids.min()) and int(ids.max()) < 12

    # one training step: the projector learns, the feature codebook stays put
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    out = model(x)
    (out.loss + F.mse_loss(out.sample, x)).backward()
    assert frozen.grad is None
    assert model.quantize.codebook_projection.weight.grad is not None
    optimizer.step()
    assert torch.equal(model.quantize.frozen_codebook, codebook)

    # save_pretrained / from_pretrained keep it
    model.save_pretrained(tmp_path / "model")
    restored = VQGANLCModel.from_pretrained(tmp_path / "model")
    assert torch.equal(restored.quantize.frozen_codebook, codebook)


def test_vqgan_lc_rejects_wrong_codebooks(tmp_path):
    model = VQGANLCModel.from_preset("tiny", codebook_size=12, codebook_feature_dim=CLIP_DIM)
    with pytest.raises(ValueError, match="codebook_size x codebook_feature_dim"):
        model.load_codebook(save_codebook(torch.randn(10, CLIP_DIM), tmp_path / "wrong.safetensors"))
    with pytest.raises(ValueError, match="codebook_size x codebook_feature_dim"):
        model.load_codebook(torch.randn(12, CLIP_DIM + 1))
    with pytest.raises(ValueError, match="No codebook file"):
        model.load_codebook(tmp_path / "missing.safetensors")
