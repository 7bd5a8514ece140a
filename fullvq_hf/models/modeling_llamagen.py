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
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import CausalLMOutput

from .configuration_llamagen import LlamaGenConfig
from .hub_mixin import HubPushMixin

GUIDANCE_SCHEDULES = ("constant", "linear", "cosine")


# --------------------------------------------------------------------------------------------------- 2D RoPE
def rope_2d(
    grid_size: tuple[int, int], head_dim: int, theta: float = 10000.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables of LlamaGen's 2D RoPE, each (1 + H*W, head_dim // 2), row 0 (the class token) all zero.

    The first head_dim/4 rotation pairs turn with the token's row, the last head_dim/4 with its column; positions
    run row-major over the grid.
    """
    height, width = grid_size
    quarter = head_dim // 4
    freqs = 1.0 / (theta ** (torch.arange(0, 2 * quarter, 2, dtype=torch.float64) / (2 * quarter)))  # (hd/4,)
    rows = torch.arange(height, dtype=torch.float64)[:, None, None] * freqs  # (H, 1, hd/4)
    cols = torch.arange(width, dtype=torch.float64)[None, :, None] * freqs  # (1, W, hd/4)
    angles = torch.cat([rows.expand(height, width, quarter), cols.expand(height, width, quarter)], dim=-1)
    angles = angles.reshape(height * width, 2 * quarter).float()  # (H*W, hd/2)
    zero = torch.zeros(1, 2 * quarter)
    return torch.cat([zero, angles.cos()]), torch.cat([zero, angles.sin()])


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs (x[2i], x[2i+1]) of x (B, heads, T, hd) by cos/sin (T, hd/2), in float32."""
    pairs = x.float().unflatten(-1, (-1, 2))  # (B, heads, T, hd/2, 2)
    x0, x1 = pairs.unbind(-1)
    out = torch.stack([x0 * cos - x1 * sin, x1 * cos + x0 * sin], dim=-1)
    return out.flatten(-2).type_as(x)


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
    def __init__(self, config: LlamaGenConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        self.attention_dropout = config.attention_dropout
        self.wqkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=False)
        self.wo = nn.Linear(config.hidden_size, config.hidden_size, bias=False)
        self.resid_dropout = nn.Dropout(config.resid_dropout_prob)

    def forward(
        self,
        x: torch.Tensor,  # (B, T, D)
        cos: torch.Tensor,  # (T, hd/2)
        sin: torch.Tensor,
        kv_cache: tuple[torch.Tensor, torch.Tensor] | None = None,  # 2 x (B, heads, L, hd), written in place
        cache_position: torch.LongTensor | None = None,  # (T,) positions of x in the cache
        attn_mask: torch.Tensor | None = None,  # (T, L) bool, True = attend
    ) -> torch.Tensor:
        batch, length, _ = x.shape
        q, k, v = self.wqkv(x).view(batch, length, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)  # (B, heads, T, hd)
        if kv_cache is None:
            dropout = self.attention_dropout if self.training else 0.0
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout)
        else:
            k_cache, v_cache = kv_cache
            k_cache.index_copy_(2, cache_position, k.to(k_cache.dtype))
            v_cache.index_copy_(2, cache_position, v.to(v_cache.dtype))
            out = F.scaled_dot_product_attention(q, k_cache, v_cache, attn_mask=attn_mask)
        out = out.transpose(1, 2).reshape(batch, length, -1)  # (B, T, D)
        return self.resid_dropout(self.wo(out))


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
    def __init__(self, config: LlamaGenConfig):
        super().__init__()
        self.attention_norm = LlamaGenRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.attention = LlamaGenAttention(config)
        self.ffn_norm = LlamaGenRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.feed_forward = LlamaGenFeedForward(config)

    def forward(self, x, cos, sin, kv_cache=None, cache_position=None, attn_mask=None) -> torch.Tensor:
        x = x + self.attention(self.attention_norm(x), cos, sin, kv_cache, cache_position, attn_mask)
        return x + self.feed_forward(self.ffn_norm(x))


# --------------------------------------------------------------------------------------------------- sampling
def guidance_scales(scale: float, num_tokens: int, schedule: str = "constant") -> list[float]:
    """Per-token CFG scale: constant, or rising from 1 to ``scale`` linearly or along a half cosine."""
    if schedule not in GUIDANCE_SCHEDULES:
        raise ValueError(f"guidance_schedule must be one of {GUIDANCE_SCHEDULES}, got {schedule!r}")
    if schedule == "constant" or num_tokens == 1:
        return [float(scale)] * num_tokens
    ramp = [i / (num_tokens - 1) for i in range(num_tokens)]
    if schedule == "cosine":
        ramp = [(1 - math.cos(math.pi * r)) / 2 for r in ramp]
    return [1.0 + (scale - 1.0) * r for r in ramp]


