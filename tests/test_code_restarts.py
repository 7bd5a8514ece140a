"""Dead-code restarts: the quantizer's per-code offsets (``code_offsets``, ``restart_codes``, folding and export), the
trainer's ``CodeRestarts`` (which codes move, onto what, when) and ``--code-restart-every`` (exact resume)."""

import json
from types import SimpleNamespace

import pytest
import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType
from helpers import assert_same_weights, log_history, resume_from_checkpoint
from safetensors.torch import load_file

from fullvq_hf import FVQModel
from fullvq_hf.training.config import make_config
from fullvq_hf.training.restarts import CodeRestarts
from fullvq_hf.training.tokenizer_trainer import code_restart_threshold, train


def _fvq(**kw):
    """A tiny FVQ model: 64 codes of dim 4, ViT bridge with 2 x 2 patches, a trained-looking (non-zero) bridge."""
    torch.manual_seed(0)
    config = dict(in_channels=1, out_channels=1, block_out_channels=(8, 8), layers_per_block=1, latent_channels=4,
                  norm_num_groups=4, codebook_size=64, codebook_dim=4, bridge_patch_size=2, bridge_hidden_size=16)
    model = FVQModel(**{**config, **kw})
    for p in model.quantize.parameters():
        if p.dim() > 1 and not p.abs().sum():  # the zero-initialised final layer: random, so every code differs
            torch.nn.init.normal_(p, std=0.3)
    return model.eval()


@pytest.mark.parametrize("kind", ["vqbridge", "vq", "simvq"])
def test_restart_codes_puts_exactly_the_chosen_codes_on_the_targets(kind):
    model = _fvq(quantizer_type=kind, code_offsets=True)
    q = model.quantize
    params = {k: v.clone() for k, v in q.named_parameters()}
    before = q.get_codebook().detach().clone()
    ids, targets = torch.tensor([5, 17, 63]), torch.randn(3, 4)
    q.restart_codes(ids, targets)
    after = q.get_codebook().detach()
    torch.testing.assert_close(after[ids], targets, rtol=0, atol=1e-6)
    keep = torch.ones(64, dtype=torch.bool)
    keep[ids] = False
    assert torch.equal(after[keep], before[keep])
    assert all(torch.equal(v, params[k]) for k, v in q.named_parameters())  # only the offsets moved
    z = targets.reshape(1, 3, 1, 4).permute(0, 3, 1, 2)  # (B, D, h, w): each target is its restarted code's latent
    assert q.search(z).flatten().tolist() == ids.tolist()


def test_restart_codes_with_l2_normalised_codes_targets_the_normalised_latent():
    q = _fvq(quantizer_type="vq", use_l2_norm=True, code_offsets=True).quantize
    targets = torch.randn(2, 4) * 3
    q.restart_codes(torch.tensor([0, 1]), targets)
    torch.testing.assert_close(q.get_codebook()[:2].detach(), torch.nn.functional.normalize(targets, dim=-1))


def test_restart_codes_needs_offsets_and_matching_shapes():
    with pytest.raises(ValueError, match="no code offsets.*code_offsets=True"):
        _fvq().quantize.restart_codes(torch.tensor([0]), torch.zeros(1, 4))
    with pytest.raises(ValueError, match=r"ids \(n,\) and targets \(n, 4\)"):
        _fvq(code_offsets=True).quantize.restart_codes(torch.tensor([0, 1]), torch.zeros(1, 4))


