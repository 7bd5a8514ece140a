"""``LlamaGenPipeline``: class labels -> token grids (LlamaGen GPT) -> images (an FVQ / VQGAN-LC tokenizer).

    pipe = LlamaGenPipeline(transformer=generator, vqvae=tokenizer)
    images = pipe(class_labels=[0, 1, 2], guidance_scale=4.0, generator=torch.Generator().manual_seed(0)).images

Without ``guidance_scale`` / ``cfg_interval`` the call takes the generator's ``generation_config`` values (a trained
recipe records its sampling scale there, e.g. 1.75 for FVQ's GPT-L), else 4.0 / -1.

The pipeline only composes the two models: sampling lives in ``LlamaGenForConditionalGeneration.sample`` and
decoding in the tokenizer's ``decode`` (token ids are looked up in its codebook, as diffusers' ``VQModel`` does with
``force_not_quantize=True``). ``save_pretrained`` writes ``model_index.json`` with one folder per component;
``LlamaGenPipeline.from_pretrained(dir_or_repo)`` loads it back, from a folder or the Hub
(``DiffusionPipeline.from_pretrained`` only resolves pipelines that live inside diffusers).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback

from ..models.hub_mixin import HubPushMixin
from ..models.modeling_fvq import FVQModel
from ..models.modeling_llamagen import (
    LlamaGenForConditionalGeneration,
    check_cfg_interval,
    check_guidance_scale,
)
from ..models.modeling_vqgan_lc import VQGANLCModel

OUTPUT_TYPES = ("pil", "np", "pt", "latent")
DEFAULT_GUIDANCE_SCALE = 4.0  # LlamaGen's demo scale, for generators whose generation_config records none


class LlamaGenPipeline(HubPushMixin, DiffusionPipeline):
    r"""
    Class-conditional image generation with a LlamaGen GPT over the tokens of a VQ tokenizer.

    Parameters:
        transformer ([`LlamaGenForConditionalGeneration`]): The autoregressive prior over token ids.
        vqvae ([`FVQModel`] or [`VQGANLCModel`]): The tokenizer whose codebook the transformer's vocabulary indexes.
            Its `codebook_size` must equal the transformer's `vocab_size`, and its nominal token grid
            (`sample_size / downsample_factor`) the transformer's `grid_size`.
    """

    model_cpu_offload_seq = "transformer->vqvae"
    _callback_tensor_inputs = ["latents", "logits"]

    def __init__(self, transformer: LlamaGenForConditionalGeneration, vqvae: FVQModel | VQGANLCModel):
        super().__init__()
        check_compatible(transformer, vqvae)
        self.register_modules(transformer=transformer, vqvae=vqvae)

    # ------------------------------------------------------------------ loading and saving
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs):
        """Load from a folder written by ``save_pretrained`` or a Hub repo id (``revision``, ``cache_dir``,
        ``token``, ``local_files_only``, ``force_download`` apply to the download; other kwargs go to diffusers).

        Hub repos are fetched with ``snapshot_download`` first (config, safetensors and card files only): diffusers'
        own Hub path looks third-party components up as remote code and refuses them.
        """
        if not os.path.isdir(pretrained_model_name_or_path):
            from huggingface_hub import snapshot_download

            download_keys = (
                "revision",
                "cache_dir",
                "token",
                "local_files_only",
                "force_download",
                "proxies",
            )
            download = {k: kwargs.pop(k) for k in download_keys if k in kwargs}
            pretrained_model_name_or_path = snapshot_download(
                str(pretrained_model_name_or_path),
                allow_patterns=["*.json", "*.safetensors", "*.md"],
                **download,
            )
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) of generated images: the token grid times the tokenizer's downsampling factor."""
        f = self.vqvae.downsample_factor
        height, width = self.transformer.config.grid_size
        return height * f, width * f

    @property
    def guidance_scale(self) -> float:
        """The classifier-free guidance scale of the running (or last) call; a step-end callback may change it."""
        return self._guidance_scale

    @property
    def num_timesteps(self) -> int:
        """Decoding steps of the last call: one per image token (diffusers pipelines report their step count here)."""
        return self._num_timesteps

    def check_inputs(
        self,
        output_type: str,
        num_images_per_label: int,
        guidance_scale: float,
        callback_on_step_end_tensor_inputs: list[str] | None,
        cfg_interval: int = -1,
    ) -> None:
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")
        if num_images_per_label < 1:
            raise ValueError(f"num_images_per_label must be >= 1, got {num_images_per_label}")
        check_guidance_scale(guidance_scale)
        check_cfg_interval(cfg_interval)
        unknown = [
            k for k in callback_on_step_end_tensor_inputs or [] if k not in self._callback_tensor_inputs
        ]
        if unknown:
            raise ValueError(
                f"callback_on_step_end_tensor_inputs {unknown} are not available: choose from "
                f"{self._callback_tensor_inputs}"
            )

    def check_generator(self, generator, batch_size: int) -> None:
        generators = generator if isinstance(generator, (list, tuple)) else [generator]
        if isinstance(generator, (list, tuple)) and len(generator) != batch_size:
            raise ValueError(
                f"got a list of {len(generator)} generators for {batch_size} images (labels x num_images_per_label): "
                "pass one torch.Generator, or exactly one per image"
            )
        for g in generators:
            if g is not None and g.device.type != self.device.type:
                raise ValueError(
                    f"generator is on {g.device} but the pipeline runs on {self.device}; "
                    f"create it with torch.Generator(device={str(self.device)!r})"
                )

    @torch.no_grad()
    def __call__(
        self,
        class_labels: int | list[int] | torch.Tensor,
        guidance_scale: float | None = None,
        guidance_schedule: str = "constant",
        cfg_interval: int | None = None,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float = 1.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        num_images_per_label: int = 1,
        output_type: str = "pil",
        return_dict: bool = True,
        use_cache: bool = True,
        callback_on_step_end: Callable[[DiffusionPipeline, int, int, dict], dict]
        | PipelineCallback
        | MultiPipelineCallbacks
        | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
    ) -> ImagePipelineOutput | tuple:
        r"""
        Generate one image per class label.

        Args:
            class_labels (`int`, `list[int]` or `torch.Tensor`): Classes in `[0, transformer.config.num_classes)`.
            guidance_scale (`float`, *optional*): Classifier-free guidance scale: guided logits = uncond +
                (cond - uncond) * scale. `1.0` samples the conditional model alone (no doubled batch), `0.0` the
                unconditional model, > 1 strengthens the class, < 0 pushes away from it; NaN / inf are errors.
                Defaults to the transformer's `generation_config.guidance_scale` (what its training recipe samples
                with, e.g. 1.75 for FVQ's GPT-L, 1.65 for GPT-XL), else 4.0.
            guidance_schedule (`str`, defaults to `"constant"`): `"constant"`, or `"linear"` / `"cosine"` ramps from
                1 at the first token to `guidance_scale` at the last.
            cfg_interval (`int`, *optional*): LlamaGen's `--cfg-interval`. `-1` guides every token; `k >= 0` guides
                image tokens 0 .. k + 1 (raster order) and draws the later ones from the conditional logits alone.
                Defaults to the transformer's `generation_config.cfg_interval`, else -1.
            temperature (`float`, defaults to 1.0): Softmax temperature; 0 is greedy.
            top_k (`int`, *optional*): Keep only the k most likely tokens (LlamaGen's demo: 2000 for 16,384 codes).
            top_p (`float`, defaults to 1.0): Nucleus sampling mass.
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*): For reproducible samples: one
                generator, or one per image (labels x `num_images_per_label`; image i then depends on generator i
                only). Must live on the pipeline's device.
            num_images_per_label (`int`, defaults to 1): Images per class label.
            output_type (`str`, defaults to `"pil"`): `"pil"`, `"np"` (B, H, W, C) in [0, 1], `"pt"` (B, C, H, W)
                in [0, 1], or `"latent"`: the sampled token ids (B, h, w), not decoded.
            return_dict (`bool`, defaults to `True`): Return an `ImagePipelineOutput` instead of a tuple.
            use_cache (`bool`, defaults to `True`): Static KV cache; `False` recomputes the prefix every step.
            callback_on_step_end (`Callable`, `PipelineCallback` or `MultiPipelineCallbacks`, *optional*): Called
                after each token as `callback_on_step_end(pipe, step, step, callback_kwargs)` (a token index stands
                for the timestep), with the tensors named in `callback_on_step_end_tensor_inputs`: `"latents"`, the
                token grid (B, h, w) filled up to token `step` in raster order (what `output_type="latent"`
                returns), and `"logits"` (B, vocab), the guided logits token `step` was drawn from. It returns a dict
                (diffusers' convention); a `"latents"` entry replaces the token grid (the token at `step` is what is
                fed next), and setting `pipe._guidance_scale` changes the scale of the next tokens.
            callback_on_step_end_tensor_inputs (`list[str]`, *optional*): Tensors passed to the callback; defaults
                to `["latents"]`.

        Returns:
            [`ImagePipelineOutput`] with `images`, or `(images,)` when `return_dict=False`.
        """
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs
        if callback_on_step_end_tensor_inputs is None:
            callback_on_step_end_tensor_inputs = ["latents"]
        defaults = getattr(self.transformer, "generation_config", None)
        if guidance_scale is None:
            guidance_scale = getattr(defaults, "guidance_scale", None)
            guidance_scale = DEFAULT_GUIDANCE_SCALE if guidance_scale is None else guidance_scale
        if cfg_interval is None:
            cfg_interval = getattr(defaults, "cfg_interval", None)
            cfg_interval = -1 if cfg_interval is None else cfg_interval
        self.check_inputs(
            output_type,
            num_images_per_label,
            guidance_scale,
            callback_on_step_end_tensor_inputs,
            cfg_interval,
        )
        labels = self.transformer.check_class_labels(class_labels, allow_null=False)
        labels = labels.repeat_interleave(num_images_per_label)
        self.check_generator(generator, labels.shape[0])

        self._guidance_scale = guidance_scale
        grid = tuple(self.transformer.config.grid_size)
        step_callback = None
        if callback_on_step_end is not None:

            def step_callback(step: int, tensors: dict) -> dict:
                tensors = {"latents": tensors["tokens"].view(-1, *grid), "logits": tensors["logits"]}
                callback_kwargs = {k: tensors[k] for k in callback_on_step_end_tensor_inputs}
                outputs = callback_on_step_end(self, step, step, callback_kwargs) or {}
                return {"tokens": outputs.get("latents"), "guidance_scale": self._guidance_scale}

        num_tokens = self.transformer.num_image_tokens
        self._num_timesteps = num_tokens
        with self.progress_bar(total=num_tokens) as progress:

            def on_step(step: int, tensors: dict) -> dict | None:
                returned = step_callback(step, tensors) if step_callback is not None else None
                progress.update()
                return returned

            tokens = self.transformer.sample(
                labels,
                guidance_scale=guidance_scale,
                guidance_schedule=guidance_schedule,
                cfg_interval=cfg_interval,
                temperature=temperature,
                top_k=top_k,
                top_p=top_p,
                generator=generator,
                use_cache=use_cache,
                callback_on_step_end=on_step,
                progress_bar=False,
            )  # (B, h, w)
        if output_type == "latent":
            self.maybe_free_model_hooks()
            return ImagePipelineOutput(images=tokens) if return_dict else (tokens,)
        tokens = tokens.to(self.vqvae.device)
        images = self.vqvae.decode(tokens, force_not_quantize=True).sample  # (B, C, H, W) in ~[-1, 1]
        images = (images.float().clamp(-1, 1) + 1) / 2
        self.maybe_free_model_hooks()

        if output_type != "pt":
            images = images.permute(0, 2, 3, 1).cpu().numpy()  # (B, H, W, C)
            if output_type == "pil":
                images = self.numpy_to_pil(images.astype(np.float32))
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)


