"""``cfg_interval`` (LlamaGen's ``--cfg-interval``) in ``sample``, ``generate`` and ``LlamaGenPipeline``, and the sampling
defaults a generator carries in its ``generation_config``; tiny random models, greedy ids compared exactly."""

import pytest
import torch
from test_llamagen import CLASSES, GRID, tiny_gpt, tiny_pipeline

from fullvq_hf import LlamaGenForConditionalGeneration
from fullvq_hf.models.modeling_llamagen import check_cfg_interval, guided_token_count

N = GRID * GRID
LABELS = [5, 7]


def test_guided_token_count_follows_llamagen_generate():
    # LlamaGen: the prefill token is guided, then decode step i (token i + 1) while i <= cfg_interval
    assert guided_token_count(-1, N) == N
    assert guided_token_count(0, N) == 2
    assert guided_token_count(3, N) == 5
    assert (
        guided_token_count(N - 2, N) == N
        and guided_token_count(N, N) == N
        and guided_token_count(10**6, N) == N
    )
    assert check_cfg_interval(4.0) == 4  # the official scripts parse --cfg-interval as a float
    for bad in (-2, 1.5, float("nan"), float("inf"), True, "x", None):
        with pytest.raises(ValueError, match="cfg_interval must be") as info:
            check_cfg_interval(bad)
        assert "-1" in str(info.value) and "k + 1" in str(info.value)  # the fix is in the message


@pytest.mark.parametrize("cfg_interval", [-1, N - 2, N, 1000])
@pytest.mark.parametrize("use_cache", [True, False])
def test_an_interval_covering_every_token_is_plain_cfg(cfg_interval, use_cache):
    model = tiny_gpt()
    kw = dict(guidance_scale=3.0, top_k=50, temperature=0.9, use_cache=use_cache)
    today = model.sample(LABELS, generator=torch.Generator().manual_seed(3), **kw)
    ids = model.sample(LABELS, cfg_interval=cfg_interval, generator=torch.Generator().manual_seed(3), **kw)
    assert torch.equal(ids, today)


@pytest.mark.parametrize("cfg_interval", [0, 3, 9])
def test_tokens_past_the_interval_come_from_the_conditional_logits(cfg_interval):
    model, s = tiny_gpt(), 3.0
    guided = cfg_interval + 2
    seen = {}

    def record(step, tensors):
        seen[step] = tensors["logits"].clone()

    ids = model.sample(LABELS, guidance_scale=s, cfg_interval=cfg_interval, temperature=0,
                       callback_on_step_end=record).flatten(1)  # fmt: skip
    full_cfg = model.sample(LABELS, guidance_scale=s, temperature=0).flatten(1)
    # the guided tokens are those of the CFG run
    assert torch.equal(ids[:, :guided], full_cfg[:, :guided])
    # independently: the full-forward logits of the drawn prefix, conditional and null class
    cond = model(ids, torch.tensor(LABELS)).logits  # (B, N, V): position i predicts token i
    uncond = model(ids, torch.full((2,), CLASSES)).logits
    for i in range(N):
        expected = uncond[:, i] + s * (cond[:, i] - uncond[:, i]) if i < guided else cond[:, i]
        torch.testing.assert_close(seen[i], expected, atol=1e-4, rtol=1e-4)
    assert torch.equal(cond[:, guided:].argmax(-1), ids[:, guided:])  # greedy on the conditional logits alone
    assert not torch.equal(ids, full_cfg)  # and that is another image than CFG at every token
    # the reference without a KV cache agrees
    assert torch.equal(
        model.sample(
            LABELS, guidance_scale=s, cfg_interval=cfg_interval, temperature=0, use_cache=False
        ).flatten(1),
        ids,
    )


@pytest.mark.parametrize("cfg_interval", [0, 3, N])
def test_generate_agrees_with_sample(cfg_interval):
    model = tiny_gpt()
    kw = dict(guidance_scale=3.0, cfg_interval=cfg_interval)
    expected = model.sample([1, 2, 9], temperature=0, **kw).flatten(1)
    out = model.generate(class_labels=[1, 2, 9], **kw)
    assert torch.equal(out[:, 1:], expected)
    assert torch.equal(model.generate(class_labels=[1, 2, 9], use_cache=False, **kw), out)
    # a prompt of 6 known tokens: the interval counts image tokens from the grid's first
    assert torch.equal(model.generate(out[:, :7], **kw), out)
    # seeded sampling draws the same ids too
    torch.manual_seed(11)
    sampled = model.sample([0, 3, 4], top_k=20, **kw).flatten(1)
    torch.manual_seed(11)
    assert torch.equal(model.generate(class_labels=[0, 3, 4], do_sample=True, top_k=20, **kw)[:, 1:], sampled)
    with pytest.raises(ValueError, match="cfg_interval must be"):
        model.generate(class_labels=[1], guidance_scale=2.0, cfg_interval=-3)


def test_generation_config_carries_the_sampling_defaults(tmp_path):
    model = tiny_gpt()
    explicit = model.sample(LABELS, guidance_scale=2.0, cfg_interval=3, temperature=0)
    assert not torch.equal(model.sample(LABELS, temperature=0), explicit)  # no recorded defaults: scale 1
    model.set_sampling_defaults(guidance_scale=2.0, cfg_interval=3)
    model.save_pretrained(tmp_path)
    loaded = LlamaGenForConditionalGeneration.from_pretrained(tmp_path).eval()
    assert loaded.generation_config.guidance_scale == 2.0 and loaded.generation_config.cfg_interval == 3
    assert torch.equal(loaded.sample(LABELS, temperature=0), explicit)
    assert torch.equal(loaded.generate(class_labels=LABELS)[:, 1:], explicit.flatten(1))
    with pytest.raises(ValueError, match="cfg_interval must be"):
        model.set_sampling_defaults(cfg_interval=-5)
    # explicit arguments still win
    assert torch.equal(loaded.sample(LABELS, guidance_scale=1.0, temperature=0),
                       model.sample(LABELS, guidance_scale=1.0, temperature=0))  # fmt: skip


def test_pipeline_cfg_interval_defaults_and_errors():
    pipe = tiny_pipeline()
    gpt = pipe.transformer

    def run(**kw):
        return pipe(LABELS, generator=torch.Generator().manual_seed(0), output_type="latent", **kw).images

    def reference(**kw):
        return gpt.sample(LABELS, generator=torch.Generator().manual_seed(0), **kw)

    assert torch.equal(run(), reference(guidance_scale=4.0))  # no recorded defaults: LlamaGen's demo scale
    assert torch.equal(run(guidance_scale=3.0, cfg_interval=2), reference(guidance_scale=3.0, cfg_interval=2))
    assert not torch.equal(run(guidance_scale=3.0, cfg_interval=2), reference(guidance_scale=3.0))
    gpt.set_sampling_defaults(guidance_scale=1.75, cfg_interval=5)
    assert torch.equal(run(), reference(guidance_scale=1.75, cfg_interval=5))
    assert pipe.guidance_scale == 1.75

    # a step-end callback (which hands the scale back every step) works across the interval
    def callback(pipe, step, timestep, kwargs):
        return {}

    with_callback = pipe(LABELS, generator=torch.Generator().manual_seed(0), output_type="latent",
                         callback_on_step_end=callback).images  # fmt: skip
    assert torch.equal(with_callback, reference(guidance_scale=1.75, cfg_interval=5))
    for bad in (-2, 2.5, "all"):
        with pytest.raises(ValueError, match="cfg_interval must be"):
            pipe(LABELS, cfg_interval=bad, output_type="latent")