@pytest.mark.parametrize("kind", ["vqbridge", "vq"])
def test_offsets_are_saved_and_folded_into_the_inference_codebook(kind, tmp_path):
    model = _fvq(quantizer_type=kind, code_offsets=True)
    model.quantize.restart_codes(torch.arange(0, 64, 3), torch.randn(22, 4))
    pixels = torch.rand(2, 1, 8, 8) * 2 - 1
    tokens = model.tokenize(pixels)
    model.save_pretrained(tmp_path / "train")
    loaded = FVQModel.from_pretrained(tmp_path / "train")
    assert torch.equal(loaded.quantize.code_offset, model.quantize.code_offset)
    model.save_pretrained(tmp_path / "folded", fold_codebook=True)
    folded = FVQModel.from_pretrained(tmp_path / "folded")
    assert folded.config.quantizer_type == "vq" and folded.config.code_offsets is False
    assert folded.quantize.code_offset is None
    torch.testing.assert_close(folded.get_codebook(), model.get_codebook(), rtol=0, atol=1e-6)
    assert torch.equal(folded.tokenize(pixels), tokens)
    assert torch.equal(model.to_diffusers_vqmodel().quantize(model.encode(pixels).latents)[2][2].reshape(2, 4, 4), tokens)


def test_a_plain_vq_with_offsets_starts_fvq_from_its_restarted_codebook():
    source = _fvq(quantizer_type="vq", code_offsets=True)
    source.quantize.restart_codes(torch.tensor([1, 2]), torch.randn(2, 4))
    fvq = FVQModel.from_vq_tokenizer(source, bridge="S/2")
    assert fvq.quantize.code_offset is None  # fresh offsets only when asked for (code_offsets=True)
    assert torch.equal(fvq.quantize.embedding.weight, source.quantize.get_codebook().detach())


def test_code_restarts_move_the_codes_below_the_threshold_onto_distinct_latents_lowest_first():
    model = _fvq(code_offsets=True)
    restarts = CodeRestarts(model, every=2, window=2, accelerator=Accelerator(cpu=True), seed=0)  # decay 0.5
    fresh = restarts.fresh
    latents = torch.randn(1, 4, 2, 2)
    latents[0, :, 1, 1] = latents[0, :, 0, 0]  # two identical latents: three distinct ones
    restarts.update(torch.arange(0, 60))  # step 1: codes 0-59 picked once, 60-63 not
    assert restarts.step(1, latents) == 0  # not a multiple of every
    restarts.update(torch.arange(0, 50))  # step 2: 0-49 picked again
    restarts.update(torch.tensor([0]))  # a second micro-batch of the same step
    moved = restarts.step(2, latents)
    expected = torch.full((64,), fresh / 4, dtype=torch.float64)  # two steps of decay, no pick
    expected[:60] += 0.5  # one pick in step 1, decayed once
    expected[:50] += 1
    expected[0] += 1
    # below 1: only the never-picked 60-63, of which the three distinct latents move the first three
    assert moved == 3 and restarts.restarted == 3
    expected[60:63] = fresh
    torch.testing.assert_close(restarts.recent, expected, rtol=0, atol=1e-12)
    codebook = model.quantize.get_codebook().detach()
    distinct = torch.unique(latents.permute(0, 2, 3, 1).reshape(-1, 4), dim=0)
    # each moved code sits on a different distinct latent
    dist = torch.cdist(codebook[60:63], distinct, compute_mode="donot_use_mm_for_euclid_dist")
    assert dist.min(1).values.max() < 1e-5 and len(set(dist.argmin(1).tolist())) == 3
    state = restarts.state_dict()
    again = CodeRestarts(model, every=2, window=2, accelerator=Accelerator(cpu=True), seed=0)
    again.load_state_dict(json.loads(json.dumps(state)))  # JSON keeps the float64 counts exactly
    assert torch.equal(again.recent, restarts.recent) and again.restarted == 3
    with pytest.raises(ValueError, match="counts picks of 64 codes, this model has 16"):
        CodeRestarts(_fvq(code_offsets=True, codebook_size=16), 2, 3, Accelerator(cpu=True)).load_state_dict(state)
    # a higher threshold also moves the rarely picked: after step 4, 50-59 (one pick, long ago) are below 1.5
    rare = CodeRestarts(_fvq(code_offsets=True), every=4, window=2, accelerator=Accelerator(cpu=True), threshold=1.5)
    rare.update(torch.arange(0, 60))
    for step in (1, 2, 3):
        assert rare.step(step, latents) == 0
        rare.update(torch.arange(0, 50))
    assert rare.step(4, torch.randn(1, 4, 4, 4)) == 14  # 60-63, then 50-59
    assert torch.equal((rare.recent == rare.fresh).nonzero().flatten(), torch.arange(50, 64))


