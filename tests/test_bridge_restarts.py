"""Dead VQBridge positions: the position of every code inside its bridge patch, copying one position's final-layer
rows to others, and the trainer's ``--bridge-restart-every`` (counting, restarting, exact resume)."""

import json
from types import SimpleNamespace

import pytest
import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType
from helpers import assert_same_weights, log_history, resume_from_checkpoint

from fullvq_hf import FVQModel
from fullvq_hf.models.vqbridge import DiTVQBridge, VQBridge
from fullvq_hf.training.config import make_config
from fullvq_hf.training.restarts import BridgePositionRestarts
from fullvq_hf.training.tokenizer_trainer import train

BRIDGES = {
    "vit": lambda: VQBridge(codebook_size=128, codebook_dim=4, patch_size=2, hidden_size=16, depth=1),  # 8 x 16 grid
    "dit": lambda: DiTVQBridge(codebook_size=144, codebook_dim=4, patch_size=2, hidden_size=16, depth=1),  # 12 x 12
}


def _trained(make):
    """A bridge whose final layer (zero at initialisation) has random weights, so that every code differs."""
    torch.manual_seed(0)
    bridge = make()
    for p in bridge.parameters():
        if p.dim() > 1 and not p.abs().sum():
            torch.nn.init.normal_(p, std=0.3)
    return bridge


def _fvq(**kw):
    """A tiny FVQ model: 64 codes of dim 4, ViT bridge with 2 x 2 patches (4 positions)."""
    return FVQModel(in_channels=1, out_channels=1, block_out_channels=(8, 8), layers_per_block=1, latent_channels=4,
                    norm_num_groups=4, codebook_size=64, codebook_dim=4, bridge_patch_size=2, bridge_hidden_size=16,
                    **kw)  # fmt: skip


