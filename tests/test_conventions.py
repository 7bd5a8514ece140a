"""diffusers / transformers conventions of the generator and the pipeline (issue 10, items 1-3 and 6).

Written from what diffusers' ``PipelineTesterMixin`` / ``ModelTesterMixin`` and transformers' ``ModelTesterMixin`` /
``GenerationTesterMixin`` check (their code is not used here): save/load, dict/tuple outputs, batching, hidden states
and attentions, eager vs sdpa, embeddings, generate, callbacks, progress bars, variants and shards, ``from_pipe``.
Token ids are compared exactly; floats with a tolerance.
"""

import json
import math

import pytest
import torch
from helpers import randomize_bridge, tiny_fvq
from test_llamagen import CLASSES, GRID, VOCAB, tiny_gpt, tiny_pipeline

from fullvq_hf import LlamaGenForConditionalGeneration, LlamaGenPipeline
from fullvq_hf.models.modeling_llamagen import rope_2d

N = GRID * GRID


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def null_labels(n: int) -> torch.Tensor:
    return torch.full((n,), CLASSES)


# =========================================================================== pipeline (item 1)
def test_pipeline_takes_one_generator_per_image():
    """A list of generators: image i depends on generator i only (was AttributeError: 'list' has no 'device')."""
    pipe = tiny_pipeline()
    a = pipe([3, 4], guidance_scale=2.0, generator=[gen(1), gen(2)], output_type="pt").images
    b = pipe([3, 5], guidance_scale=2.0, generator=[gen(1), gen(9)], output_type="pt").images
    assert torch.equal(a[0], b[0]) and not torch.equal(a[1], b[1])
    again = pipe([3, 4], guidance_scale=2.0, generator=[gen(1), gen(2)], output_type="pt").images
    assert torch.equal(a, again)
    with pytest.raises(ValueError, match="2 generators for 4 images"):
        pipe([3, 4], num_images_per_label=2, generator=[gen(1), gen(2)])


def test_pipeline_from_pipe_carries_both_components():
    pipe = tiny_pipeline()
    other = LlamaGenPipeline.from_pipe(pipe)
    assert other.transformer is pipe.transformer and other.vqvae is pipe.vqvae
    assert set(other.components) == {"transformer", "vqvae"}
    other.set_progress_bar_config(disable=True)
    kw = dict(class_labels=[2, 6], guidance_scale=3.0, output_type="latent")
    assert torch.equal(pipe(generator=gen(4), **kw).images, other(generator=gen(4), **kw).images)


def test_pipeline_save_options_reach_every_component_and_load_back(tmp_path):
    """variant and max_shard_size reach the vqvae too (FVQ's save_pretrained override used to hide them)."""
    pipe = tiny_pipeline()
    pipe.save_pretrained(tmp_path, variant="fp16", max_shard_size="30KB")
    for folder, weights in (("transformer", "model"), ("vqvae", "diffusion_pytorch_model")):
        index = tmp_path / folder / f"{weights}.safetensors.index.fp16.json"
        assert index.exists(), sorted(p.name for p in (tmp_path / folder).iterdir())
        shards = set(json.loads(index.read_text())["weight_map"].values())
        assert len(shards) > 1 and all(".fp16-" in s for s in shards)
        assert not (tmp_path / folder / f"{weights}.safetensors").exists()
    loaded = LlamaGenPipeline.from_pretrained(tmp_path, variant="fp16")
    loaded.set_progress_bar_config(disable=True)
    kw = dict(class_labels=[1, 5], guidance_scale=3.0, output_type="pt")
    assert torch.equal(pipe(generator=gen(3), **kw).images, loaded(generator=gen(3), **kw).images)
    with pytest.raises(OSError):  # no silent fallback to other weights
        LlamaGenPipeline.from_pretrained(tmp_path)


