"""Image data loading as a user meets it: 16-bit PNGs, files over PIL's size limit, corrupt files among the first
rows (extract-codes' channel probe), and batch sizes that cannot work."""

import json

import numpy as np
import pytest
import torch
from helpers import tiny_fvq
from PIL import Image

from fullvq_hf.data import ImageTransform, TransformedImages, collate_images, load_image_dataset, open_image


def _rgb(seed: int, size: int = 20) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8))


@pytest.fixture
def folder(tmp_path):
    """An imagefolder whose FIRST rows are unreadable: a corrupt PNG and one over PIL's size limit (monkeypatched
    down to 1000 pixels by the tests that use ``small_pixel_limit``), then four good photos."""
    root = tmp_path / "images" / "cls"
    root.mkdir(parents=True)
    (root / "000_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 8)
    Image.new("RGB", (64, 64), (9, 9, 9)).save(root / "001_huge.png")  # 4096 px > 2 x 1000: a "bomb" below
    for i in range(4):
        _rgb(i).save(root / f"{i + 2:03d}_ok.png")
    return tmp_path / "images"


@pytest.fixture
def small_pixel_limit(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)


def test_sixteen_bit_grey_png_is_scaled_not_clipped(tmp_path):
    """PIL's convert('L') clips 16-bit values at 255: a mid-grey 16-bit PNG came out white."""
    ramp = np.linspace(0, 65535, 16 * 16).round().astype(np.uint16).reshape(16, 16)
    Image.fromarray(ramp).save(tmp_path / "ramp.png")
    image = Image.open(tmp_path / "ramp.png")
    assert image.mode.startswith("I")
    pixels = ImageTransform(16, channels=1, random_crop=False, flip=False)({"path": str(tmp_path / "ramp.png"), "bytes": None})
    expected = torch.from_numpy(np.rint(ramp / 257.0).astype(np.float32)).div(127.5).sub(1.0)
    torch.testing.assert_close(pixels[0], expected, rtol=0, atol=1e-6)
    assert float(pixels.mean()) == pytest.approx(0.0, abs=0.01)  # a ramp averages to mid-grey, not white
    rgb = ImageTransform(16, channels=3, random_crop=False, flip=False)(image)
    torch.testing.assert_close(rgb, expected.expand(3, -1, -1), rtol=0, atol=1e-6)


def test_image_over_the_size_limit_is_skipped_and_counted(folder, small_pixel_limit):
    """Was a DecompressionBombError that killed the run."""
    with pytest.raises(ValueError, match="Image skipped"):
        open_image({"path": str(next(folder.glob("*/001_huge.png"))), "bytes": None})
    dataset = load_image_dataset("imagefolder", "train", folder)
    images = TransformedImages(dataset, ImageTransform(16, 3))
    batch = collate_images([images[i] for i in range(len(images))])
    assert batch["num_skipped"] == 2 and batch["pixel_values"].shape == (4, 3, 16, 16)


def test_extract_codes_with_unreadable_images_among_the_first_rows(folder, small_pixel_limit, tmp_path):
    """The channel probe decoded the first rows and crashed on a corrupt file (or a bomb)."""
    from fullvq_hf.training.codes import main as extract_main

    tiny_fvq(sample_size=16).save_pretrained(tmp_path / "tok")
    metadata = extract_main(["--tokenizer", str(tmp_path / "tok"), "--dataset", "imagefolder", "--data-dir",
                             str(folder), "--output-dir", str(tmp_path / "codes"), "--resolution", "16", "--label-column", "none"])  # fmt: skip
    assert metadata["skipped_images"] == 2
    assert json.loads((tmp_path / "codes" / "fullvq_codes.json").read_text())["skipped_images"] == 2


def test_eval_batch_size_zero_is_an_error(tmp_path):
    from fullvq_hf.evaluation.tokenizer_eval import evaluate_tokenizer

    model = tiny_fvq(sample_size=16)
    dataset = [np.zeros((16, 16, 3), dtype=np.uint8)]  # never read: the arguments are checked first
    with pytest.raises(ValueError, match=r"batch_size must be at least 1, got 0 \(--batch-size\)"):
        evaluate_tokenizer(model, dataset, ImageTransform(16, 3), batch_size=0, progress=False)
    with pytest.raises(ValueError, match=r"max_images must be at least 1"):
        evaluate_tokenizer(model, dataset, ImageTransform(16, 3), max_images=0, progress=False)
