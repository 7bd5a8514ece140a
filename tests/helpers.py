"""Small builders shared by the tests."""

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file


def tiny_fvq(**overrides):
    from fullvq_hf import FVQModel

    kwargs = dict(codebook_size=256, codebook_dim=8)
    kwargs.update(overrides)
    return FVQModel.from_preset("tiny", "S/2", **kwargs)


def randomize_bridge(model, std=0.2, seed=0):
    """Give the zero-initialised recover layer weights, so the projected codebook is not all zero."""
    g = torch.Generator().manual_seed(seed)
    lin = model.quantize.qbridge.final_layer.linear
    with torch.no_grad():
        lin.weight.copy_(torch.randn(lin.weight.shape, generator=g) * std)
        lin.bias.copy_(torch.randn(lin.bias.shape, generator=g) * std)
    return model


def assert_nearest_codes(ids, z, codebook, tol=1e-4):
    """Every id names a nearest code of its latent (float64 squared distances), so a near-tie that another float
    kernel breaks the other way still passes while a wrong search or a wrong codebook fails: the chosen code's
    distance may exceed the minimum by at most ``tol * (1 + minimum)``, and at least 99% of ids equal the argmin."""
    d = torch.cdist(z.double(), codebook.double()).pow(2)
    best, ids = d.min(1), ids.flatten()
    chosen = d.gather(1, ids.view(-1, 1)).squeeze(1)
    far = chosen > best.values + tol * (1 + best.values)
    assert not far.any(), f"{int(far.sum())} of {len(ids)} ids are not a nearest code (worst excess {(chosen - best.values).max():.3g})"
    assert (ids == best.indices).float().mean() >= 0.99


def log_history(run_dir) -> list[dict]:
    """The rows of a trainer run's ``log_history.jsonl``."""
    return [json.loads(line) for line in (Path(run_dir) / "log_history.jsonl").read_text().splitlines()]


def resume_from_checkpoint(whole, resumed, step: int, run) -> dict:
    """Copy run ``whole``'s checkpoint of ``step`` into the fresh run folder ``resumed`` and resume it there with
    ``run(resumed, resume="latest")``; returns that call's result."""
    name = f"checkpoint-{step:08d}"
    (Path(resumed) / "checkpoints").mkdir(parents=True)
    shutil.copytree(Path(whole) / "checkpoints" / name, Path(resumed) / "checkpoints" / name)
    return run(resumed, resume="latest")


def assert_same_weights(a, b, folder: str = "model-train") -> None:
    """Two runs exported the same weights, bit for bit."""
    wa = load_file(Path(a) / folder / "diffusion_pytorch_model.safetensors")
    wb = load_file(Path(b) / folder / "diffusion_pytorch_model.safetensors")
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def benchmark_module(name: str):
    """Import ``benchmarks/<name>.py`` as the module ``name``, registered in ``sys.modules`` while a test uses it
    (dataclasses look their module up there); a generator for a pytest fixture: ``yield from``."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules[name]