def test_pipeline_latent_output_is_the_token_ids():
    pipe = tiny_pipeline()
    tokens = pipe([3, 4], guidance_scale=2.0, generator=gen(5), output_type="latent").images
    assert tokens.shape == (2, GRID, GRID) and tokens.dtype == torch.long
    assert torch.equal(tokens, pipe.transformer.sample([3, 4], guidance_scale=2.0, generator=gen(5)))
    images = pipe([3, 4], guidance_scale=2.0, generator=gen(5), output_type="pt").images
    assert torch.allclose(images, (pipe.vqvae.detokenize(tokens).clamp(-1, 1) + 1) / 2, atol=1e-6)
    assert torch.equal(
        pipe(3, generator=gen(5), output_type="latent", return_dict=False)[0],
        pipe(3, generator=gen(5), output_type="latent").images,
    )


def test_pipeline_callback_on_step_end_sees_and_edits_the_tokens():
    pipe = tiny_pipeline()
    seen = []

    def record(p, step, timestep, callback_kwargs):
        assert p is pipe and step == timestep
        seen.append(
            (step, sorted(callback_kwargs), callback_kwargs["latents"].flatten(1)[:, : step + 1].clone())
        )
        return callback_kwargs

    tokens = pipe(
        [1, 2],
        generator=gen(0),
        output_type="latent",
        callback_on_step_end=record,
        callback_on_step_end_tensor_inputs=["latents", "logits"],
    ).images
    assert [s for s, _, _ in seen] == list(range(N)) and pipe.num_timesteps == N
    assert all(keys == ["latents", "logits"] for _, keys, _ in seen)
    assert torch.equal(seen[-1][2], tokens.flatten(1))

    def force_zero(p, step, timestep, callback_kwargs):
        latents = callback_kwargs["latents"].clone()
        latents.view(len(latents), -1)[:, step] = 0
        return {"latents": latents}

    forced = pipe([1, 2], generator=gen(0), output_type="latent", callback_on_step_end=force_zero).images
    assert torch.all(forced == 0)

    def stronger_guidance(p, step, timestep, callback_kwargs):
        p._guidance_scale += 1.0  # diffusers' test_callback_cfg pattern
        return callback_kwargs

    ramped = pipe(
        [1, 2],
        guidance_scale=2.0,
        temperature=0,
        output_type="latent",
        callback_on_step_end=stronger_guidance,
    )
    assert pipe.guidance_scale == 2.0 + N
    cond, uncond = (
        pipe.transformer(ramped.images.flatten(1), torch.tensor(c)).logits for c in ([1, 2], [CLASSES] * 2)
    )
    scales = torch.arange(2.0, 2.0 + N)[None, :, None]  # token i was drawn with scale 2 + i
    assert torch.equal((uncond + scales * (cond - uncond)).argmax(-1), ramped.images.flatten(1))
    with pytest.raises(ValueError, match="not available"):
        pipe([1], callback_on_step_end=record, callback_on_step_end_tensor_inputs=["tokens"])


def test_guidance_scale_follows_the_formula_for_any_finite_scale():
    """0 = unconditional model, negative allowed, NaN / inf errors (were all silently treated as 1)."""
    model = tiny_gpt()
    labels = torch.tensor([5, 7])
    for scale in (0.0, -1.5, 0.5):
        tokens = model.sample(labels, guidance_scale=scale, temperature=0).flatten(1)
        cond, uncond = model(tokens, labels).logits, model(tokens, null_labels(2)).logits
        assert torch.equal((uncond + scale * (cond - uncond)).argmax(-1), tokens), scale
    unconditional = model.sample(labels, guidance_scale=0.0, temperature=0).flatten(1)
    assert torch.equal(model(unconditional, null_labels(2)).logits.argmax(-1), unconditional)
    conditional = model.sample(labels, guidance_scale=1.0, temperature=0).flatten(1)
    assert not torch.equal(conditional, unconditional)
    pipe = tiny_pipeline()
    for bad in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(ValueError, match="guidance_scale must be finite"):
            model.sample([1], guidance_scale=bad)
        with pytest.raises(ValueError, match="guidance_scale must be finite"):
            pipe([1], guidance_scale=bad)


