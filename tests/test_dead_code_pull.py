"""Dead codes drawn towards the data: the quantizer's ``pull_loss``, the window bookkeeping of ``DeadCodePull``
and the trainer's ``--dead-code-pull`` (exact resume mid-window)."""

import json
import shutil

import pytest
import torch
from accelerate import Accelerator
from safetensors.torch import load_file

from fullvq_hf.models.quantizers import VectorQuantizer, VQBridgeQuantizer
from fullvq_hf.training.config import make_config
from fullvq_hf.training.restarts import DeadCodePull
from fullvq_hf.training.tokenizer_trainer import train


def test_pull_loss_is_the_distance_of_the_given_codes_to_their_nearest_latent():
    torch.manual_seed(0)
    q = VectorQuantizer(codebook_size=16, codebook_dim=3)
    with torch.no_grad():
        q.embedding.weight.copy_(torch.randn(16, 3) * 3)
    z = torch.randn(2, 3, 2, 2, requires_grad=True)
    plain = q(z)
    assert plain.pull_loss == 0
    out = q(z, pull_codes=torch.tensor([4, 9]))
    assert torch.equal(out.indices, plain.indices) and torch.equal(out.loss, plain.loss)  # search and loss untouched
    tokens = z.detach().permute(0, 2, 3, 1).reshape(-1, 3)
    codes = q.embedding.weight.detach()[[4, 9]]
    nearest = tokens[torch.cdist(codes, tokens).argmin(1)]
    torch.testing.assert_close(out.pull_loss, ((codes - nearest) ** 2).mean())
    out.pull_loss.backward()
    assert z.grad is None  # the latents are targets only
    moved = q.embedding.weight.grad.abs().sum(1) > 0
    assert moved.nonzero().flatten().tolist() == [4, 9]


def test_pull_loss_reaches_the_bridge_of_an_fvq_codebook():
    torch.manual_seed(0)
    q = VQBridgeQuantizer(codebook_size=64, codebook_dim=4, bridge_patch_size=2, bridge_hidden_size=16, bridge_depth=1)
    out = q(torch.randn(1, 4, 4, 4), pull_codes=torch.tensor([0, 5, 63]))
    out.pull_loss.backward()
    assert q.qbridge.final_layer.linear.weight.grad.abs().sum() > 0


def test_dead_codes_are_those_no_pick_reached_in_the_last_window():
    pull = DeadCodePull(codebook_size=10, window=3, accelerator=Accelerator(cpu=True), max_codes=4)
    assert pull.codes(0) is None  # nothing is dead before a window has ended
    pull.update(torch.tensor([[1, 2], [2, 3]]))
    pull.step(2)  # not a window end: keeps collecting
    assert pull.codes(2) is None
    pull.update(torch.tensor([5]))
    pull.step(3)
    assert pull.dead.tolist() == [0, 4, 6, 7, 8, 9]
    # at most 4 per step, in turn: every dead code is pulled within two steps
    assert set(pull.codes(3).tolist()) | set(pull.codes(4).tolist()) == {0, 4, 6, 7, 8, 9}
    assert all(len(pull.codes(s)) == 4 for s in range(5))
    pull.update(torch.tensor([0, 9]))
    state = json.loads(json.dumps(pull.state_dict()))
    fresh = DeadCodePull(codebook_size=10, window=3, accelerator=Accelerator(cpu=True), max_codes=4)
    fresh.load_state_dict(state)
    assert fresh.dead.tolist() == pull.dead.tolist() and torch.equal(fresh.picked, pull.picked)
    fresh.step(6)  # the new window saw 0 and 9 only
    assert fresh.dead.tolist() == [1, 2, 3, 4, 5, 6, 7, 8]
    with pytest.raises(ValueError, match="10-code codebook, this model has 12 codes"):
        DeadCodePull(12, 3, Accelerator(cpu=True)).load_state_dict(state)
    with pytest.raises(ValueError, match="positive number of steps"):
        DeadCodePull(10, 0, Accelerator(cpu=True))


def _run(out, **kw):
    opts = dict(preset="cpu-tiny", output_dir=str(out), dead_code_pull=1.0, dead_code_window=2, max_steps=5,
                checkpoint_every=3, gan_weight=0.0, eval_split=None, image_every=0, log_every=1)  # fmt: skip
    return train(make_config({**opts, **kw}))


def test_trainer_pulls_dead_codes_and_resumes_mid_window_exactly(tmp_path):
    _run(tmp_path / "whole")
    logs = [json.loads(line) for line in (tmp_path / "whole" / "log_history.jsonl").read_text().splitlines()]
    assert [r["loss/dead_code_pull"] > 0 for r in logs] == [False, False, True, True, True]  # from the first window end
    assert all(r["pulled_dead_codes"] > 0 for r in logs[2:])
    state = json.loads((tmp_path / "whole" / "checkpoints" / "checkpoint-00000003" / "trainer_state.json").read_text())
    assert set(state["task"]["dead_codes"]) == {"codebook_size", "picked", "dead"}
    ckpt = tmp_path / "resumed" / "checkpoints"
    ckpt.mkdir(parents=True)
    shutil.copytree(tmp_path / "whole" / "checkpoints" / "checkpoint-00000003", ckpt / "checkpoint-00000003")
    assert _run(tmp_path / "resumed", resume="latest")["steps_this_run"] == 2
    a = load_file(tmp_path / "whole" / "model-train" / "diffusion_pytorch_model.safetensors")
    b = load_file(tmp_path / "resumed" / "model-train" / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)  # the saved dead set and window picks were restored


def test_negative_pull_weight_is_refused(tmp_path):
    with pytest.raises(ValueError, match="dead_code_pull is a loss weight"):
        _run(tmp_path / "neg", dead_code_pull=-1.0)