def sample_from_logits(
    logits: torch.Tensor,  # (B, V)
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.LongTensor:
    """One token per row (B, 1): temperature, then top-k, then nucleus (top-p) filtering, then a multinomial draw.

    ``temperature=0`` is greedy. Top-p keeps the smallest prefix of the sorted distribution whose mass reaches
    ``top_p`` (the token that crosses the threshold is kept), as LlamaGen does.
    """
    if temperature == 0:
        return logits.argmax(-1, keepdim=True)
    logits = logits.float() / temperature
    vocab = logits.shape[-1]
    index = None
    if top_k and top_k < vocab:
        logits, index = logits.topk(top_k, dim=-1)  # sorted, descending
    elif top_p < 1.0:
        logits, index = logits.sort(dim=-1, descending=True)
    probs = logits.softmax(-1)
    if top_p < 1.0:
        mass_before = probs.cumsum(-1) - probs
        probs = probs.masked_fill(mass_before > top_p, 0.0)
    choice = torch.multinomial(probs, 1, generator=generator)  # (B, 1); multinomial renormalises
    return choice if index is None else index.gather(-1, choice)


# --------------------------------------------------------------------------------------------------- models
class LlamaGenPreTrainedModel(HubPushMixin, PreTrainedModel):
    config_class = LlamaGenConfig
    base_model_prefix = "llamagen"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _no_split_modules = ["LlamaGenBlock"]
    _supports_sdpa = True

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)  # normal(0, initializer_range) for linear/embedding, ones for RMSNorm
        if module is getattr(self, "output", None):
            init.zeros_(module.weight)  # zero-initialised head: uniform logits at step 0