def test_sample_shows_a_progress_bar_that_can_be_disabled(capsys):
    model = tiny_gpt()
    model.sample([1], temperature=0)
    assert f"tokens:   0%|          | 0/{N}" in capsys.readouterr().err
    model.sample([1], temperature=0, progress_bar=False)
    assert capsys.readouterr().err == ""
    pipe = tiny_pipeline()
    pipe.set_progress_bar_config(disable=False)
    pipe([1], output_type="latent")
    assert f"0/{N}" in capsys.readouterr().err  # the pipeline's own bar, one step per token
    pipe.set_progress_bar_config(disable=True)
    pipe([1], output_type="latent")
    assert capsys.readouterr().err == ""


def test_empty_label_list_says_so():
    pipe = tiny_pipeline()
    for empty in ([], torch.tensor([], dtype=torch.long)):
        with pytest.raises(ValueError, match="class_labels is empty"):
            pipe(empty)
        with pytest.raises(ValueError, match="class_labels is empty"):
            pipe.transformer.sample(empty)


# =========================================================================== generator (item 2)
def test_hidden_states_and_attentions_are_returned_when_asked():
    model = tiny_gpt()
    ids, labels = torch.randint(0, VOCAB, (2, 7)), torch.tensor([1, 2])
    out = model(ids, labels, output_hidden_states=True, output_attentions=True)
    layers = model.config.num_hidden_layers
    assert len(out.hidden_states) == layers + 1 and len(out.attentions) == layers
    assert all(h.shape == (2, 8, 32) for h in out.hidden_states)
    embedded = torch.cat([model.cls_embedding(labels), model.tok_embeddings(ids)], dim=1)
    assert torch.equal(out.hidden_states[0], embedded)
    assert torch.allclose(model.output(out.hidden_states[-1]), out.logits, atol=1e-5)  # last = after the norm
    for weights in out.attentions:
        assert weights.shape == (2, model.config.num_attention_heads, 8, 8)
        assert torch.allclose(weights.sum(-1), torch.ones(2, 2, 8), atol=1e-5)
        assert torch.all(weights.triu(1) == 0)  # causal
    assert torch.allclose(out.logits, model(ids, labels).logits, atol=1e-5)
    plain = model(ids, labels)
    assert plain.hidden_states is None and plain.attentions is None
    model.config.output_hidden_states = True  # the config default, as in transformers
    assert len(model(ids, labels).hidden_states) == layers + 1


def test_unknown_forward_arguments_are_rejected():
    model = tiny_gpt()
    with pytest.raises(TypeError, match="class_label"):
        model(torch.zeros(1, 3, dtype=torch.long), class_label=torch.tensor([1]))


def test_attention_implementation_is_honoured_and_gives_the_same_logits():
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    calls = []

    def counting_sdpa(*args, **kwargs):
        calls.append(1)
        return sdpa_attention_forward(*args, **kwargs)

    AttentionInterface.register("counting_sdpa_test", counting_sdpa)
    model = tiny_gpt()
    ids, labels = torch.randint(0, VOCAB, (2, N)), torch.tensor([1, 10])
    assert model.config._attn_implementation == "sdpa"
    reference = model(ids, labels).logits
    cache_tokens = model.sample([1, 2], guidance_scale=2.0, temperature=0)
    model.set_attn_implementation("eager")
    assert model.config._attn_implementation == "eager"
    assert (model(ids, labels).logits - reference).abs().max().item() < 1e-5
    assert torch.equal(model.sample([1, 2], guidance_scale=2.0, temperature=0), cache_tokens)
    model.config._attn_implementation = "counting_sdpa_test"  # dispatch goes through ALL_ATTENTION_FUNCTIONS
    assert (model(ids, labels).logits - reference).abs().max().item() < 1e-5
    assert len(calls) == model.config.num_hidden_layers
    model.sample([1], temperature=0)
    assert len(calls) == model.config.num_hidden_layers * (1 + N)  # the static-cache path too
    eager = LlamaGenForConditionalGeneration._from_config(model.config, attn_implementation="eager")
    assert eager.config._attn_implementation == "eager"


