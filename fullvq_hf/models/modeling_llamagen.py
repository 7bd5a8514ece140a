"""``LlamaGenForConditionalGeneration``: LlamaGen's class-to-image GPT as a transformers ``PreTrainedModel``.

A Llama decoder over image token ids, conditioned on one class token:

    sequence  = [class embedding] + embeddings of tokens[:-1]         # (B, N, D), N = grid height x width
    logits[i] = distribution of image token i given the class and tokens < i

Pre-norm blocks (RMSNorm, fused-qkv attention with 2D RoPE, SwiGLU), no biases, an untied zero-initialised output
head. 2D RoPE splits each head in a row half and a column half (pairs interleaved, base 10000); the class position
gets all-zero cos/sin rows, which zeroes its queries and keys. That is what LlamaGen does, so its released weights
load and give the same logits. Module names follow LlamaGen (``tok_embeddings``, ``cls_embedding.embedding_table``,
``layers.i.attention.wqkv``, ``layers.i.feed_forward.w1``, ``norm``, ``output``), so its checkpoints convert by
stripping wrapper prefixes only.

Sampling (``sample``) preallocates a static KV cache, prefills the class token and decodes one token per step with
classifier-free guidance: the conditional half of the batch first, the null class second, the same sampled token fed
to both halves. The decode step has static shapes (a boolean mask over the preallocated cache), so it compiles with
``torch.compile(fullgraph=True)``.

transformers conventions: attention goes through ``ALL_ATTENTION_FUNCTIONS`` (``attn_implementation`` "eager",
"sdpa", flash-attention where installed, or a registered function), ``output_hidden_states`` / ``output_attentions``
are returned, embeddings resize, the 2D RoPE tables are non-persistent buffers, and ``generate()`` (GenerationMixin)
takes the class as the prompt's first position with classifier-free guidance through ``guidance_scale``, as MusicGen
does (a doubled batch, conditional half first, ``ClassifierFreeGuidanceLogitsProcessor``).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.cache_utils import Cache, DynamicCache
from transformers.generation import ClassifierFreeGuidanceLogitsProcessor, LogitsProcessorList
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, slice_logits_to_keep
from transformers.utils import logging

from .configuration_llamagen import LlamaGenConfig
from .hub_mixin import HubPushMixin

logger = logging.get_logger(__name__)

GUIDANCE_SCHEDULES = ("constant", "linear", "cosine")


# --------------------------------------------------------------------------------------------------- 2D RoPE
def rope_2d(
    grid_size: tuple[int, int], head_dim: int, theta: float = 10000.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables of LlamaGen's 2D RoPE, each (1 + H*W, head_dim // 2), row 0 (the class token) all zero.

    The first head_dim/4 rotation pairs turn with the token's row, the last head_dim/4 with its column; positions
    run row-major over the grid. Always computed on the CPU in float64, returned in float32.
    """
    height, width = grid_size
    quarter = head_dim // 4
    cpu = torch.device("cpu")
    freqs = 1.0 / (
        theta ** (torch.arange(0, 2 * quarter, 2, dtype=torch.float64, device=cpu) / (2 * quarter))
    )
    rows = torch.arange(height, dtype=torch.float64, device=cpu)[:, None, None] * freqs  # (H, 1, hd/4)
    cols = torch.arange(width, dtype=torch.float64, device=cpu)[None, :, None] * freqs  # (1, W, hd/4)
    angles = torch.cat([rows.expand(height, width, quarter), cols.expand(height, width, quarter)], dim=-1)
    angles = angles.reshape(height * width, 2 * quarter).float()  # (H*W, hd/2)
    zero = torch.zeros(1, 2 * quarter, device=cpu)
    return torch.cat([zero, angles.cos()]), torch.cat([zero, angles.sin()])


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs (x[2i], x[2i+1]) of x (B, heads, T, hd) by cos/sin (T, hd/2), in float32."""
    pairs = x.float().unflatten(-1, (-1, 2))  # (B, heads, T, hd/2, 2)
    x0, x1 = pairs.unbind(-1)
    out = torch.stack([x0 * cos - x1 * sin, x1 * cos + x0 * sin], dim=-1)
    return out.flatten(-2).type_as(x)


class LlamaGenRotaryEmbedding2D(nn.Module):
    """The 2D RoPE tables as non-persistent float32 buffers ``cos`` / ``sin`` (1 + H*W, hd/2): never in the state
    dict (checkpoints keep LlamaGen's keys), moved with the model, and kept in float32 under ``.to(dtype)``."""

    def __init__(self, config: LlamaGenConfig):
        super().__init__()
        self.grid_size = tuple(config.grid_size)
        self.head_dim = config.head_dim
        self.theta = config.rope_theta
        cos, sin = self.compute_tables()
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def compute_tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        return rope_2d(self.grid_size, self.head_dim, self.theta)

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        if self.cos.dtype != torch.float32:  # a dtype cast would round the tables: rebuild them in float32
            device = self.cos.device
            cos, sin = self.compute_tables()
            if device.type == "meta":
                cos, sin = torch.empty_like(cos, device=device), torch.empty_like(sin, device=device)
            self.cos, self.sin = cos.to(device), sin.to(device)
        return self

    def forward(self, positions: torch.LongTensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin (T, hd/2) float32 for sequence positions (T,) (0 = the class token)."""
        return self.cos[positions], self.sin[positions]


# --------------------------------------------------------------------------------------------------- attention
def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,  # (B, heads, T, hd)
    key: torch.Tensor,  # (B, heads, L, hd)
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,  # (1 or B, 1, T, L): additive float, or bool (True = attend)
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention written out: returns the output (B, T, heads, hd) and the weights (B, heads, T, L)."""
    weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            weights = weights.masked_fill(~attention_mask, torch.finfo(weights.dtype).min)
        else:
            weights = weights + attention_mask
    weights = F.softmax(weights, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = F.dropout(weights, p=dropout, training=module.training)
    out = torch.matmul(weights, value).transpose(1, 2).contiguous()
    return out, weights


def is_flash_attention(attn_implementation: str | None) -> bool:
    return attn_implementation is not None and "flash" in attn_implementation


def build_attention_mask(
    attn_implementation: str,
    query_positions: torch.LongTensor,  # (T,) sequence positions of the queries
    key_length: int,  # L: keys are sequence positions 0..L-1
    dtype: torch.dtype,
    static_cache: bool = False,
) -> torch.Tensor | None:
    """The causal mask in the form ``attn_implementation`` takes, or None where the kernel's own causality suffices.

    sdpa: None for a causal block from position 0 or for one query over all keys, else a bool (1, 1, T, L) mask;
    flash: always None (causal, bottom-right aligned; static caches are cut to their filled part instead);
    eager and any other registered function: an additive (1, 1, T, L) mask of ``dtype`` (0 = attend, min = masked).
    """
    if is_flash_attention(attn_implementation):
        return None
    length = query_positions.shape[0]
    if not static_cache and attn_implementation == "sdpa" and (key_length == length or length == 1):
        return None  # sdpa's is_causal (or nothing to mask)
    slots = torch.arange(key_length, device=query_positions.device)
    allowed = (slots[None, :] <= query_positions[:, None])[None, None]  # (1, 1, T, L)
    if attn_implementation == "sdpa":
        return allowed
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(
        ~allowed, torch.finfo(dtype).min
    )


# --------------------------------------------------------------------------------------------------- layers
class LlamaGenRMSNorm(nn.Module):
    def __init__(self, hidden_size: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(hidden_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


class LlamaGenClassEmbedder(nn.Module):
    """Class labels -> one class token (B, 1, D); row ``num_classes`` is the null class of classifier-free guidance.

    In training, each label is replaced by the null class with probability ``dropout_prob`` (label dropout).
    """

    def __init__(self, num_classes: int, hidden_size: int, dropout_prob: float):
        super().__init__()
        self.num_classes = num_classes
        self.dropout_prob = dropout_prob
        self.embedding_table = nn.Embedding(num_classes + 1, hidden_size)

    def forward(self, class_labels: torch.LongTensor) -> torch.Tensor:
        if self.training and self.dropout_prob > 0:
            drop = torch.rand(class_labels.shape, device=class_labels.device) < self.dropout_prob
            class_labels = torch.where(drop, self.num_classes, class_labels)
        return self.embedding_table(class_labels).unsqueeze(1)  # (B, 1, D)


class LlamaGenAttention(nn.Module):
    """Fused-qkv attention with 2D RoPE; the attention itself is ``ALL_ATTENTION_FUNCTIONS[attn_implementation]``."""

    def __init__(self, config: LlamaGenConfig, layer_idx: int = 0):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        self.num_key_value_groups = 1
        self.scaling = self.head_dim**-0.5
        self.is_causal = True
        self.attention_dropout = config.attention_dropout
        self.wqkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=False)
        self.wo = nn.Linear(config.hidden_size, config.hidden_size, bias=False)
        self.resid_dropout = nn.Dropout(config.resid_dropout_prob)

    def forward(
        self,
        x: torch.Tensor,  # (B, T, D)
        position_embeddings: tuple[torch.Tensor, torch.Tensor],  # cos, sin (T, hd/2)
        attention_mask: torch.Tensor | None = None,  # from build_attention_mask
        kv_cache: tuple[torch.Tensor, torch.Tensor] | None = None,  # static (B, heads, L, hd) x 2, in place
        cache_position: torch.LongTensor | None = None,  # (T,) positions of x in the static cache
        cache: Cache | None = None,  # transformers' cache (generate)
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch, length, _ = x.shape
        q, k, v = self.wqkv(x).view(batch, length, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        cos, sin = position_embeddings
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)  # (B, heads, T, hd)
        implementation = "eager" if output_attentions else self.config._attn_implementation
        if kv_cache is not None:
            k_cache, v_cache = kv_cache
            k_cache.index_copy_(2, cache_position, k.to(k_cache.dtype))
            v_cache.index_copy_(2, cache_position, v.to(v_cache.dtype))
            k, v = k_cache, v_cache
            if is_flash_attention(implementation):  # no mask: attend to the filled part of the cache only
                filled = int(cache_position[-1]) + 1
                k, v = k[:, :, :filled], v[:, :, :filled]
        elif cache is not None:
            past = int(cache.get_seq_length(self.layer_idx))  # int: a static cache's counter grows in place
            k, v = cache.update(k, v, self.layer_idx)
            k, v = (
                k[:, :, : past + length],
                v[:, :, : past + length],
            )  # a preallocated (static) cache is longer
        if implementation == "eager":
            attention_interface: Callable = eager_attention_forward
        else:
            attention_interface = ALL_ATTENTION_FUNCTIONS.get_interface(
                implementation, eager_attention_forward
            )
        out, weights = attention_interface(
            self,
            q,
            k,
            v,
            attention_mask,
            dropout=self.attention_dropout if self.training else 0.0,
            scaling=self.scaling,
        )
        out = out.reshape(batch, length, -1)  # (B, T, D)
        return self.resid_dropout(self.wo(out)), weights


class LlamaGenFeedForward(nn.Module):
    """SwiGLU: w2(silu(w1 x) * w3 x)."""

    def __init__(self, config: LlamaGenConfig):
        super().__init__()
        self.w1 = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.w3 = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.w2 = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)
        self.ffn_dropout = nn.Dropout(config.ffn_dropout_prob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ffn_dropout(self.w2(F.silu(self.w1(x)) * self.w3(x)))


class LlamaGenBlock(GradientCheckpointingLayer):
    def __init__(self, config: LlamaGenConfig, layer_idx: int = 0):
        super().__init__()
        self.attention_norm = LlamaGenRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.attention = LlamaGenAttention(config, layer_idx)
        self.ffn_norm = LlamaGenRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.feed_forward = LlamaGenFeedForward(config)

    def forward(
        self,
        x: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        attention_mask: torch.Tensor | None = None,
        kv_cache: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache_position: torch.LongTensor | None = None,
        cache: Cache | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        attn, weights = self.attention(
            self.attention_norm(x),
            position_embeddings,
            attention_mask,
            kv_cache=kv_cache,
            cache_position=cache_position,
            cache=cache,
            output_attentions=output_attentions,
        )
        x = x + attn
        return x + self.feed_forward(self.ffn_norm(x)), weights


# --------------------------------------------------------------------------------------------------- sampling
def check_guidance_scale(guidance_scale: float) -> float:
    """The scale as a float, or a ValueError for NaN / infinite / non-numeric values."""
    try:
        scale = float(guidance_scale)
    except (TypeError, ValueError):
        raise ValueError(f"guidance_scale must be a finite number, got {guidance_scale!r}") from None
    if not math.isfinite(scale):
        raise ValueError(
            f"guidance_scale must be finite, got {guidance_scale}: guided logits = uncond + (cond - uncond) * scale; "
            "1 samples the conditional model, 0 the unconditional one, > 1 strengthens the class"
        )
    return scale


def guidance_scales(scale: float, num_tokens: int, schedule: str = "constant") -> list[float]:
    """Per-token CFG scale: constant, or rising from 1 to ``scale`` linearly or along a half cosine."""
    if schedule not in GUIDANCE_SCHEDULES:
        raise ValueError(f"guidance_schedule must be one of {GUIDANCE_SCHEDULES}, got {schedule!r}")
    scale = check_guidance_scale(scale)
    if schedule == "constant" or num_tokens == 1:
        return [scale] * num_tokens
    ramp = [i / (num_tokens - 1) for i in range(num_tokens)]
    if schedule == "cosine":
        ramp = [(1 - math.cos(math.pi * r)) / 2 for r in ramp]
    return [1.0 + (scale - 1.0) * r for r in ramp]


def check_cfg_interval(cfg_interval) -> int:
    """LlamaGen's ``cfg_interval`` as an int, or a ValueError: -1 (guidance at every token) or an integer >= 0."""
    fix = (
        "pass -1 (classifier-free guidance at every token, the default) or an integer k >= 0 (LlamaGen's "
        "--cfg-interval: guidance for image tokens 0 .. k + 1, the conditional logits alone after)"
    )
    if isinstance(cfg_interval, bool):
        raise ValueError(f"cfg_interval must be an integer, got {cfg_interval!r}: {fix}")
    try:
        value = float(cfg_interval)
    except (TypeError, ValueError):
        raise ValueError(f"cfg_interval must be an integer, got {cfg_interval!r}: {fix}") from None
    if not math.isfinite(value) or value != int(value) or value < -1:
        raise ValueError(f"cfg_interval must be -1 or an integer >= 0, got {cfg_interval!r}: {fix}")
    return int(value)


def guided_token_count(cfg_interval: int, num_tokens: int) -> int:
    """How many leading image tokens are drawn from guided logits under LlamaGen's ``cfg_interval``.

    LlamaGen's ``generate`` (``autoregressive/models/generate.py``) guides the first token (the prefill) and then
    decode step i (which draws image token i + 1) while ``i <= cfg_interval``; from the first step past it on, it
    takes the conditional logits alone. So ``cfg_interval = k >= 0`` guides tokens 0 .. k + 1 (k + 2 tokens) and
    -1 guides all ``num_tokens``.
    """
    cfg_interval = check_cfg_interval(cfg_interval)
    return num_tokens if cfg_interval == -1 else min(cfg_interval + 2, num_tokens)


def filter_logits(
    logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None, top_p: float = 1.0
) -> torch.Tensor:
    """float32 logits (B, V) / temperature with tokens outside the top-k / top-p set at -inf.

    The same arithmetic as transformers' ``TemperatureLogitsWarper``, ``TopKLogitsWarper`` (ties kept) and
    ``TopPLogitsWarper`` (the smallest set whose mass reaches ``top_p``, found on the ascending cumulative sum), so
    that ``sample`` and ``generate`` draw the same tokens from the same random stream.
    """
    logits = logits.float() / temperature
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k)[0][..., -1, None]
        logits = logits.masked_fill(logits < kth, -float("inf"))
    if top_p < 1.0:
        sorted_logits, sorted_index = torch.sort(logits, descending=False)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        remove = cumulative <= (1 - top_p)
        remove[..., -1:] = False  # keep at least one token
        logits = logits.masked_fill(remove.scatter(1, sorted_index, remove), -float("inf"))
    return logits


def sample_from_logits(
    logits: torch.Tensor,  # (B, V)
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float = 1.0,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
) -> torch.LongTensor:
    """One token per row (B, 1): temperature, then top-k, then nucleus (top-p) filtering, then a multinomial draw.

    ``temperature=0`` is greedy. Top-p keeps the smallest set of most likely tokens whose mass reaches ``top_p``, as
    LlamaGen and transformers do. ``generator`` may be a list with one generator per row (each row then draws from
    its own generator only, so a row does not depend on the others).
    """
    if temperature == 0:
        return logits.argmax(-1, keepdim=True)
    probs = filter_logits(logits, temperature, top_k, top_p).softmax(-1)
    if isinstance(generator, (list, tuple)):
        return torch.cat([torch.multinomial(p[None], 1, generator=g) for p, g in zip(probs, generator)])
    return torch.multinomial(probs, 1, generator=generator)  # (B, 1)


class LlamaGenGuidanceLogitsProcessor(ClassifierFreeGuidanceLogitsProcessor):
    r"""transformers' [`ClassifierFreeGuidanceLogitsProcessor`] (scores of a doubled batch, conditional half first,
    guided = uncond + (cond - uncond) * scale) for any finite scale and LlamaGen's scale schedules.

    transformers' processor accepts only scales > 1; the formula holds for any scale (0 gives the unconditional model,
    1 the conditional one). The scale at image token i follows ``guidance_scales(scale, num_image_tokens, schedule)``,
    i counted from the class token (the prompt's first position). Image tokens from
    ``guided_token_count(cfg_interval, num_image_tokens)`` on (LlamaGen's ``cfg_interval``; -1: never) get the
    conditional half of the scores alone.
    """

    def __init__(
        self,
        guidance_scale: float,
        num_image_tokens: int,
        guidance_schedule: str = "constant",
        cfg_interval: int = -1,
    ):
        self.scales = guidance_scales(guidance_scale, num_image_tokens, guidance_schedule)
        self.guidance_scale = self.scales[0]
        self.guided_tokens = guided_token_count(cfg_interval, num_image_tokens)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        step = input_ids.shape[1] - 1  # the index of the image token drawn from these scores
        if step >= self.guided_tokens:  # past cfg_interval: the conditional logits alone
            if scores.shape[0] != 2 * input_ids.shape[0]:
                raise ValueError(
                    f"expected the scores of a doubled batch (conditional rows first), got {scores.shape[0]} rows "
                    f"for {input_ids.shape[0]} sequences"
                )
            return scores[: input_ids.shape[0]]
        self.guidance_scale = self.scales[min(step, len(self.scales) - 1)]
        return super().__call__(input_ids, scores)


def _without_guidance(config):
    """``config`` or a copy of it without ``guidance_scale`` and ``cfg_interval`` (handled by ``generate`` itself)."""
    if getattr(config, "guidance_scale", None) is None and not hasattr(config, "cfg_interval"):
        return config
    config = copy.deepcopy(config)
    config.guidance_scale = None
    if hasattr(config, "cfg_interval"):
        del config.cfg_interval
    return config


# --------------------------------------------------------------------------------------------------- models
def logits_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of float ``logits`` (..., vocab) against ``labels`` (...; -100 ignored)."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)


def head_cross_entropy(hidden: torch.Tensor, head: nn.Module, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of ``head(hidden)`` (..., vocab) against ``labels`` (...; -100 ignored), without materialising
    the logits: torch's chunked ``F.linear_cross_entropy`` (torch >= 2.13) computes them a block of rows at a time
    and the head's gradients in the same pass. On CPU blocks of 2^22 logits (256 rows of a 16,384-code vocabulary)
    stay in cache. The logits are computed and dropped (the reference path) where torch lacks the op, outside float32
    (under autocast or with bf16/fp16 weights the chunked op returns the loss rounded to that dtype; the reference
    path's is float32), and where the head is not a plain ``nn.Linear`` or carries hooks (adapters, offloading)."""
    options_class = getattr(nn, "LinearCrossEntropyOptions", None)
    plain = type(head) is nn.Linear and head.bias is None and not (head._forward_hooks or head._forward_pre_hooks)
    float32 = hidden.dtype == head.weight.dtype == torch.float32
    if options_class is None or not plain or not float32 or torch.is_autocast_enabled(hidden.device.type):
        return logits_cross_entropy(head(hidden).float(), labels)
    if hidden.device.type == "cpu":
        options = options_class(chunking_method=None, batch_chunk_size=max(16, 2**22 // head.out_features))
    else:
        options = options_class()  # torch's per-device default
    rows = hidden.reshape(-1, hidden.shape[-1])
    return F.linear_cross_entropy(rows, head.weight, labels.reshape(-1), ignore_index=-100, options=options).float()


class LlamaGenPreTrainedModel(HubPushMixin, PreTrainedModel):
    config_class = LlamaGenConfig
    base_model_prefix = "llamagen"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _no_split_modules = ["LlamaGenBlock"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_attention_backend = True
    _keep_in_fp32_modules = ["rotary_emb"]

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)  # normal(0, initializer_range) for linear/embedding, ones for RMSNorm
        if module is getattr(self, "output", None):
            init.zeros_(module.weight)  # zero-initialised head: uniform logits at step 0
        elif isinstance(module, LlamaGenRotaryEmbedding2D):  # non-persistent: rebuilt after loading
            cos, sin = module.compute_tables()
            init.copy_(module.cos, cos)
            init.copy_(module.sin, sin)


class LlamaGenForConditionalGeneration(LlamaGenPreTrainedModel, GenerationMixin):
    r"""
    LlamaGen class-to-image GPT.

    ``forward(input_ids, class_labels, labels=None)``: ``input_ids`` (B, n) image tokens in raster order (n up to the
    grid's N; n = 0 or None gives the first token's distribution), ``class_labels`` (B,) in [0, num_classes]
    (num_classes is the null class). Returns ``logits`` (B, min(n + 1, N), vocab_size) where ``logits[:, i]`` predicts
    token i, and with ``labels`` (usually ``labels=input_ids``; -100 is ignored) the mean cross-entropy ``loss``.
    In training mode with ``labels`` (``skip_logits``, as Liger Kernel's models and transformers' ``Trainer`` name it)
    only the loss is computed, by ``head_cross_entropy``, and ``logits`` is None.
    With a transformers ``cache`` that already holds positions, ``input_ids`` continue the sequence (no class label).

    ``sample(class_labels, guidance_scale=...)`` generates token grids (B, H, W) with a static KV cache;
    ``generate(class_labels=..., guidance_scale=...)`` does the same through transformers' ``GenerationMixin`` and
    returns (B, 1 + N): the class label, then the N image tokens.
    """

    def __init__(self, config: LlamaGenConfig):
        super().__init__(config)
        self.cls_embedding = LlamaGenClassEmbedder(
            config.num_classes, config.hidden_size, config.class_dropout_prob
        )
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.tok_dropout = nn.Dropout(config.token_dropout_prob)
        self.layers = nn.ModuleList(LlamaGenBlock(config, i) for i in range(config.num_hidden_layers))
        self.norm = LlamaGenRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.output = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.rotary_emb = LlamaGenRotaryEmbedding2D(config)
        self.post_init()

    # ------------------------------------------------------------------ helpers
    def get_input_embeddings(self) -> nn.Embedding:
        return self.tok_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.tok_embeddings = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.output

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.output = value

    @property
    def grid_size(self) -> tuple[int, int]:
        return tuple(self.config.grid_size)

    @property
    def num_image_tokens(self) -> int:
        return self.config.num_image_tokens

    def set_sampling_defaults(
        self, guidance_scale: float | None = None, cfg_interval: int | None = None
    ) -> None:
        """Record the classifier-free guidance that ``sample``, ``generate`` and ``LlamaGenPipeline`` use when not
        given one: ``generation_config.guidance_scale`` and ``generation_config.cfg_interval`` (saved in
        ``generation_config.json`` by ``save_pretrained``). A training recipe records the scale its paper samples
        with (FVQ: 1.75 for GPT-L, 1.65 for GPT-XL). None leaves a value as it is."""
        config = self.generation_config
        # saved as a file that transformers loads back with our fields, not one it rebuilds from the model config
        config._from_model_config = False
        if guidance_scale is not None:
            config.guidance_scale = check_guidance_scale(guidance_scale)
        if cfg_interval is not None:
            config.cfg_interval = check_cfg_interval(cfg_interval)

    def check_class_labels(self, class_labels, allow_null: bool = True, batch_size: int | None = None):
        """Class labels as a LongTensor (B,), or a ValueError that says what is wrong."""
        if isinstance(class_labels, (list, tuple)) and len(class_labels) == 0:
            raise ValueError("class_labels is empty: pass at least one class label, e.g. class_labels=[0]")
        labels = torch.as_tensor(class_labels, device=self.device)
        if labels.numel() == 0:
            raise ValueError("class_labels is empty: pass at least one class label, e.g. class_labels=[0]")
        if labels.dtype.is_floating_point or labels.dtype == torch.bool:
            raise ValueError(f"class_labels must be integers, got dtype {labels.dtype}")
        labels = labels.long().reshape(-1) if labels.dim() == 0 else labels.long()
        if labels.dim() != 1:
            raise ValueError(
                f"class_labels must be a 1-D list or tensor of ints, got shape {tuple(labels.shape)}"
            )
        if batch_size is not None and labels.shape[0] != batch_size:
            raise ValueError(
                f"got {labels.shape[0]} class labels for a batch of {batch_size} token sequences"
            )
        high = self.config.num_classes + (1 if allow_null else 0)
        if labels.min() < 0 or labels.max() >= high:
            bad = labels[(labels < 0) | (labels >= high)].unique().tolist()
            null = f"; {self.config.num_classes} is the null (unconditional) class" if allow_null else ""
            raise ValueError(
                f"class labels {bad[:8]} are outside [0, {high}): this generator has num_classes="
                f"{self.config.num_classes}{null}"
            )
        return labels

    def check_input_ids(self, input_ids: torch.Tensor, past_length: int = 0) -> None:
        if input_ids.dtype.is_floating_point or input_ids.dtype == torch.bool:
            raise ValueError(f"input_ids must be integer token ids, got dtype {input_ids.dtype}")
        if input_ids.dim() != 2:
            raise ValueError(
                f"input_ids must be (batch, tokens), got shape {tuple(input_ids.shape)}; flatten token grids "
                "(B, H, W) with ids.flatten(1)"
            )
        if past_length + input_ids.shape[1] > self.num_image_tokens:
            held = f" after the {past_length} cached positions" if past_length else ""
            raise ValueError(
                f"input_ids has {input_ids.shape[1]} tokens{held} but the generator's grid {self.grid_size} holds "
                f"{self.num_image_tokens}"
            )
        if input_ids.numel() and (input_ids.min() < 0 or input_ids.max() >= self.config.vocab_size):
            raise ValueError(
                f"token ids must be in [0, {self.config.vocab_size}) (the generator's vocab_size), got values in "
                f"[{int(input_ids.min())}, {int(input_ids.max())}]; was the codes dataset made with a tokenizer of "
                "another codebook size?"
            )

    # ------------------------------------------------------------------ training / scoring / generate
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        class_labels: torch.LongTensor | None = None,
        labels: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        cache: Cache | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        skip_logits: bool | None = None,
    ) -> CausalLMOutputWithPast | tuple:
        r"""
        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, n)`): Image token ids in raster order. With an empty
                (or no) cache: the first n tokens of the image (the last of a full grid predicts nothing and is
                dropped). With a cache holding `p` positions: the tokens at sequence positions p.. (token p - 1 first).
            class_labels (`torch.LongTensor` of shape `(batch_size,)`): Classes in [0, num_classes] (num_classes =
                null class). Required unless the cache already holds the class position or `inputs_embeds` is given.
            labels (`torch.LongTensor` of shape `(batch_size, n)`, *optional*): Targets for `logits[:, :n]`; usually
                `labels=input_ids` (logits are already aligned: position i predicts token i). -100 is ignored.
            inputs_embeds (`torch.Tensor` of shape `(batch_size, T, hidden_size)`, *optional*): Embedded sequence
                positions instead of `class_labels` + `input_ids`: with an empty cache, position 0 is the class token.
            cache (`Cache`, *optional*): A transformers cache (e.g. `DynamicCache`) holding earlier positions;
                `use_cache=True` creates one. Returned in the output.
            output_attentions (`bool`, *optional*): Return per-layer attention weights (B, heads, T, L); computed with
                the eager attention for this call when another implementation is set (sdpa/flash return none).
            output_hidden_states (`bool`, *optional*): Return the input embeddings and each layer's output (the last
                after the final norm): num_hidden_layers + 1 tensors (B, T, hidden_size).
            logits_to_keep (`int` or `torch.Tensor`, *optional*): Compute logits for the last n positions only.
            skip_logits (`bool`, *optional*): Return only the loss (needs `labels`), computed without materialising
                the (B, n, vocab_size) logits; `logits` is None. Default: True in training mode with `labels`.

        Returns:
            [`CausalLMOutputWithPast`] (`loss`, `logits` (B, T, vocab_size) float32 (None with `skip_logits`), `cache`,
            `hidden_states`, `attentions`), or its tuple (None fields left out) with `return_dict=False`.
        """
        output_attentions = bool(
            output_attentions if output_attentions is not None else self.config.output_attentions
        )
        output_hidden_states = bool(
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        past = int(cache.get_seq_length()) if cache is not None else 0

        if inputs_embeds is not None:
            if input_ids is not None or class_labels is not None:
                raise ValueError("pass either inputs_embeds or input_ids / class_labels, not both")
            h = inputs_embeds  # (B, T, D)
            if past + h.shape[1] > self.num_image_tokens:
                raise ValueError(
                    f"inputs_embeds has {h.shape[1]} positions after {past} cached ones but the generator's grid "
                    f"{self.grid_size} has {self.num_image_tokens} (the class token and N - 1 image tokens)"
                )
        elif past == 0:
            if class_labels is None:
                raise ValueError(
                    "class_labels is required: (B,) ints in [0, num_classes], num_classes = null class"
                )
            if input_ids is None:
                input_ids = torch.zeros(len(class_labels), 0, dtype=torch.long, device=self.device)
            self.check_input_ids(input_ids)
            class_labels = self.check_class_labels(class_labels, batch_size=input_ids.shape[0])
            inputs = input_ids[:, : self.num_image_tokens - 1]  # the last token predicts nothing
            h = torch.cat([self.cls_embedding(class_labels), self.tok_embeddings(inputs)], dim=1)  # (B, T, D)
        else:
            if class_labels is not None:
                raise ValueError(
                    f"the cache already holds {past} positions, the class token included: pass only the next "
                    "input_ids (class_labels is for the first call)"
                )
            if input_ids is None:
                raise ValueError("input_ids is required to continue a cached sequence")
            self.check_input_ids(input_ids, past_length=past)
            h = self.tok_embeddings(input_ids)
        h = self.tok_dropout(h)

        positions = torch.arange(past, past + h.shape[1], device=h.device)
        position_embeddings = self.rotary_emb(positions)  # cos, sin (T, hd/2)
        implementation = "eager" if output_attentions else self.config._attn_implementation
        if output_attentions and self.config._attn_implementation != "eager":
            logger.warning_once(
                f"output_attentions=True: attention weights are computed with the eager attention for this call "
                f"({self.config._attn_implementation} returns none)"
            )
        mask = build_attention_mask(implementation, positions, past + h.shape[1], h.dtype)

        all_hidden = () if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for layer in self.layers:
            if output_hidden_states:
                all_hidden += (h,)
            h, weights = layer(h, position_embeddings, mask, cache=cache, output_attentions=output_attentions)
            if output_attentions:
                all_attentions += (weights,)
        h = self.norm(h)
        if output_hidden_states:
            all_hidden += (h,)
        if skip_logits is None:
            skip_logits = self.training and labels is not None
        if skip_logits and labels is None:
            raise ValueError("skip_logits=True returns only the loss: pass labels (usually labels=input_ids)")
        h = slice_logits_to_keep(h, logits_to_keep)
        logits = None if skip_logits else self.output(h).float()  # (B, T, V)

        loss = None
        if labels is not None:
            labels = labels.to(h.device)
            if labels.shape[0] != h.shape[0] or labels.shape[1] > h.shape[1]:
                raise ValueError(
                    f"labels {tuple(labels.shape)} do not fit logits {tuple(h.shape[:2])}; pass labels=input_ids"
                )
            if skip_logits:
                loss = head_cross_entropy(h[:, : labels.shape[1]], self.output, labels)
            else:
                loss = logits_cross_entropy(logits[:, : labels.shape[1]], labels)
        output = CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            cache=cache,
            hidden_states=all_hidden,
            attentions=all_attentions,
        )
        return output if return_dict else output.to_tuple()

    def prepare_inputs_for_generation(
        self,
        input_ids: torch.LongTensor,
        cache: Cache | None = None,
        classifier_free_guidance: bool = False,
        **kwargs,
    ) -> dict:
        """``generate``'s sequence (B, 1 + t) is [class label, image tokens...]: at the first call (empty cache) the
        class goes to ``class_labels`` and the image tokens to ``input_ids``; later calls feed the uncached tokens.
        With classifier-free guidance the batch is doubled, conditional rows first, then the null class."""
        for key in (
            "next_sequence_length",
            "is_first_iteration",
            "inputs_embeds",
            "attention_mask",
            "position_ids",
        ):
            value = kwargs.pop(key, None)
            if key == "inputs_embeds" and value is not None:
                raise ValueError(
                    "generate takes the class as input_ids[:, 0] (or class_labels=...), not inputs_embeds"
                )
        past = int(cache.get_seq_length()) if cache is not None else 0
        new = input_ids[:, past:]
        if past == 0:
            class_labels, tokens = new[:, 0], new[:, 1:]
        else:
            class_labels, tokens = None, new
        if classifier_free_guidance:
            tokens = torch.cat([tokens, tokens])
            if class_labels is not None:
                class_labels = torch.cat(
                    [class_labels, torch.full_like(class_labels, self.config.num_classes)]
                )
        inputs = {"input_ids": tokens, "class_labels": class_labels, "cache": cache}
        inputs.update(kwargs)
        return inputs

    @torch.no_grad()
    def generate(
        self,
        inputs: torch.LongTensor | None = None,
        generation_config=None,
        logits_processor: LogitsProcessorList | None = None,
        class_labels=None,
        guidance_scale: float | None = None,
        guidance_schedule: str = "constant",
        cfg_interval: int | None = None,
        **kwargs,
    ):
        r"""
        transformers' ``generate`` with the class as the prompt: ``generate(class_labels=[3, 7], guidance_scale=4.0,
        do_sample=True, top_k=100)`` returns (B, 1 + N) ids, the class label then the N image tokens in raster order
        (``out[:, 1:].view(B, H, W)`` is the token grid). The prompt may also be given as ``input_ids`` (B, 1 + n): the
        class label then n known image tokens to continue from.

        ``guidance_scale`` (default: the generation config's, else 1) runs classifier-free guidance as MusicGen does:
        the model sees a doubled batch (conditional rows first, then the null class) and
        ``ClassifierFreeGuidanceLogitsProcessor`` combines the halves (any finite scale; 0 = the unconditional model);
        ``guidance_schedule`` ramps it as in ``sample``; ``cfg_interval`` (default: the generation config's, else -1)
        stops guidance after image token ``cfg_interval + 1`` as in ``sample`` (token indices count the prompt's image
        tokens). ``max_new_tokens`` defaults to the rest of the grid;
        with ``do_sample=True`` and no ``top_k``, no top-k filter is applied (transformers would default to 50).
        Same tokens as ``sample`` for greedy decoding and for seeded sampling (``torch.manual_seed``).
        """
        if class_labels is not None:
            if inputs is not None or kwargs.get("input_ids") is not None:
                raise ValueError("pass either class_labels or input_ids (class label first), not both")
            inputs = self.check_class_labels(class_labels)[:, None]
        if inputs is None:
            inputs = kwargs.pop("input_ids", None)
        if inputs is None:
            raise ValueError(
                "generate needs the class as the prompt: generate(class_labels=[...]) or input_ids=labels[:, None]"
            )
        inputs = torch.as_tensor(inputs, device=self.device)
        if inputs.dim() != 2 or inputs.shape[1] < 1:
            raise ValueError(
                f"input_ids must be (batch, 1 + n): the class label, then n image tokens; got {tuple(inputs.shape)}"
            )
        self.check_class_labels(inputs[:, 0])
        self.check_input_ids(inputs[:, 1:])
        config = generation_config if generation_config is not None else self.generation_config
        if guidance_scale is None:
            guidance_scale = getattr(config, "guidance_scale", None)
            guidance_scale = 1.0 if guidance_scale is None else guidance_scale
        guidance_scale = check_guidance_scale(guidance_scale)
        if cfg_interval is None:
            cfg_interval = getattr(config, "cfg_interval", None)
            cfg_interval = -1 if cfg_interval is None else cfg_interval
        cfg_interval = check_cfg_interval(cfg_interval)
        remaining = self.num_image_tokens - (inputs.shape[1] - 1)
        if kwargs.get("max_new_tokens") is None and kwargs.get("max_length") is None:
            if config.max_new_tokens is None or config.max_new_tokens > remaining:
                kwargs["max_new_tokens"] = remaining
        if (
            kwargs.get("max_new_tokens", 0) > remaining
            or kwargs.get("max_length", 0) > 1 + self.num_image_tokens
        ):
            raise ValueError(
                f"the grid {self.grid_size} holds {self.num_image_tokens} tokens: after a prompt of "
                f"{inputs.shape[1] - 1} image tokens at most max_new_tokens={remaining}"
            )
        if kwargs.get("do_sample", config.do_sample) and kwargs.get("top_k") is None and config.top_k is None:
            kwargs["top_k"] = 0  # sample from the whole (guided) distribution unless asked, as sample() does
        processors = LogitsProcessorList(logits_processor or [])
        if guidance_scale != 1.0 or guidance_schedule != "constant":
            processors.insert(
                0,
                LlamaGenGuidanceLogitsProcessor(
                    guidance_scale, self.num_image_tokens, guidance_schedule, cfg_interval
                ),
            )
            kwargs["classifier_free_guidance"] = True
        # the guidance is ours (above): transformers must not also run its unbatched CFG, neither from the given
        # config nor from the model's own, which it merges in
        if generation_config is not None:
            generation_config = _without_guidance(generation_config)
        own = self.generation_config
        self.generation_config = _without_guidance(own)
        try:
            return super().generate(
                inputs, generation_config=generation_config, logits_processor=processors, **kwargs
            )
        finally:
            self.generation_config = own

    # ------------------------------------------------------------------ sampling with a static KV cache
    def allocate_kv_cache(
        self, batch_size: int, dtype: torch.dtype | None = None
    ) -> list[tuple[torch.Tensor, ...]]:
        """Per layer (k, v), each (batch, heads, N, head_dim): positions 0..N-1 (class token + N-1 tokens)."""
        dtype = dtype or self.tok_embeddings.weight.dtype
        shape = (batch_size, self.config.num_attention_heads, self.num_image_tokens, self.config.head_dim)
        return [
            (
                torch.zeros(shape, dtype=dtype, device=self.device),
                torch.zeros(shape, dtype=dtype, device=self.device),
            )
            for _ in self.layers
        ]

    def forward_cached(
        self,
        hidden: torch.Tensor,  # (B, T, D) embedded inputs at positions cache_position
        cache_position: torch.LongTensor,  # (T,)
        kv_cache: list[tuple[torch.Tensor, torch.Tensor]],
    ) -> torch.Tensor:
        """Logits (B, V) of the last input position, writing its keys/values into ``kv_cache``. Static shapes."""
        position_embeddings = self.rotary_emb(cache_position)
        mask = build_attention_mask(
            self.config._attn_implementation,
            cache_position,
            kv_cache[0][0].shape[2],
            hidden.dtype,
            static_cache=True,
        )
        for layer, kv in zip(self.layers, kv_cache):
            hidden, _ = layer(hidden, position_embeddings, mask, kv_cache=kv, cache_position=cache_position)
        return self.output(self.norm(hidden[:, -1])).float()

    def decode_step(
        self, tokens: torch.LongTensor, cache_position: torch.LongTensor, kv_cache
    ) -> torch.Tensor:
        """One decode step: tokens (B, 1) at ``cache_position`` (1,) -> next-token logits (B, V)."""
        return self.forward_cached(self.tok_embeddings(tokens), cache_position, kv_cache)

    @torch.no_grad()
    def sample(
        self,
        class_labels,
        guidance_scale: float | None = None,
        guidance_schedule: str = "constant",
        cfg_interval: int | None = None,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float = 1.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        use_cache: bool = True,
        compile: bool = False,
        callback_on_step_end: Callable[[int, dict[str, torch.Tensor]], dict | None] | None = None,
        progress_bar: bool = True,
    ) -> torch.LongTensor:
        """Generate token grids (B, H, W) for ``class_labels`` (B,) in [0, num_classes).

        Classifier-free guidance runs for any ``guidance_scale`` other than 1: the batch is doubled (conditional rows
        first, then the null class), guided logits = uncond + (cond - uncond) * scale, and the sampled token is fed to
        both halves. So 0 samples the unconditional model, > 1 strengthens the class, < 0 pushes away from it;
        NaN / inf are errors; None (the default) takes the model's ``generation_config.guidance_scale`` (a trained
        recipe records its scale there), else 1. ``guidance_schedule`` "linear"/"cosine" ramps the scale from 1 at the
        first token to ``guidance_scale`` at the last. ``cfg_interval`` is LlamaGen's ``--cfg-interval``: -1 guides
        every token; k >= 0 guides image tokens 0 .. k + 1 (the first token and the decode steps i <= k, exactly as
        LlamaGen's ``generate``) and draws the later ones from the conditional logits alone (the null half of the
        batch is then dropped: half the compute); None takes ``generation_config.cfg_interval``, else -1.
        ``generator``: one ``torch.Generator``, or a list with one per label (each
        row then depends on its own generator only); None uses the global RNG (as ``generate`` does).
        ``use_cache=False`` recomputes the whole prefix each step (the slow reference). ``compile=True`` compiles the
        decode step (static shapes). ``callback_on_step_end(step, {"tokens": (B, N), "logits": (B, V)})`` runs after
        token ``step`` is drawn (``tokens[:, :step + 1]`` are filled, ``logits`` are the guided logits it was drawn
        from); a returned ``{"tokens": ...}`` replaces the tokens (its ``tokens[:, step]`` is what is fed next) and a
        returned ``{"guidance_scale": s}`` sets the scale of the next guided tokens (CFG must be on from the start).
        ``progress_bar=False`` hides the tqdm bar (``transformers.utils.logging.disable_progress_bar()`` too).
        """
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        if not 0.0 < top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        if top_k is not None and top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 or None = off), got {top_k}")
        labels = self.check_class_labels(class_labels, allow_null=False)
        batch, num_tokens = labels.shape[0], self.num_image_tokens
        if isinstance(generator, (list, tuple)) and len(generator) != batch:
            raise ValueError(
                f"got {len(generator)} generators for {batch} images: pass one torch.Generator, or one per image"
            )
        if guidance_scale is None:
            guidance_scale = getattr(self.generation_config, "guidance_scale", None)
            guidance_scale = 1.0 if guidance_scale is None else guidance_scale
        if cfg_interval is None:
            cfg_interval = getattr(self.generation_config, "cfg_interval", None)
            cfg_interval = -1 if cfg_interval is None else cfg_interval
        scales = guidance_scales(guidance_scale, num_tokens, guidance_schedule)
        cfg = guidance_scale != 1.0 or guidance_schedule != "constant"
        guided_tokens = guided_token_count(cfg_interval, num_tokens) if cfg else 0
        guiding = cfg  # CFG on for this token; off for good past cfg_interval
        if cfg:
            labels = torch.cat(
                [labels, torch.full_like(labels, self.config.num_classes)]
            )  # cond first, then null

        was_training = self.training
        self.eval()
        tokens = torch.empty(batch, num_tokens, dtype=torch.long, device=self.device)
        if use_cache:
            kv_cache = self.allocate_kv_cache(labels.shape[0])
            step = (
                torch.compile(self.decode_step, fullgraph=True, dynamic=False)
                if compile
                else self.decode_step
            )
            logits = self.forward_cached(
                self.cls_embedding(labels), torch.zeros(1, dtype=torch.long, device=self.device), kv_cache
            )
        else:
            logits = self(None, labels).logits[:, -1]
        progress = logging.tqdm(total=num_tokens, desc="tokens", disable=not progress_bar, leave=False)
        try:
            for i in range(num_tokens):
                if guiding and i == guided_tokens:  # past cfg_interval: the conditional half alone
                    guiding = False
                    labels, logits = labels[:batch], logits[:batch]
                    if use_cache:  # views of the conditional rows: the cache keeps being written in place
                        kv_cache = [(k[:batch], v[:batch]) for k, v in kv_cache]
                if guiding:
                    cond, uncond = logits.chunk(2)
                    logits = uncond + (cond - uncond) * scales[i]
                next_token = sample_from_logits(logits, temperature, top_k, top_p, generator)  # (B, 1)
                tokens[:, i] = next_token[:, 0]
                if callback_on_step_end is not None:
                    returned = callback_on_step_end(i, {"tokens": tokens, "logits": logits})
                    if returned and returned.get("tokens") is not None:
                        tokens.copy_(returned["tokens"].reshape(tokens.shape))
                        next_token = tokens[:, i : i + 1]
                    if returned and returned.get("guidance_scale") is not None:
                        new_scale = check_guidance_scale(returned["guidance_scale"])
                        if not cfg and new_scale != 1.0:
                            raise ValueError(
                                "guidance_scale can change during sampling only when it started other than 1 "
                                "(the unconditional half of the batch is set up at the start)"
                            )
                        scales[i + 1 :] = guidance_scales(new_scale, num_tokens, guidance_schedule)[i + 1 :]
                progress.update()
                if i == num_tokens - 1:
                    break
                if use_cache:
                    fed = torch.cat([next_token, next_token]) if guiding else next_token
                    position = torch.full((1,), i + 1, dtype=torch.long, device=self.device)
                    logits = step(fed, position, kv_cache)
                else:
                    prefix = tokens[:, : i + 1]
                    logits = self(torch.cat([prefix, prefix]) if guiding else prefix, labels).logits[:, -1]
        finally:
            progress.close()
            self.train(was_training)
        return tokens.view(batch, *self.grid_size)