class LlamaGenForConditionalGeneration(LlamaGenPreTrainedModel):
    r"""
    LlamaGen class-to-image GPT.

    ``forward(input_ids, class_labels, labels=None)``: ``input_ids`` (B, n) image tokens in raster order (n up to the
    grid's N; n = 0 or None gives the first token's distribution), ``class_labels`` (B,) in [0, num_classes]
    (num_classes is the null class). Returns ``logits`` (B, min(n + 1, N), vocab_size) where ``logits[:, i]`` predicts
    token i, and with ``labels`` (usually ``labels=input_ids``; -100 is ignored) the mean cross-entropy ``loss``.

    ``sample(class_labels, guidance_scale=...)`` generates token grids (B, H, W) with a static KV cache.
    """

    def __init__(self, config: LlamaGenConfig):
        super().__init__(config)
        self.cls_embedding = LlamaGenClassEmbedder(
            config.num_classes, config.hidden_size, config.class_dropout_prob
        )
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.tok_dropout = nn.Dropout(config.token_dropout_prob)
        self.layers = nn.ModuleList(LlamaGenBlock(config) for _ in range(config.num_hidden_layers))
        self.norm = LlamaGenRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.output = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self._rope_cache: dict = {}
        self.post_init()

    # ------------------------------------------------------------------ helpers
    def get_input_embeddings(self) -> nn.Embedding:
        return self.tok_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.tok_embeddings = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.output

    @property
    def grid_size(self) -> tuple[int, int]:
        return tuple(self.config.grid_size)

    @property
    def num_image_tokens(self) -> int:
        return self.config.num_image_tokens

    def _rope(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin (1 + N, hd/2) float32 on ``device``, built once per device (not a buffer: never saved)."""
        key = str(device)
        if key not in self._rope_cache:
            cos, sin = rope_2d(self.grid_size, self.config.head_dim, self.config.rope_theta)
            self._rope_cache[key] = (cos.to(device), sin.to(device))
        return self._rope_cache[key]

    def check_class_labels(self, class_labels, allow_null: bool = True, batch_size: int | None = None):
        """Class labels as a LongTensor (B,), or a ValueError that says what is wrong."""
        labels = torch.as_tensor(class_labels, device=self.device)
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
        if labels.numel() and (labels.min() < 0 or labels.max() >= high):
            bad = labels[(labels < 0) | (labels >= high)].unique().tolist()
            null = f"; {self.config.num_classes} is the null (unconditional) class" if allow_null else ""
            raise ValueError(
                f"class labels {bad[:8]} are outside [0, {high}): this generator has num_classes="
                f"{self.config.num_classes}{null}"
            )
        return labels

    def check_input_ids(self, input_ids: torch.Tensor) -> None:
        if input_ids.dtype.is_floating_point or input_ids.dtype == torch.bool:
            raise ValueError(f"input_ids must be integer token ids, got dtype {input_ids.dtype}")
        if input_ids.dim() != 2:
            raise ValueError(
                f"input_ids must be (batch, tokens), got shape {tuple(input_ids.shape)}; flatten token grids "
                "(B, H, W) with ids.flatten(1)"
            )
        if input_ids.shape[1] > self.num_image_tokens:
            raise ValueError(
                f"input_ids has {input_ids.shape[1]} tokens but the generator's grid {self.grid_size} holds "
                f"{self.num_image_tokens}"
            )
        if input_ids.numel() and (input_ids.min() < 0 or input_ids.max() >= self.config.vocab_size):
            raise ValueError(
                f"token ids must be in [0, {self.config.vocab_size}) (the generator's vocab_size), got values in "
                f"[{int(input_ids.min())}, {int(input_ids.max())}]; was the codes dataset made with a tokenizer of "
                "another codebook size?"
            )

    # ------------------------------------------------------------------ training / scoring
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        class_labels: torch.LongTensor | None = None,
        labels: torch.LongTensor | None = None,
        return_dict: bool = True,
        **kwargs,
    ) -> CausalLMOutput | tuple:
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
        h = self.tok_dropout(h)
        cos, sin = self._rope(h.device)
        cos, sin = cos[: h.shape[1]], sin[: h.shape[1]]
        for layer in self.layers:
            h = layer(h, cos, sin)
        logits = self.output(self.norm(h)).float()  # (B, T, V)
        loss = None
        if labels is not None:
            labels = labels.to(logits.device)
            if labels.shape[0] != logits.shape[0] or labels.shape[1] > logits.shape[1]:
                raise ValueError(
                    f"labels {tuple(labels.shape)} do not fit logits {tuple(logits.shape[:2])}; pass labels=input_ids"
                )
            scored = logits[:, : labels.shape[1]]
            loss = F.cross_entropy(
                scored.reshape(-1, scored.shape[-1]), labels.reshape(-1), ignore_index=-100
            )
        if not return_dict:
            return (loss, logits) if loss is not None else (logits,)
        return CausalLMOutput(loss=loss, logits=logits)

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
        cos, sin = self._rope(hidden.device)
        cos, sin = cos[cache_position], sin[cache_position]
        slots = torch.arange(kv_cache[0][0].shape[2], device=hidden.device)
        attn_mask = slots[None, :] <= cache_position[:, None]  # (T, L)
        for layer, kv in zip(self.layers, kv_cache):
            hidden = layer(hidden, cos, sin, kv, cache_position, attn_mask)
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
        guidance_scale: float = 1.0,
        guidance_schedule: str = "constant",
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float = 1.0,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
        compile: bool = False,
        callback: Callable[[int, int], None] | None = None,
    ) -> torch.LongTensor:
        """Generate token grids (B, H, W) for ``class_labels`` (B,) in [0, num_classes).

        Classifier-free guidance runs when ``guidance_scale > 1``: the batch is doubled (conditional rows first, then
        the null class), guided logits = uncond + (cond - uncond) * scale, and the sampled token is fed to both halves.
        ``guidance_schedule`` "linear"/"cosine" ramps the scale from 1 at the first token to ``guidance_scale`` at
        the last. ``use_cache=False`` recomputes the whole prefix each step (the slow reference). ``compile=True``
        compiles the decode step (static shapes). ``callback(step, num_steps)`` runs after each token.
        """
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        if not 0.0 < top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        if top_k is not None and top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 or None = off), got {top_k}")
        labels = self.check_class_labels(class_labels, allow_null=False)
        batch, num_tokens = labels.shape[0], self.num_image_tokens
        scales = guidance_scales(guidance_scale, num_tokens, guidance_schedule)
        cfg = guidance_scale > 1.0
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
        try:
            for i in range(num_tokens):
                if cfg:
                    cond, uncond = logits.chunk(2)
                    logits = uncond + (cond - uncond) * scales[i]
                next_token = sample_from_logits(logits, temperature, top_k, top_p, generator)  # (B, 1)
                tokens[:, i] = next_token[:, 0]
                if callback is not None:
                    callback(i, num_tokens)
                if i == num_tokens - 1:
                    break
                if use_cache:
                    fed = torch.cat([next_token, next_token]) if cfg else next_token
                    position = torch.full((1,), i + 1, dtype=torch.long, device=self.device)
                    logits = step(fed, position, kv_cache)
                else:
                    prefix = tokens[:, : i + 1]
                    logits = self(torch.cat([prefix, prefix]) if cfg else prefix, labels).logits[:, -1]
        finally:
            self.train(was_training)
        return tokens.view(batch, *self.grid_size)