@pytest.mark.parametrize("kind", sorted(BRIDGES))
def test_code_positions_are_the_final_layer_blocks_that_make_each_code(kind):
    bridge = _trained(BRIDGES[kind])
    raw = torch.randn(bridge.codebook_size, bridge.codebook_dim)
    positions = bridge.code_positions()
    p2, d = bridge.patch_size**2, bridge.codebook_dim
    assert positions.shape == (bridge.codebook_size,) and torch.equal(positions.bincount(), torch.full((p2,), bridge.codebook_size // p2))
    before = bridge(raw).detach()
    for j in range(p2):  # zeroing block j's rows changes exactly the codes of position j
        changed = _trained(BRIDGES[kind])
        with torch.no_grad():
            changed.final_layer.linear.weight[j * d : (j + 1) * d] = 0
        moved = (changed(raw).detach() != before).any(1)
        assert torch.equal(moved, positions == j), j


@pytest.mark.parametrize("kind", sorted(BRIDGES))
def test_code_patches_and_positions_say_which_final_layer_output_is_each_code(kind):
    bridge = _trained(BRIDGES[kind])
    raw = torch.randn(bridge.codebook_size, bridge.codebook_dim)
    outputs = []
    bridge.final_layer.register_forward_hook(lambda module, args, out: outputs.append(out.detach()))
    codes = bridge(raw).detach()
    tokens = outputs[0].reshape(-1, bridge.patch_size**2, bridge.codebook_dim)  # (patches, positions, D)
    patches, positions = bridge.code_patches(), bridge.code_positions()
    assert torch.equal(patches.bincount(), torch.full((tokens.shape[0],), bridge.patch_size**2))
    assert len(set(zip(patches.tolist(), positions.tolist()))) == bridge.codebook_size  # one code per pair
    assert torch.equal(codes, tokens[patches, positions])


@pytest.mark.parametrize("kind", sorted(BRIDGES))
def test_copy_position_makes_the_targets_copies_of_the_source(kind):
    bridge = _trained(BRIDGES[kind])
    raw = torch.randn(bridge.codebook_size, bridge.codebook_dim)
    positions = bridge.code_positions()
    before = bridge(raw).detach()
    bridge.copy_position(1, [0, 3], noise=0.0)
    after = bridge(raw).detach()
    for j in (0, 3):
        torch.testing.assert_close(after[positions == j], before[positions == 1], rtol=1e-5, atol=1e-6)
    for j in (1, 2):  # untouched
        assert torch.equal(after[positions == j], before[positions == j])
    bridge.copy_position(2, [0], noise=0.1)  # with noise: near the source, not equal to it
    noisy = bridge(raw).detach()[positions == 0]
    assert not torch.allclose(noisy, before[positions == 2])
    assert (noisy - before[positions == 2]).norm() < 0.5 * before[positions == 2].norm()


def test_restarts_copy_the_most_picked_position_into_the_unpicked_ones_every_n_steps():
    torch.manual_seed(0)
    model = _fvq()
    bridge = model.quantize.qbridge
    for p in bridge.final_layer.parameters():
        torch.nn.init.normal_(p, std=0.3)
    positions = bridge.code_positions()
    code_at = {j: int((positions == j).nonzero()[0]) for j in range(4)}
    restarts = BridgePositionRestarts(model, every=3, accelerator=Accelerator(cpu=True))
    restarts.update(torch.tensor([code_at[1], code_at[1], code_at[2]]))
    assert restarts.step(2) == []  # not a multiple of 3: keeps counting
    restarts.update(torch.tensor([[code_at[1]]]))
    assert restarts.state_dict() == {"hits": [0, 3, 1, 0], "restarted": 0}
    w = bridge.final_layer.linear.weight.detach().clone()
    assert restarts.step(3) == [0, 3]  # position 1 (3 picks) is copied into 0 and 3
    new = bridge.final_layer.linear.weight.detach()
    d = bridge.codebook_dim
    assert torch.equal(new[4:12], w[4:12])  # positions 1 and 2 untouched
    for j in (0, 3):
        assert not torch.equal(new[j * d : (j + 1) * d], w[j * d : (j + 1) * d])
        assert (new[j * d : (j + 1) * d] - w[4:8]).abs().max() < 0.1 * w[4:8].std() * 6
    assert restarts.state_dict() == {"hits": [0, 0, 0, 0], "restarted": 2}
    restarts.load_state_dict({"hits": [5, 0, 0, 1], "restarted": 7})
    assert restarts.step(6) == [1, 2] and restarts.restarted == 9
    with pytest.raises(ValueError, match="saved by a run with another bridge"):
        restarts.load_state_dict({"hits": [0] * 16, "restarted": 0})


class _OneOfTwoProcesses:
    """What the restarts read of an Accelerator, for one process of two (reduce: sum with the other one's picks)."""

    num_processes, device, distributed_type = 2, torch.device("cpu"), DistributedType.MULTI_CPU

    def __init__(self, rank):
        self.is_main_process, self.other = rank == 0, None

    def reduce(self, tensor, reduction):
        assert reduction == "sum"
        return tensor + self.other.hits


def test_a_restart_window_is_saved_summed_over_processes_and_resumed_on_the_main_one():
    model = _fvq()
    positions = model.quantize.qbridge.code_positions()
    accs = [_OneOfTwoProcesses(0), _OneOfTwoProcesses(1)]
    procs = [BridgePositionRestarts(model, every=3, accelerator=a) for a in accs]
    accs[0].other, accs[1].other = procs[1], procs[0]
    procs[0].update(torch.tensor([int((positions == 1).nonzero()[0])]))
    procs[1].update(torch.tensor([int((positions == 2).nonzero()[0])] * 2))  # picked by the second process only
    state = procs[0].state_dict()
    assert state["hits"] == [0, 1, 2, 0] and procs[1].state_dict() == state
    resumed = [BridgePositionRestarts(model, every=3, accelerator=a) for a in accs]
    accs[0].other, accs[1].other = resumed[1], resumed[0]
    for proc in resumed:
        proc.load_state_dict(state)
    assert resumed[0].hits.tolist() == [0, 1, 2, 0] and resumed[1].hits.tolist() == [0, 0, 0, 0]
    assert resumed[0].step(3) == [0, 3]  # the next reduction counts each pick once, as the uninterrupted run


def test_restarts_need_a_bridge():
    with pytest.raises(ValueError, match="has none.*leave bridge_restart_every at 0"):
        BridgePositionRestarts(_fvq(quantizer_type="vq"), every=20, accelerator=Accelerator(cpu=True))
    fvq = _fvq()
    with pytest.raises(ValueError, match="must be a positive number of steps"):
        BridgePositionRestarts(fvq, every=-1, accelerator=Accelerator(cpu=True))
    restarts = BridgePositionRestarts(fvq, every=2, accelerator=Accelerator(cpu=True))
    assert restarts.step(0) == [] and restarts.state_dict() == {"hits": [0] * 4, "restarted": 0}  # no window yet
    sharded = SimpleNamespace(distributed_type=DistributedType.FSDP)  # an FSDP run's accelerator, as far as it is read
    with pytest.raises(ValueError, match="FSDP shards across processes; train with DDP"):
        BridgePositionRestarts(fvq, every=2, accelerator=sharded)


def _run(out, **kw):
    opts = dict(preset="cpu-tiny", output_dir=str(out), bridge="S/4", bridge_restart_every=2, max_steps=5,
                checkpoint_every=3, gan_weight=0.0, eval_split=None, image_every=0, log_every=1)  # fmt: skip
    return train(make_config({**opts, **kw}))


def test_trainer_restarts_dead_positions_and_resumes_them_exactly(tmp_path):
    _run(tmp_path / "whole")
    restarted = [r["bridge_restarts"] for r in log_history(tmp_path / "whole")]
    assert restarted == sorted(restarted) and restarted[2] > 0  # a zero-initialised bridge picks one position first
    assert restarted[4] > restarted[3]  # and one after the resume point below, whose noise must be drawn the same
    state = json.loads((tmp_path / "whole" / "checkpoints" / "checkpoint-00000003" / "trainer_state.json").read_text())
    assert sum(state["task"]["bridge_restarts"]["hits"]) == 4 * 16 * 16  # step 3's picks, counted for the step-4 restart
    # resumed from step 3 (mid-window): the restart after step 4 sees the saved picks, so the weights are the same
    assert resume_from_checkpoint(tmp_path / "whole", tmp_path / "resumed", 3, _run)["steps_this_run"] == 2
    assert_same_weights(tmp_path / "whole", tmp_path / "resumed")
    assert [r["bridge_restarts"] for r in log_history(tmp_path / "resumed")] == restarted[3:]