def test_code_restarts_say_what_they_need():
    acc = Accelerator(cpu=True)
    with pytest.raises(ValueError, match="has none: build it with code_offsets=True"):
        CodeRestarts(_fvq(), every=2, window=3, accelerator=acc)
    with pytest.raises(ValueError, match="must be positive, got 2, 0 and 1.0"):
        CodeRestarts(_fvq(code_offsets=True), every=2, window=0, accelerator=acc)
    with pytest.raises(ValueError, match="must be positive, got 2, 3 and 0"):
        CodeRestarts(_fvq(code_offsets=True), every=2, window=3, accelerator=acc, threshold=0)
    conditional = _fvq(code_offsets=True, bridge_type="dit", bridge_num_classes=3)
    with pytest.raises(ValueError, match="class-conditional"):
        CodeRestarts(conditional, every=2, window=3, accelerator=acc)
    sharded = SimpleNamespace(distributed_type=DistributedType.DEEPSPEED)
    with pytest.raises(ValueError, match="DEEPSPEED shards across processes; train with DDP.*code_restart_every at 0"):
        CodeRestarts(_fvq(code_offsets=True), every=2, window=3, accelerator=sharded)


def _run(out, **kw):
    opts = dict(preset="cpu-tiny", output_dir=str(out), code_restart_every=2, code_restart_window=1, max_steps=6,
                checkpoint_every=3, gan_weight=0.0, eval_split=None, image_every=0, log_every=1)  # fmt: skip
    return train(make_config({**opts, **kw}))


def test_trainer_restarts_dead_codes_exports_them_folded_and_resumes_exactly(tmp_path):
    _run(tmp_path / "whole")
    restarted = [r["code_restarts"] for r in log_history(tmp_path / "whole")]
    assert restarted[0] == 0 and restarted[1] > 0 and restarted[5] > restarted[3]  # after steps 2, 4 and 6
    trained = FVQModel.from_pretrained(tmp_path / "whole" / "model-train")
    assert trained.config.code_offsets is True and trained.quantize.code_offset.abs().sum() > 0
    folded = FVQModel.from_pretrained(tmp_path / "whole" / "model")
    torch.testing.assert_close(folded.get_codebook(), trained.get_codebook().detach(), rtol=0, atol=1e-6)
    # resumed from step 3 (between two restarts): the picks saved with the checkpoint decide the step-4 restart
    assert resume_from_checkpoint(tmp_path / "whole", tmp_path / "resumed", 3, _run)["steps_this_run"] == 3
    assert_same_weights(tmp_path / "whole", tmp_path / "resumed")
    assert "quantize.code_offset" in load_file(tmp_path / "whole" / "model-train" / "diffusion_pytorch_model.safetensors")
    assert [r["code_restarts"] for r in log_history(tmp_path / "resumed")] == restarted[3:]


def test_a_plain_codebook_without_offsets_is_restarted_by_writing_its_rows():
    q = _fvq(quantizer_type="vq").quantize
    q.restart_codes(torch.tensor([3]), torch.ones(1, 4))
    assert torch.equal(q.embedding.weight[3].detach(), torch.ones(4))
    with pytest.raises(ValueError, match="no code offsets.*folded form"):
        _fvq(quantizer_type="simvq").quantize.restart_codes(torch.tensor([0]), torch.zeros(1, 4))


