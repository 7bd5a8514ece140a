"""``LlamaGenConfig``: the configuration of LlamaGen's class-to-image GPT (a transformers ``PretrainedConfig``).

Presets follow LlamaGen's table (arXiv 2406.06525):

| preset  | layers | heads | hidden | params |
|---------|--------|-------|--------|--------|
| GPT-B   | 12     | 12    | 768    | 111M   |
| GPT-L   | 24     | 16    | 1024   | 343M   |
| GPT-XL  | 36     | 20    | 1280   | 775M   |
| GPT-XXL | 48     | 24    | 1536   | 1.4B   |
| GPT-3B  | 24     | 32    | 3200   | 3.1B   |

``LlamaGenConfig.from_preset("GPT-B", vocab_size=16384, grid_size=16)`` builds one; any field can be overridden.
"""

from __future__ import annotations

from transformers import PretrainedConfig

# name -> (num_hidden_layers, num_attention_heads, hidden_size)
LLAMAGEN_PRESETS: dict[str, tuple[int, int, int]] = {
    "GPT-B": (12, 12, 768),
    "GPT-L": (24, 16, 1024),
    "GPT-XL": (36, 20, 1280),
    "GPT-XXL": (48, 24, 1536),
    "GPT-3B": (24, 32, 3200),
}


def swiglu_hidden_size(hidden_size: int, multiple_of: int = 256) -> int:
    """LlamaGen's SwiGLU width: 2/3 of 4 x hidden, rounded up to a multiple of ``multiple_of``."""
    width = int(2 * 4 * hidden_size / 3)
    return -(-width // multiple_of) * multiple_of


class LlamaGenConfig(PretrainedConfig):
    r"""
    Configuration of [`LlamaGenForConditionalGeneration`].

    Args:
        vocab_size (`int`, defaults to 16384): Number of image token ids (the tokenizer's `codebook_size`).
        hidden_size (`int`, defaults to 768): Width of the residual stream.
        num_hidden_layers (`int`, defaults to 12): Number of transformer blocks.
        num_attention_heads (`int`, defaults to 12): Attention heads (`hidden_size` must divide by it, and the head
            size by 4, because 2D RoPE rotates row and column halves in pairs).
        intermediate_size (`int`, *optional*): SwiGLU width; defaults to LlamaGen's rule
            (`swiglu_hidden_size(hidden_size)`).
        rms_norm_eps (`float`, defaults to 1e-5): RMSNorm epsilon.
        initializer_range (`float`, defaults to 0.02): Std of the normal init of linear and embedding weights.
        rope_theta (`float`, defaults to 10000.0): RoPE base.
        num_classes (`int`, defaults to 1000): Number of class labels; row `num_classes` of the class embedding is
            the null class used for classifier-free guidance.
        class_dropout_prob (`float`, defaults to 0.1): Probability that a training label is replaced by the null
            class (label dropout for CFG).
        token_dropout_prob (`float`, defaults to 0.1): Dropout on the input embeddings (LlamaGen's `token_dropout_p`).
        resid_dropout_prob (`float`, defaults to 0.1): Dropout after the attention output projection.
        ffn_dropout_prob (`float`, defaults to 0.1): Dropout after the SwiGLU output projection.
        attention_dropout (`float`, defaults to 0.0): Dropout on attention weights.
        grid_size (`int` or `[int, int]`, defaults to 16): Token grid (height, width) of one image: 16 at 256 px with
            a downsample-16 tokenizer, 24 at 384 px, 8 for the Fashion-MNIST demo.
    """

    model_type = "llamagen"

    def __init__(
        self,
        vocab_size: int = 16384,
        hidden_size: int = 768,
        num_hidden_layers: int = 12,
        num_attention_heads: int = 12,
        intermediate_size: int | None = None,
        rms_norm_eps: float = 1e-5,
        initializer_range: float = 0.02,
        rope_theta: float = 10000.0,
        num_classes: int = 1000,
        class_dropout_prob: float = 0.1,
        token_dropout_prob: float = 0.1,
        resid_dropout_prob: float = 0.1,
        ffn_dropout_prob: float = 0.1,
        attention_dropout: float = 0.0,
        grid_size: int | list[int] | tuple[int, int] = 16,
        **kwargs,
    ):
        grid = [grid_size, grid_size] if isinstance(grid_size, int) else [int(g) for g in grid_size]
        if len(grid) != 2 or min(grid) < 1:
            raise ValueError(f"grid_size must be a positive int or [height, width], got {grid_size!r}")
        if hidden_size % num_attention_heads:
            raise ValueError(
                f"hidden_size ({hidden_size}) must be divisible by num_attention_heads ({num_attention_heads})"
            )
        if (hidden_size // num_attention_heads) % 4:
            raise ValueError(
                f"the head size hidden_size / num_attention_heads = {hidden_size // num_attention_heads} must be "
                "divisible by 4 (2D RoPE rotates pairs in a row half and a column half); change num_attention_heads"
            )
        for name, p in [
            ("class_dropout_prob", class_dropout_prob),
            ("token_dropout_prob", token_dropout_prob),
            ("resid_dropout_prob", resid_dropout_prob),
            ("ffn_dropout_prob", ffn_dropout_prob),
            ("attention_dropout", attention_dropout),
        ]:
            if not 0.0 <= p < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {p}")
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size or swiglu_hidden_size(hidden_size)
        self.rms_norm_eps = rms_norm_eps
        self.initializer_range = initializer_range
        self.rope_theta = rope_theta
        self.num_classes = num_classes
        self.class_dropout_prob = class_dropout_prob
        self.token_dropout_prob = token_dropout_prob
        self.resid_dropout_prob = resid_dropout_prob
        self.ffn_dropout_prob = ffn_dropout_prob
        self.attention_dropout = attention_dropout
        self.grid_size = grid
        # one class token + every image token but the last
        self.max_position_embeddings = grid[0] * grid[1]
        kwargs.setdefault("tie_word_embeddings", False)
        super().__init__(**kwargs)

    @property
    def num_image_tokens(self) -> int:
        """Tokens per image: grid height x grid width."""
        return self.grid_size[0] * self.grid_size[1]

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_preset(cls, name: str, **kwargs) -> LlamaGenConfig:
        """A LlamaGen preset (``GPT-B``, ``GPT-L``, ``GPT-XL``, ``GPT-XXL``, ``GPT-3B``) with any field overridden."""
        key = name if name in LLAMAGEN_PRESETS else f"GPT-{name}"
        if key not in LLAMAGEN_PRESETS:
            raise ValueError(f"unknown LlamaGen preset {name!r}; choose one of {sorted(LLAMAGEN_PRESETS)}")
        layers, heads, hidden = LLAMAGEN_PRESETS[key]
        fields = dict(num_hidden_layers=layers, num_attention_heads=heads, hidden_size=hidden)
        fields.update(kwargs)
        return cls(**fields)