def test_resize_token_embeddings():
    model = tiny_gpt()
    old_in, old_out = model.tok_embeddings.weight.clone(), model.output.weight.clone()
    embeddings = model.resize_token_embeddings(VOCAB + 8, mean_resizing=False)
    assert embeddings is model.get_input_embeddings() and embeddings.weight.shape == (VOCAB + 8, 32)
    assert model.get_output_embeddings().weight.shape == (VOCAB + 8, 32)
    assert model.config.vocab_size == VOCAB + 8
    assert torch.equal(model.tok_embeddings.weight[:VOCAB], old_in)
    assert torch.equal(model.output.weight[:VOCAB], old_out)
    logits = model(torch.tensor([[VOCAB + 7, 3]]), torch.tensor([1])).logits
    assert logits.shape == (1, 3, VOCAB + 8)
    model.resize_token_embeddings(VOCAB)
    assert model.config.vocab_size == VOCAB and model.output.weight.shape == (VOCAB, 32)
    with pytest.raises(ValueError, match="vocab_size"):
        model(torch.tensor([[VOCAB]]), torch.tensor([1]))


def test_rope_tables_are_non_persistent_float32_buffers(tmp_path):
    model = tiny_gpt(grid_size=[3, 5])
    buffers = dict(model.named_buffers())
    assert set(buffers) == {"rotary_emb.cos", "rotary_emb.sin"}
    cos, sin = rope_2d((3, 5), model.config.head_dim)
    assert torch.equal(buffers["rotary_emb.cos"], cos) and torch.equal(buffers["rotary_emb.sin"], sin)
    keys = set(model.state_dict())
    assert not any("rotary" in k or "rope" in k for k in keys)
    expected = {
        "cls_embedding.embedding_table.weight",
        "tok_embeddings.weight",
        "norm.weight",
        "output.weight",
    }
    for i in range(model.config.num_hidden_layers):
        expected |= {
            f"layers.{i}.{name}.weight"
            for name in ("attention_norm", "attention.wqkv", "attention.wo", "ffn_norm")
            + tuple(f"feed_forward.w{j}" for j in (1, 2, 3))
        }
    assert keys == expected  # LlamaGen's (and older checkpoints') keys, nothing added
    half = tiny_gpt(grid_size=[3, 5]).to(torch.bfloat16)
    assert half.rotary_emb.cos.dtype == torch.float32 and torch.equal(half.rotary_emb.cos, cos)
    model.save_pretrained(tmp_path)
    loaded = LlamaGenForConditionalGeneration.from_pretrained(tmp_path)
    assert torch.equal(loaded.rotary_emb.cos, cos) and torch.equal(loaded.rotary_emb.sin, sin)
    loaded16 = LlamaGenForConditionalGeneration.from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert loaded16.rotary_emb.cos.dtype == torch.float32 and torch.equal(loaded16.rotary_emb.sin, sin)
    ids = torch.randint(0, VOCAB, (1, 15))
    assert torch.equal(loaded.eval()(ids, torch.tensor([2])).logits, model(ids, torch.tensor([2])).logits)


# =========================================================================== generate (item 3)
@pytest.mark.parametrize(
    "guidance",
    [
        dict(guidance_scale=1.0),
        dict(guidance_scale=3.0),
        dict(guidance_scale=0.0),
        dict(guidance_scale=4.0, guidance_schedule="cosine"),
    ],
)
def test_generate_greedy_gives_the_tokens_of_sample(guidance):
    model = tiny_gpt()
    expected = model.sample([1, 2, 9], temperature=0, **guidance).flatten(1)
    out = model.generate(class_labels=[1, 2, 9], **guidance)
    assert out.shape == (3, 1 + N) and out[:, 0].tolist() == [1, 2, 9]
    assert torch.equal(out[:, 1:], expected)
    assert torch.equal(model.generate(class_labels=[1, 2, 9], use_cache=False, **guidance), out)
    assert torch.equal(model.generate(class_labels=[1, 2, 9], cache_implementation="static", **guidance), out)