def test_reseed_rare_codes_moves_unpicked_codes_onto_distinct_latents_until_all_are_used():
    from fullvq_hf.models.quantizers import nearest_codes
    from fullvq_hf.training.restarts import reseed_rare_codes

    q = _fvq(quantizer_type="vq").quantize
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(3000, 4, generator=g)
    with torch.no_grad():
        q.embedding.weight.copy_(torch.randn(64, 4, generator=g))
        q.embedding.weight[:40] += 50.0  # 40 codes far from every latent: never picked
    before = q.embedding.weight.detach().clone()
    assert reseed_rare_codes(q, latents, rounds=0) == []
    moved = reseed_rare_codes(q, latents, rounds=3, window=3000, threshold=1, seed=0)
    assert moved[0] >= 40 and moved[-1] == 0  # the far codes (and any other unpicked one) move, then none is left
    after = q.embedding.weight.detach()
    changed = (after != before).any(1)
    assert changed[:40].all()
    exact = torch.cdist(after[changed], latents, compute_mode="donot_use_mm_for_euclid_dist")
    assert exact.min(1).values.max() < 1e-6  # each moved code sits on a latent
    assert len(torch.unique(after[changed], dim=0)) == int(changed.sum())  # on distinct ones
    counts = torch.bincount(nearest_codes(latents, after)[0], minlength=64)
    assert (counts > 0).all()
    with pytest.raises(ValueError, match=r"rounds >= 0, window >= 1 \(or None\) and threshold > 0"):
        reseed_rare_codes(q, latents, rounds=1, window=0)


@pytest.mark.parametrize("kind", ["vqbridge", "vq"])
def test_restart_codes_with_a_rate_moves_the_codes_that_fraction_of_the_way(kind):
    q = _fvq(quantizer_type=kind, code_offsets=kind == "vqbridge").quantize
    before = q.get_codebook().detach().clone()
    ids, targets = torch.tensor([2, 9, 40]), torch.randn(3, 4)
    q.restart_codes(ids, targets, rate=torch.tensor([0.5, 0.25, 1.0]))
    after = q.get_codebook().detach()
    expected = before[ids] + torch.tensor([[0.5], [0.25], [1.0]]) * (targets - before[ids])
    torch.testing.assert_close(after[ids], expected, rtol=0, atol=1e-6)
    q.restart_codes(ids[:1], targets[:1], rate=0.5)
    torch.testing.assert_close(q.get_codebook().detach()[2], (expected[0] + targets[0]) / 2, rtol=0, atol=1e-6)
    keep = torch.ones(64, dtype=torch.bool)
    keep[ids] = False
    assert torch.equal(q.get_codebook().detach()[keep], before[keep])


def test_code_tracking_moves_each_picked_code_towards_its_latents_mean_and_restarted_codes_onto_a_latent():
    model = _fvq(code_offsets=True)
    before = model.quantize.get_codebook().detach().clone()
    # every code picked twice except code 7 (once): with window 1 (no memory) and threshold 1.5 only 7 is restarted
    ids = torch.arange(64).repeat(2)[torch.arange(128) != 7]
    latents = torch.randn(1, 4, len(ids), 1)
    tracking = CodeRestarts(model, every=1, window=1, accelerator=Accelerator(cpu=True), threshold=1.5, track=0.5)
    half = len(ids) // 2  # two micro-batches of one step: the mean covers both
    tracking.update(ids[:half].reshape(1, -1, 1), latents[:, :, :half])
    tracking.update(ids[half:].reshape(1, -1, 1), latents[:, :, half:])
    assert tracking.step(1, latents) == 1
    after = model.quantize.get_codebook().detach()
    flat = latents[0, :, :, 0].T
    means = torch.zeros(64, 4).index_add_(0, ids, flat) / torch.bincount(ids, minlength=64)[:, None]
    moved = torch.arange(64) != 7
    torch.testing.assert_close(after[moved], before[moved] + 0.5 * (means[moved] - before[moved]), rtol=0, atol=1e-5)
    exact = torch.cdist(after[7:8], flat, compute_mode="donot_use_mm_for_euclid_dist")
    assert exact.min() < 1e-5  # restarted onto a latent, not tracked
    assert not torch.any(tracking.pending_sums)  # the step consumed its sums
    # a step without picks (and no restart due) moves nothing
    again = CodeRestarts(model, every=2, window=1, accelerator=Accelerator(cpu=True), track=0.5)
    again.update(torch.zeros(1, 0, 1, dtype=torch.long), torch.zeros(1, 4, 0, 1))
    assert again.step(1, latents) == 0 and torch.equal(model.quantize.get_codebook().detach(), after)


