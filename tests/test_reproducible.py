"""Same seed, same machine: two training runs end with bit-identical weights (codebook and bridge included), so
the usage they report is the same; and the process settings of ``fullvq_hf.runtime`` are in place."""

import os

import torch
from safetensors.torch import load_file

from fullvq_hf import configure_cpu_runtime
from fullvq_hf.training.config import make_config
from fullvq_hf.training.tokenizer_trainer import train


def _run(out, **kw):
    cfg = make_config({"preset": "cpu-tiny", "output_dir": str(out), "max_steps": 3, "eval_split": None,
                       "checkpoint_every": 0, "image_every": 0, "gan_start_step": 2, "batch_size": 8, **kw})  # fmt: skip
    train(cfg)
    return load_file(str(out / "model-train" / "diffusion_pytorch_model.safetensors"))


def test_two_runs_with_the_same_seed_give_identical_weights(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # the codebook gradient (embedding backward) and the convs run multi-threaded
    try:
        a = _run(tmp_path / "a", seed=3)
        b = _run(tmp_path / "b", seed=3)
        c = _run(tmp_path / "c", seed=4)
    finally:
        torch.set_num_threads(threads)
    assert a.keys() == b.keys()
    assert any("qbridge" in k for k in a) and any("embedding" in k for k in a)
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert different == []
    assert any(not torch.equal(a[k], c[k]) for k in a)  # the seed does matter: the check can fail


def test_cpu_runtime_settings():
    applied = configure_cpu_runtime()
    assert applied == configure_cpu_runtime()  # once per process
    assert applied["omp_wait_policy"] == os.environ.get("OMP_WAIT_POLICY")
    if os.uname().sysname == "Linux" and os.environ.get("FULLVQ_KEEP_MALLOC") != "1":
        assert applied["malloc"] is True