@pytest.mark.parametrize(
    "sampling", [dict(), dict(top_k=20), dict(top_k=50, top_p=0.8, temperature=0.7), dict(top_p=0.9)]
)
def test_generate_seeded_sampling_gives_the_tokens_of_sample(sampling):
    """Both draw with torch.multinomial from the global RNG after the same filters: the same ids, exactly."""
    model = tiny_gpt()
    torch.manual_seed(11)
    expected = model.sample([0, 3, 4], guidance_scale=2.5, **sampling).flatten(1)
    torch.manual_seed(11)
    out = model.generate(class_labels=[0, 3, 4], guidance_scale=2.5, do_sample=True, **sampling)
    assert torch.equal(out[:, 1:], expected)
    torch.manual_seed(12)
    assert not torch.equal(
        model.generate(class_labels=[0, 3, 4], guidance_scale=2.5, do_sample=True, **sampling), out
    )


def test_generate_takes_the_class_as_the_prompt_and_continues_image_prompts():
    model = tiny_gpt()
    greedy = model.generate(class_labels=[4, 6], guidance_scale=2.0)
    assert torch.equal(model.generate(input_ids=greedy[:, :1], guidance_scale=2.0), greedy)
    assert torch.equal(model.generate(greedy[:, :6], guidance_scale=2.0), greedy)  # class + 5 known tokens
    scored = model.generate(
        class_labels=[4, 6], guidance_scale=2.0, return_dict_in_generate=True, output_scores=True
    )
    assert torch.equal(scored.sequences, greedy) and len(scored.scores) == N
    assert scored.scores[0].shape == (2, VOCAB)  # guided scores of the B rows (the model saw 2B)
    unconditional = model.generate(class_labels=[CLASSES, CLASSES])  # the null class is a valid prompt
    assert torch.equal(unconditional[:, 1:], model.generate(class_labels=[1, 2], guidance_scale=0.0)[:, 1:])
    with pytest.raises(ValueError, match="at most max_new_tokens=16"):
        model.generate(class_labels=[1], max_new_tokens=N + 1)
    with pytest.raises(ValueError, match="guidance_scale must be finite"):
        model.generate(class_labels=[1], guidance_scale=float("nan"))
    with pytest.raises(ValueError, match="outside"):
        model.generate(class_labels=[CLASSES + 1])
    with pytest.raises(ValueError, match="class as the prompt"):
        model.generate()


def test_forward_with_a_transformers_cache_matches_the_full_forward():
    from transformers import DynamicCache, StaticCache

    model = tiny_gpt()
    ids, labels = torch.randint(0, VOCAB, (2, N)), torch.tensor([3, 10])
    full = model(ids, labels).logits
    cache = DynamicCache(config=model.config)
    first = model(ids[:, :4], labels, cache=cache, use_cache=True)
    assert first.cache is cache and cache.get_seq_length() == 5
    rest = model(ids[:, 4:9], cache=cache).logits  # a chunk after the cache: an explicit mask
    step = model(ids[:, 9:10], cache=cache).logits
    cached = torch.cat([first.logits, rest, step], dim=1)
    assert (cached - full[:, :11]).abs().max().item() < 1e-5
    static = StaticCache(config=model.config, max_cache_len=N)  # preallocated: longer than what it holds
    parts = [model(ids[:, :4], labels, cache=static).logits, model(ids[:, 4:9], cache=static).logits]
    parts.append(model(ids[:, 9:10], cache=static).logits)
    assert (torch.cat(parts, dim=1) - full[:, :11]).abs().max().item() < 1e-5
    with pytest.raises(ValueError, match="class_labels is for the first call"):
        model(ids[:, 10:11], labels, cache=cache)
    with pytest.raises(ValueError, match="holds 16"):
        model(ids[:, :7], cache=cache)