def test_code_tracking_says_what_it_needs(tmp_path):
    acc = Accelerator(cpu=True)
    with pytest.raises(ValueError, match="between 0 \\(off\\) and 1, got 1.5"):
        CodeRestarts(_fvq(code_offsets=True), every=2, window=3, accelerator=acc, track=1.5)
    with pytest.raises(ValueError, match=r"needs the latents of the picks: update\(indices, latents\)"):
        CodeRestarts(_fvq(code_offsets=True), every=2, window=3, accelerator=acc, track=0.1).update(torch.tensor([1]))
    with pytest.raises(ValueError, match="set --code-restart-every too"):
        _run(tmp_path / "no-restarts", code_restart_every=0, code_track_rate=0.1)


@pytest.mark.parametrize("batch, accumulation, expected", [(8, 1, 64.0), (4, 2, 64.0), (2, 1, 16.0)])
def test_code_restart_share_is_a_threshold_scaled_to_the_global_batch_tokens_and_codebook(batch, accumulation, expected):
    # cpu-fmnist-fvq at 1,024 codes: 32 x 32 pixels, 4x down = 64 tokens; 1.28 x 100 x (8 x 1) x 64 / 1024 = 64
    cfg = make_config(dict(preset="cpu-fmnist-fvq", codebook_size=1024, batch_size=batch, code_restart_every=1,
                           gradient_accumulation_steps=accumulation, code_restart_share=1.28))  # fmt: skip
    model = _fvq(code_offsets=True, codebook_size=1024, block_out_channels=(8, 8, 8))
    assert model.latent_shape(32, 32) == (8, 8)
    assert code_restart_threshold(cfg, model) == pytest.approx(expected)
    assert code_restart_threshold(cfg, model, num_processes=2) == pytest.approx(2 * expected)
    cfg.code_restart_share = None
    assert cfg.code_restart_threshold is None and code_restart_threshold(cfg, model) == 1.0


def test_code_restart_share_says_what_it_needs(tmp_path):
    model = _fvq(code_offsets=True)
    for threshold in (2.0, 1.0):  # 1.0, the value an unset threshold stands for, is caught too
        both = make_config(dict(preset="cpu-tiny", code_restart_every=1, code_restart_threshold=threshold,
                                code_restart_share=1.0))  # fmt: skip
        with pytest.raises(ValueError, match="both set the code restarts' threshold; give one of them"):
            code_restart_threshold(both, model)
    with pytest.raises(ValueError, match="must be positive, got 0.0"):
        code_restart_threshold(make_config(dict(preset="cpu-tiny", code_restart_every=1, code_restart_share=0.0)), model)
    with pytest.raises(ValueError, match="code_restart_share=1.0 sets the threshold.*set --code-restart-every too"):
        _run(tmp_path / "no-restarts", code_restart_every=0, code_restart_share=1.0)


def test_trainer_with_code_tracking_resumes_exactly(tmp_path):
    _run(tmp_path / "whole", code_track_rate=0.5)
    untracked = tmp_path / "untracked"
    _run(untracked)
    tracked = FVQModel.from_pretrained(tmp_path / "whole" / "model-train").quantize.code_offset
    assert not torch.equal(tracked, FVQModel.from_pretrained(untracked / "model-train").quantize.code_offset)
    tracking = lambda out, **kw: _run(out, code_track_rate=0.5, **kw)  # noqa: E731
    assert resume_from_checkpoint(tmp_path / "whole", tmp_path / "resumed", 3, tracking)["steps_this_run"] == 3
    assert_same_weights(tmp_path / "whole", tmp_path / "resumed")