def check_compatible(transformer, vqvae) -> None:
    """ValueError unless the generator's vocabulary and token grid match the tokenizer's codebook and grid."""
    if not isinstance(transformer, LlamaGenForConditionalGeneration):
        raise ValueError(
            f"transformer must be a LlamaGenForConditionalGeneration, got {type(transformer).__name__}"
        )
    for attr in ("codebook_size", "downsample_factor", "decode"):
        if not hasattr(vqvae, attr):
            raise ValueError(
                f"vqvae must be a VQ tokenizer (FVQModel or VQGANLCModel) with `{attr}`, got {type(vqvae).__name__}"
            )
    vocab, codes = transformer.config.vocab_size, vqvae.codebook_size
    if vocab != codes:
        raise ValueError(
            f"the generator's vocab_size ({vocab}) differs from the tokenizer's codebook_size ({codes}): its token ids "
            "would index another codebook. Use the tokenizer the generator was trained on (the codes dataset records "
            "it), or train the generator with vocab_size equal to the tokenizer's codebook_size."
        )
    f = vqvae.downsample_factor
    grid = tuple(transformer.config.grid_size)
    size = getattr(vqvae.config, "sample_size", None)
    if size is not None:
        size = (size, size) if isinstance(size, int) else tuple(size)
        tokenizer_grid = (size[0] // f, size[1] // f)
        if tokenizer_grid != grid:
            raise ValueError(
                f"the generator makes {grid[0]}x{grid[1]} token grids but the tokenizer is set up for "
                f"{size[0]}x{size[1]} px images = {tokenizer_grid[0]}x{tokenizer_grid[1]} tokens (downsampling {f}). "
                "Use a generator trained on this tokenizer's grid; or, to decode the generator's grid at "
                f"{grid[0] * f}x{grid[1] * f} px with this fully convolutional tokenizer (as LlamaGen does at 384 px), "
                f"call vqvae.register_to_config(sample_size={grid[0] * f}) first."
            )