# =========================================================================== tester-mixin style checks (item 6)
def test_model_outputs_equivalence_and_determinism():
    """transformers test_model_outputs_equivalence / test_determinism / test_batching_equivalence."""
    model = tiny_gpt()
    ids, labels = torch.randint(0, VOCAB, (3, N)), torch.tensor([1, 2, 3])
    out = model(ids, labels, labels=ids, output_hidden_states=True)
    tup = model(ids, labels, labels=ids, output_hidden_states=True, return_dict=False)
    assert torch.equal(tup[0], out.loss) and torch.equal(tup[1], out.logits)
    assert all(torch.equal(a, b) for a, b in zip(tup[2], out.hidden_states))
    assert torch.equal(model(ids, labels).logits, out.logits)
    single = torch.cat([model(ids[i : i + 1], labels[i : i + 1]).logits for i in range(3)])
    assert (single - out.logits).abs().max().item() < 1e-5
    assert out.logits.dtype == torch.float32 and math.isfinite(out.loss.item())


def test_training_step_and_retained_gradients():
    """transformers test_training / test_retain_grad_hidden_states_attentions."""
    model = tiny_gpt(token_dropout_prob=0.0, resid_dropout_prob=0.0, ffn_dropout_prob=0.0)
    model.train()
    ids = torch.randint(0, VOCAB, (2, N))
    out = model(ids, torch.tensor([1, 2]), labels=ids, output_hidden_states=True, output_attentions=True)
    out.hidden_states[0].retain_grad()
    out.attentions[0].retain_grad()
    out.loss.backward()
    assert out.hidden_states[0].grad is not None and out.attentions[0].grad is not None
    assert all(p.grad is not None for p in model.parameters())


def test_model_save_load_keeps_logits_and_attention_choice(tmp_path):
    """transformers test_save_load / test_can_use_safetensors; diffusers test_from_save_pretrained."""
    model = tiny_gpt()
    model.save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").exists()
    loaded = LlamaGenForConditionalGeneration.from_pretrained(tmp_path, attn_implementation="eager").eval()
    assert loaded.config._attn_implementation == "eager"
    ids = torch.randint(0, VOCAB, (2, N))
    assert (
        loaded(ids, torch.tensor([1, 2])).logits - model(ids, torch.tensor([1, 2])).logits
    ).abs().max() < 1e-5


def test_pipeline_conventions_from_the_diffusers_tester_mixin(tmp_path):
    """PipelineTesterMixin: components, dict/tuple, batch vs single, num_images_per_prompt, save/load, to(dtype)."""
    pipe = tiny_pipeline()
    assert set(pipe.components) == {"transformer", "vqvae"}
    rebuilt = LlamaGenPipeline(**pipe.components)
    rebuilt.set_progress_bar_config(disable=True)
    kw = dict(guidance_scale=2.0, output_type="np")
    a = pipe([1, 2], generator=gen(0), **kw).images
    assert (abs(a - rebuilt([1, 2], generator=gen(0), **kw).images)).max() == 0
    assert (abs(a - pipe([1, 2], generator=gen(0), return_dict=False, **kw)[0])).max() == 0
    batch = pipe([1, 2, 3], generator=[gen(i) for i in range(3)], output_type="latent").images
    single = torch.cat(
        [pipe([c], generator=gen(i), output_type="latent").images for i, c in enumerate([1, 2, 3])]
    )
    assert torch.equal(batch, single)
    assert pipe([1, 2], num_images_per_label=3, output_type="latent").images.shape == (6, GRID, GRID)
    pipe.to(torch.float64)
    assert pipe.transformer.dtype == torch.float64 and pipe.vqvae.dtype == torch.float64
    assert pipe([1], output_type="pt").images.dtype == torch.float32
    from fullvq_hf import FVQModel, VQGANLCModel

    assert set(LlamaGenPipeline._get_signature_types()["vqvae"]) == {
        FVQModel,
        VQGANLCModel,
    }  # from_pipe needs it


def test_fvq_save_pretrained_shows_the_modelmixin_options(tmp_path):
    import inspect

    vqvae = randomize_bridge(tiny_fvq())
    params = inspect.signature(vqvae.save_pretrained).parameters
    assert {"variant", "max_shard_size", "safe_serialization", "fold_codebook"} <= set(params)
    vqvae.save_pretrained(tmp_path, variant="fp16", fold_codebook=True)
    assert (tmp_path / "diffusion_pytorch_model.fp16.safetensors").exists()
