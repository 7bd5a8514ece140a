"""The README's demo runs end to end on real Fashion-MNIST (a few steps) and writes what it promises."""

import importlib.util
import json
from pathlib import Path

import pytest

from fullvq_hf import FVQModel, LlamaGenPipeline
from fullvq_hf.data import find_fashion_mnist, load_fashion_mnist, to_pixels

ROOT = Path(__file__).resolve().parents[1]


def test_fashion_mnist_reader():
    x, y = load_fashion_mnist("test")
    assert x.shape == (10000, 28, 28) and y.shape == (10000,) and int(y.max()) == 9
    p = to_pixels(x[:3])
    assert p.shape == (3, 1, 32, 32) and float(p.min()) == -1.0 and float(p.max()) <= 1.0
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        find_fashion_mnist("/nonexistent")


def test_demo_smoke(tmp_path):
    spec = importlib.util.spec_from_file_location("demo", ROOT / "examples" / "demo.py")
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    demo.main(["--output-dir", str(tmp_path), "--max-steps", "3", "--eval-max-images", "200", "--codebook-size", "1024",
               "--batch-size", "8", "--codes-images", "64", "--generator-steps", "3", "--samples-per-class", "5"])
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results) == {"FVQ (VQBridge)", "plain VQ", "generator"}
    generator = results.pop("generator")
    assert generator["num_images"] == 50 and 0 <= generator["accuracy"] <= 1 and generator["frechet_distance"] > 0
    assert generator["codes_images"] == 64 and generator["steps"] == 3
    assert (tmp_path / "samples.png").stat().st_size > 1000
    assert "classifier accuracy" in (tmp_path / "results.md").read_text()
    pipe = LlamaGenPipeline.from_pretrained(tmp_path / "pipeline")
    assert pipe.vqvae.codebook_size == 1024 and pipe.transformer.config.grid_size == [8, 8]
    for stats in results.values():
        assert stats["num_tokens"] == 200 * 64 and 0 < stats["usage"] <= 1
        assert stats["frechet_distance"] > 0 and stats["feature_extractor"] == "fashion-mnist-classifier"
    for name in ("reconstructions.png", "code_frequency.png"):
        assert (tmp_path / name).stat().st_size > 1000
    assert "| FVQ (VQBridge) |" in (tmp_path / "results.md").read_text()
    # FVQ trains with the package's restarts and tracking (their threshold from the share: tests/test_code_restarts)
    fvq_cfg = json.loads((tmp_path / "fvq" / "training_config.json").read_text())
    assert {o: fvq_cfg[o] for o in demo.FVQ_RESTARTS} == demo.FVQ_RESTARTS and demo.FVQ_RESTARTS["code_track_rate"]
    assert json.loads((tmp_path / "vq" / "training_config.json").read_text())["code_restart_every"] == 0
    folded = FVQModel.from_pretrained(tmp_path / "fvq" / "model")
    assert folded.config.quantizer_type == "vq" and folded.codebook_size == 1024
