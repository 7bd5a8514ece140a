"""The Hugging Face Hub: model cards and pushing checkpoints.

    fullvq push runs/fmnist org/fvq-fmnist                 # a trained output directory, in one commit
    fullvq push my-tokenizer org/fvq-16k --revision v2     # any save_pretrained folder, to a branch

    from fullvq_hf.hub import push_to_hub, render_model_card
    push_to_hub("runs/fmnist", "org/fvq-fmnist")
    card = render_model_card(None, "runs/fmnist/model", results={"usage": 0.91})

Four kinds of checkpoint, one jinja2 card template each in ``fullvq_hf/model_cards/<kind>.md`` (package data;
``model_cards/`` at the repository root links there): ``fvq_tokenizer``
(``FVQModel``), ``vqgan_lc_tokenizer`` (``VQGANLCModel``), ``llamagen_generator`` (transformers config with
``model_type: llamagen``) and ``llamagen_pipeline`` (a diffusers ``model_index.json``). The YAML metadata at the
top of each card comes from huggingface_hub's ``ModelCardData``; the results table from the ``results.json`` the
trainers write (and as ``model-index`` metadata: huggingface_hub ``EvalResult``s); the training recipe from
``training_config.json``.

A push uploads, in ONE commit, exactly: the card (``README.md``), the safetensors weights and configs of the model
and of a pipeline's components, ``results.json``, for a training run ``training_config.json`` (local paths removed)
and the latest sample grid, and the remote code of ``fullvq_hf.remote_code`` (``fullvq_hf.py`` + ``auto_map``; a
pipeline's custom pipeline and component files) so that diffusers / transformers load the repo with
``trust_remote_code=True`` where the package is not installed. ``model.push_to_hub(repo_id)`` of every model and of
the pipeline comes here too (``fullvq_hf.models.hub_mixin``).

Pulling needs nothing from here: ``FVQModel.from_pretrained("org/name", subfolder=..., revision=...)``.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

KINDS = ("fvq_tokenizer", "vqgan_lc_tokenizer", "llamagen_generator", "llamagen_pipeline")
TEMPLATE_DIR = Path(__file__).resolve().parent / "model_cards"

# What a push carries, and nothing else: safetensors weights (and their shard index) and the configs save_pretrained
# writes, in the model folder and in the component folders of a pipeline; a trainer's results.json,
# training_config.json (local paths removed) and latest sample grid; the card; the remote code. Pickle-based weights
# are refused outright: loading them can run arbitrary code.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
CONFIG_FILES = ("config.json", "model_index.json", "generation_config.json")
SHARD_INDEX = r".+\.safetensors\.index(\.[\w-]+)?\.json"  # diffusers puts the variant before .json
# training_config.json keys that name local files or folders (kept only when they hold a Hub id or a plain name)
PATH_KEYS = ("output_dir", "data_dir", "resume", "logging_dir", "init_from", "tokenizer", "codes", "dataset",
             "lc_codebook", "perceptual_weights", "feature_extractor")  # fmt: skip

logger = logging.getLogger(__name__)

HUB_DATASETS = {"fashion_mnist": "zalando-datasets/fashion_mnist"}  # local dataset names -> Hub dataset ids

CITATIONS = {
    "fvq": """@article{chang2025fvq,
  title   = {Scalable Training for Vector-Quantized Networks with 100% Codebook Utilization},
  author  = {Chang, Yifan and Qin, Jie and Qiao, Limeng and Wang, Xiaofeng and Zhu, Zheng and Ma, Lin and Wang, Xingang},
  journal = {arXiv preprint arXiv:2509.10140},
  year    = {2025}
}""",
    "vqgan-lc": """@inproceedings{zhu2024vqganlc,
  title     = {Scaling the Codebook Size of VQGAN to 100,000 with a Utilization Rate of 99%},
  author    = {Zhu, Lei and Wei, Fangyun and Lu, Yanye and Chen, Dong},
  booktitle = {Advances in Neural Information Processing Systems},
  year      = {2024},
  note      = {arXiv:2406.11837}
}""",
    "llamagen": """@article{sun2024llamagen,
  title   = {Autoregressive Model Beats Diffusion: Llama for Scalable Image Generation},
  author  = {Sun, Peize and Jiang, Yi and Chen, Shoufa and Zhang, Shilong and Peng, Bingyue and Luo, Ping and Yuan, Zehuan},
  journal = {arXiv preprint arXiv:2406.06525},
  year    = {2024}
}""",
    "simvq": """@article{zhu2024simvq,
  title   = {Addressing Representation Collapse in Vector Quantized Models with One Linear Layer},
  author  = {Zhu, Yongxin and Li, Bocheng and Xin, Yifei and Xia, Zhihua and Xu, Linli},
  journal = {arXiv preprint arXiv:2411.02038},
  year    = {2024}
}""",
}


# ---------------------------------------------------------------------------------------------------- kinds
def kind_from_config(config: Mapping[str, Any]) -> str:
    """The card kind of a model config (diffusers ``config.json``, transformers ``config.json`` or a pipeline's
    ``model_index.json``)."""
    name = config.get("_class_name", "")
    name = str(
        name[-1] if isinstance(name, list | tuple) and name else name
    )  # ["fullvq_hf", "LlamaGenPipeline"]
    if name == "FVQModel":
        return "fvq_tokenizer"
    if name == "VQGANLCModel":
        return "vqgan_lc_tokenizer"
    if name.endswith("Pipeline"):
        return "llamagen_pipeline"
    if config.get("model_type") == "llamagen":
        return "llamagen_generator"
    raise ValueError(
        f"Cannot tell which kind of checkpoint this config describes (_class_name={name or None!r}, "
        f"model_type={config.get('model_type')!r}); expected FVQModel, VQGANLCModel, model_type 'llamagen', "
        "or a pipeline's model_index.json."
    )


def _model_folder(path: Path) -> Path:
    """The folder holding the model: ``path`` itself, or ``path/model`` for a trainer's output directory."""
    if (path / "model_index.json").is_file() or (path / "config.json").is_file():
        return path
    if (path / "model" / "config.json").is_file():
        return path / "model"
    raise FileNotFoundError(
        f"{path} holds no config.json or model_index.json (nor model/config.json of a training run): "
        "pass a save_pretrained folder or a trainer's --output-dir."
    )


def _read_config(folder: Path) -> dict:
    name = "model_index.json" if (folder / "model_index.json").is_file() else "config.json"
    return json.loads((folder / name).read_text())


def detect_kind(path: str | Path) -> str:
    """``fvq_tokenizer`` | ``vqgan_lc_tokenizer`` | ``llamagen_generator`` | ``llamagen_pipeline`` for a model folder
    (or a trainer's output directory), read from its ``model_index.json`` / ``config.json``."""
    return kind_from_config(_read_config(_model_folder(Path(path))))


def _as_dict(config: Any) -> dict:
    if isinstance(config, Mapping):
        return {k: v for k, v in config.items()}
    if hasattr(config, "to_dict"):  # transformers PretrainedConfig
        return config.to_dict()
    raise TypeError(
        f"Expected a folder, a model with .config, or a config mapping; got {type(config).__name__}."
    )


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


# ---------------------------------------------------------------------------------------------------- formatting
def _md_table(rows: list[tuple[str, str]], header: tuple[str, str]) -> str:
    lines = [f"| {header[0]} | {header[1]} |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    return "\n".join(lines)


def _tokenizer_results(results: Mapping[str, Any], codebook_size: int | None) -> list[tuple[str, str]]:
    rows = []
    if results.get("usage") is not None:
        used = results.get("used_codes")
        of = f" ({used} / {codebook_size} codes)" if used is not None and codebook_size else ""
        rows.append(("codebook usage", f"{100 * results['usage']:.2f}%{of}"))
    if results.get("perplexity") is not None:
        rows.append(("perplexity", f"{results['perplexity']:.1f}"))
    if results.get("dead_codes") is not None:
        rows.append(("dead codes", str(results["dead_codes"])))
    if results.get("psnr") is not None:
        rows.append(("PSNR", f"{results['psnr']:.2f} dB"))
    if results.get("ssim") is not None:
        rows.append(("SSIM", f"{results['ssim']:.4f}"))
    if results.get("frechet_distance") is not None:
        space = f" (features: {results['feature_extractor']})" if results.get("feature_extractor") else ""
        rows.append(("Frechet distance", f"{results['frechet_distance']:.3f}{space}"))
    return rows


_GENERIC_LABELS = {"fid": "FID", "inception_score": "Inception score"}
_NOT_METRICS = {"step", "images_seen", "skipped_images", "num_processes", "num_images", "num_tokens",
                "skipped_eval_images", "replicas_identical", "used_codes", "codebook_size"}  # fmt: skip


def _generic_results(results: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Rows for any numeric results (generator / pipeline metrics: FID, Inception score, ...)."""
    rows = []
    for key, value in results.items():
        if key in _NOT_METRICS or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        text = f"{value:.4g}" if isinstance(value, float) else str(value)
        rows.append((_GENERIC_LABELS.get(key, key), text))
    return rows


_RECIPE_KEYS = [
    ("preset", "preset"), ("model_type", "model"), ("backbone", "backbone"), ("bridge", "VQBridge"),
    ("quantizer_type", "quantizer"), ("codebook_size", "codebook size"), ("codebook_dim", "code dimension"),
    ("init_from", "initialised from"), ("dataset", "dataset"), ("train_split", "train split"),
    ("resolution", "resolution"), ("batch_size", "batch size per process"),
    ("gradient_accumulation_steps", "gradient accumulation"), ("max_steps", "steps"),
    ("learning_rate", "base learning rate"), ("lr_scheduler", "lr schedule"), ("warmup_steps", "warm-up steps"),
    ("reconstruction_loss", "reconstruction loss"), ("perceptual_weight", "perceptual weight"),
    ("gan_weight", "GAN weight"), ("gan_start_step", "GAN from step"), ("mixed_precision", "mixed precision"),
    ("ema_decay", "EMA decay"), ("seed", "seed"),
]  # fmt: skip
_RUN_KEYS = [("step", "steps done"), ("images_seen", "images seen"), ("num_processes", "processes")]


def _matches(trained: Mapping[str, Any], keys: dict[str, Any]) -> bool:
    return all(
        (list(trained.get(k)) if isinstance(trained.get(k), list | tuple) else trained.get(k))
        == (list(v) if isinstance(v, list | tuple) else v)
        for k, v in keys.items()
    )


def _trained_recipe(config: Mapping[str, Any], trained: Mapping[str, Any] | None, full: bool) -> dict:
    """``config`` (``training_config.json``) with its architecture settings read from ``trained``, the config.json
    of the model the run trained: options a run did not honour (e.g. with ``init_from``, or a bridge preset with a
    plain quantizer) never reach the card. ``full``: ``trained`` is the training form (``model-train``, or a model
    that was not folded), so it also tells the quantizer; a folded model only tells the codebook and backbone."""
    out = dict(config)
    if not trained or trained.get("_class_name") not in ("FVQModel", "VQGANLCModel"):
        return out
    from .models import BACKBONES
    from .models.vqbridge import parse_bridge_preset

    out["model_type"] = "vqgan-lc" if trained["_class_name"] == "VQGANLCModel" else "fvq"
    for key in ("codebook_size", "codebook_dim"):
        if key in trained:
            out[key] = trained[key]
    name = out.get("backbone")
    if name not in BACKBONES or not _matches(trained, BACKBONES[name]):
        name = next((n for n, shape in BACKBONES.items() if _matches(trained, shape)), None)
        out["backbone"] = name or f"block_out_channels {list(trained.get('block_out_channels', ()))}"
    if trained["_class_name"] == "VQGANLCModel":
        out["quantizer_type"], out["bridge"] = None, None
    elif full:
        out["quantizer_type"] = trained.get("quantizer_type", "vqbridge")
        if out["quantizer_type"] != "vqbridge":
            out["bridge"] = None
        else:
            try:
                same = bool(out.get("bridge")) and _matches(trained, parse_bridge_preset(out["bridge"]))
            except ValueError:
                same = False
            if not same:
                out["bridge"] = (f"{trained.get('bridge_type', 'vit')} bridge, width {trained.get('bridge_hidden_size')}, "
                                 f"patch {trained.get('bridge_patch_size')}, depth {trained.get('bridge_depth')}")  # fmt: skip
    return out


def _recipe_rows(config: Mapping[str, Any], results: Mapping[str, Any]) -> list[tuple[str, str]]:
    rows = [(label, f"`{config[key]}`") for key, label in _RECIPE_KEYS if config.get(key) not in (None, "")]
    if config.get("gan_weight") in (0, 0.0):
        rows = [r for r in rows if r[0] != "GAN from step"]
    for key, label in _RUN_KEYS:
        if results.get(key) is not None:
            rows.append((label, f"`{results[key]}`"))
    return rows


def _eval_results(kind: str, results: Mapping[str, Any], config: Mapping[str, Any], model_name: str) -> list:
    """huggingface_hub ``EvalResult``s (the card's ``model-index``) for every numeric result."""
    from huggingface_hub import EvalResult

    tokenizer = kind in ("fvq_tokenizer", "vqgan_lc_tokenizer")
    task_type = "image-feature-extraction" if tokenizer else "unconditional-image-generation"
    task_name = "Image tokenization (reconstruction)" if tokenizer else "Class-conditional image generation"
    dataset = _hub_dataset(config.get("dataset") or config.get("codes")) or config.get("dataset") or "unknown"
    dataset = dataset if not _looks_local(dataset) else "local"
    out = []
    for key, value in results.items():
        if key in _NOT_METRICS or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if key == "frechet_distance" and results.get("feature_extractor"):
            args = {"feature_extractor": str(results["feature_extractor"])}
        else:
            args = None
        out.append(EvalResult(
            task_type=task_type, task_name=task_name, dataset_type=dataset, dataset_name=dataset,
            dataset_split=config.get("eval_split") if tokenizer else None, metric_type=key,
            metric_name=_METRIC_NAMES.get(key, key), metric_value=value, metric_args=args,
        ))  # fmt: skip
    return out


_METRIC_NAMES = {"usage": "codebook usage", "perplexity": "codebook perplexity", "dead_codes": "dead codes",
                 "psnr": "PSNR", "ssim": "SSIM", "lpips": "LPIPS", "frechet_distance": "Frechet distance",
                 "fid": "FID", "rfid": "rFID", "inception_score": "Inception score"}  # fmt: skip


def _looks_local(value: str) -> bool:
    """A string that names a local file or folder (absolute, relative with ./ ../ ~, or a relative path with a
    separator that exists here; a bare word such as "test" is never a path)."""
    return (
        value.startswith(("/", "./", "../", "~", "\\"))
        or (("/" in value or "\\" in value) and Path(value).exists())
        or (len(value) > 2 and value[1] == ":" and value[2] in "/\\")  # C:\...
    )


def _hub_dataset(name: str | None) -> str | None:
    if not name:
        return None
    return HUB_DATASETS.get(name, name if "/" in name and not Path(name).exists() else None)


def _is_repo_id(value: str | None) -> bool:
    return bool(value) and re.fullmatch(r"[\w.-]+/[\w.-]+", value) is not None and not Path(value).exists()


# ---------------------------------------------------------------------------------------------------- cards
def _tokenizer_card(kind: str, model_config: dict, config: dict, results: dict) -> dict:
    """``config``: the training configuration with the trained model's architecture (``_trained_recipe``)."""
    quantizer = model_config.get("quantizer_type", "vq")
    trained_with = config.get("quantizer_type") or quantizer
    if kind == "vqgan_lc_tokenizer":
        variant, tags, citations = "vqgan-lc", ["vqgan-lc"], ["vqgan-lc", "llamagen"]
    else:  # FVQ (bridge, or folded from a bridge run), or the plain VQ / SimVQ baselines
        variant = "fvq" if "vqbridge" in (quantizer, trained_with) else trained_with
        tags = {"fvq": ["fvq", "vqbridge"], "simvq": ["simvq"]}.get(variant, ["llamagen"])
        citations = ["fvq", "llamagen"] + (["simvq"] if variant == "simvq" else [])
    size = int(model_config.get("sample_size", config.get("resolution", 256)))
    factor = 2 ** max(len(model_config.get("block_out_channels", ())) - 1, 0)
    return dict(
        library="diffusers",
        pipeline_tag="image-feature-extraction",
        tags=["vector-quantization", "image-tokenizer", *tags],
        citations=citations,
        results_rows=_tokenizer_results(results, model_config.get("codebook_size")),
        variant=variant,
        folded=variant == "fvq" and quantizer == "vq",
        quantizer_type=quantizer,
        codebook_size=model_config.get("codebook_size"),
        codebook_dim=model_config.get("codebook_dim"),
        feature_dim=model_config.get("codebook_feature_dim"),
        in_channels=model_config.get("in_channels", 3),
        sample_size=size,
        downsample=factor,
        tokens=size // factor,
        model_class="FVQModel" if kind == "fvq_tokenizer" else "VQGANLCModel",
    )


_GENERATOR_KEYS = ("vocab_size", "grid_size", "num_classes", "hidden_size", "num_hidden_layers", "num_attention_heads",
                   "intermediate_size", "class_dropout_prob")  # fmt: skip


def _generator_card(model_config: dict, results: dict) -> dict:
    rows = [(key, f"`{model_config[key]}`") for key in _GENERATOR_KEYS if key in model_config]
    return dict(
        library="transformers",
        pipeline_tag="unconditional-image-generation",
        tags=["llamagen", "image-generation", "autoregressive", "class-conditional"],
        citations=["llamagen", "fvq"],
        results_rows=_generic_results(results),
        architecture=_md_table(rows, ("field", "value")) if rows else None,
    )


def _pipeline_card(model_index: dict, results: dict) -> dict:
    components = {
        k: v for k, v in model_index.items() if not k.startswith("_") and isinstance(v, list | tuple)
    }
    classes = {v[1] for v in components.values() if len(v) == 2}
    papers = [paper for paper, cls in (("fvq", "FVQModel"), ("vqgan-lc", "VQGANLCModel")) if cls in classes]
    rows = [(f"`{name}`", f"`{v[0]}.{v[1]}`" if len(v) == 2 else f"`{v}`") for name, v in components.items()]
    return dict(
        library="diffusers",
        pipeline_tag="unconditional-image-generation",
        tags=["llamagen", "image-generation", "class-conditional", *papers],
        citations=["llamagen", *papers],
        results_rows=_generic_results(results),
        pipeline_class=model_index.get("_class_name", "LlamaGenPipeline"),
        components=_md_table(rows, ("component", "class")),
    )


def _eval_note(results: dict, config: dict) -> str | None:
    if not results.get("num_images"):
        return None
    tokens = f" ({results['num_tokens']} tokens)" if results.get("num_tokens") else ""
    where = f" of `{config['dataset']}`" if config.get("dataset") else ""
    where += f", `{config['eval_split']}` split" if where and config.get("eval_split") else ""
    note = f"Measured on {results['num_images']} images{tokens}{where}."
    if results.get("frechet_distance") is None and results.get("frechet_skipped"):
        note += f" Frechet distance not measured: {results['frechet_skipped']}."
    return note


def render_model_card(
    kind: str | None,
    model_dir_or_model: Any,
    results: Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
    base_model: str | None = None,
    repo_id: str | None = None,
    sample_image: str | None = None,
    license: str | None = "apache-2.0",
    tags: list[str] | None = None,
):
    """A ``huggingface_hub.ModelCard`` for one checkpoint.

    Args:
        kind: one of ``KINDS``, or None to detect it from the model's config.
        model_dir_or_model: a model folder (or a trainer's output directory), a model / pipeline object with
            ``.config``, or the config mapping itself (``config.json`` / ``model_index.json`` contents).
        results: evaluation results (``results.json``); read from the folder when not given.
        config: the training configuration (``training_config.json``); read from the folder when not given.
        base_model: Hub id the weights were converted or fine-tuned from (default: a Hub ``init_from`` of the
            training configuration).
        license: the card's licence (weights trained with this package: apache-2.0; converted weights keep their
            source's, e.g. "mit" for LlamaGen; None leaves it out).
        repo_id: where the card will live (used in the title and the usage snippet).
        sample_image: path (in the repo) of a reconstruction grid to show.
        tags: extra metadata tags.

    Results also go into the metadata as ``model-index`` (huggingface_hub ``EvalResult``s: task, dataset from the
    training configuration, metric), which the Hub shows as evaluation results.
    """
    import jinja2
    from huggingface_hub import ModelCard, ModelCardData

    train_subfolder, config_in_repo = None, False
    trained_config, full = None, False  # the config.json of the model the run trained (training form), if known
    if isinstance(model_dir_or_model, str | Path):
        root = Path(model_dir_or_model)
        folder = _model_folder(root)
        model_config = _read_config(folder)
        results = results if results is not None else _read_json(root / "results.json")
        config_in_repo = (
            config is None and (root / "training_config.json").is_file()
        )  # push_to_hub uploads it
        config = config if config is not None else _read_json(root / "training_config.json")
        if folder != root and (root / "model-train" / "config.json").is_file():
            train_subfolder = "model-train"
            trained_config, full = _read_config(root / "model-train"), True
    elif isinstance(model_dir_or_model, Mapping):
        model_config = dict(model_dir_or_model)
    else:
        model_config = _as_dict(model_dir_or_model.config)
        # diffusers writes _class_name into config.json on save only
        model_config.setdefault("_class_name", type(model_dir_or_model).__name__)
    kind = kind or kind_from_config(model_config)
    results, config = dict(results or {}), dict(config or {})
    if trained_config is None and model_config.get("_class_name") in ("FVQModel", "VQGANLCModel"):
        # without the training form at hand, the model itself: it tells the quantizer unless it is a folded plain VQ
        trained_config, full = model_config, model_config.get("quantizer_type", "vq") != "vq"
    if config:
        config = _trained_recipe(config, trained_config, full)
    if kind in ("fvq_tokenizer", "vqgan_lc_tokenizer"):
        context = _tokenizer_card(kind, model_config, config, results)
    elif kind == "llamagen_generator":
        context = _generator_card(model_config, results)
    elif kind == "llamagen_pipeline":
        context = _pipeline_card(model_config, results)
    else:
        raise ValueError(f"Unknown card kind {kind!r}; choose one of {KINDS}.")
    template_file = TEMPLATE_DIR / f"{kind}.md"
    if not template_file.is_file():
        raise FileNotFoundError(
            f"Model card template {template_file} is missing; it ships as package data in fullvq_hf/model_cards/: "
            "reinstall the package."
        )

    base_model = base_model or (config.get("init_from") if _is_repo_id(config.get("init_from")) else None)
    dataset = _hub_dataset(config.get("dataset"))
    model_name = repo_id.split("/")[-1] if repo_id else kind.replace("_", "-")
    eval_results = _eval_results(kind, results, config, model_name)
    card_data = ModelCardData(
        library_name=context.pop("library"),
        license=license,
        tags=list(dict.fromkeys(["fullvq_hf", *context.pop("tags"), *(tags or [])])),
        pipeline_tag=context.pop("pipeline_tag"),
        datasets=[dataset] if dataset else None,
        base_model=base_model,
        model_name=model_name if eval_results else None,
        eval_results=eval_results or None,
    )
    results_rows, recipe_rows = context.pop("results_rows"), _recipe_rows(config, results)
    env = jinja2.Environment(
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True, undefined=jinja2.StrictUndefined
    )
    text = env.from_string(template_file.read_text()).render(
        card_data=card_data.to_yaml(),
        repo_id=repo_id or "path/to/checkpoint",
        title=repo_id.split("/")[-1] if repo_id else None,
        results_table=_md_table(results_rows, ("metric", "value")) if results_rows else None,
        eval_note=_eval_note(results, config),
        recipe_table=_md_table(recipe_rows, ("setting", "value")) if recipe_rows else None,
        base_model=base_model,
        train_subfolder=train_subfolder,
        config_in_repo=config_in_repo,
        sample_image=sample_image,
        citations="\n\n".join(CITATIONS[c] for c in context.pop("citations")),
        **context,
    )
    return ModelCard(text)


# ---------------------------------------------------------------------------------------------------- push
def _is_pushed(rel: str) -> bool:
    """A config, safetensors weights (a variant, a shard) or their shard index (``*.safetensors.index[.fp16].json``)."""
    name = rel.rsplit("/", 1)[-1]
    return (
        name in CONFIG_FILES or name.endswith(".safetensors") or re.fullmatch(SHARD_INDEX, name) is not None
    )


def _model_files(
    folder: Path, prefix: str, files: dict[str, Path], pickles: list[str], left: list[str]
) -> None:
    """Weights and configs of a ``save_pretrained`` folder: its own, and those of its component folders (a
    pipeline's ``model_index.json`` names them; any sub-folder holding a ``config.json`` counts too)."""
    for path in sorted(folder.rglob("*")):
        if not path.is_file():
            continue
        rel = path.relative_to(folder).as_posix()
        depth_ok = rel.count("/") == 0 or (rel.count("/") == 1 and (path.parent / "config.json").is_file())
        if path.suffix in PICKLE_SUFFIXES and depth_ok:
            pickles.append(prefix + rel)
        elif depth_ok and _is_pushed(rel):
            files[prefix + rel] = path
        elif rel != "README.md":
            left.append(prefix + rel)


def _is_hub_reference(value: str) -> bool:
    """``org/name`` or ``org/name/path/file.ext`` (a file in a Hub repo) that is not a local path."""
    pattern = r"[\w-][\w.-]*/[\w.-]+(/[\w.-]+)*"
    hub_file = value.count("/") == 1 or Path(value).suffix != ""
    return (
        re.fullmatch(pattern, value) is not None
        and hub_file
        and not _looks_local(value)
        and not Path(value).exists()
    )


def sanitize_training_config(config: Mapping[str, Any]) -> dict:
    """``training_config.json`` without local paths: the path-valued options (``output_dir``, ``data_dir``,
    ``init_from``, ``tokenizer``, ...) keep a Hub id or a plain name (``fashion_mnist``, ``latest``) and become None
    when they name a local file or folder; any other string that names one becomes None too."""

    def clean(key: str | None, value: Any) -> Any:
        if isinstance(value, Mapping):
            return {k: clean(k, v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [clean(None, v) for v in value]
        if not isinstance(value, str):
            return value
        if key in ("output_dir", "data_dir", "logging_dir") or _looks_local(value):
            return None
        if key in PATH_KEYS and ("/" in value or "\\" in value) and not _is_hub_reference(value):
            return None
        return value

    return {k: clean(k, v) for k, v in config.items()}


def _collect_files(root: Path, kind: str | None = None) -> tuple[dict[str, Path | bytes], str | None]:
    """Map path-in-repo -> local file (or content) for a push, and the repo path of the sample grid (if any).

    A trainer's output directory (``model/`` + ``model-train/`` + ``results.json``) becomes: the inference model
    at the root (so ``from_pretrained(repo_id)`` loads it), the training model under ``model-train/``,
    ``results.json`` and ``training_config.json`` without local paths, and the latest sample grid as
    ``reconstructions.png`` (tokenizers) or ``samples.png`` (generators). Any other folder is a ``save_pretrained``
    folder: its weights and configs, those of its component folders, and its ``results.json``. Nothing else travels (checkpoints, logs,
    stray files are listed in a warning); pickled weights are refused.
    """
    files: dict[str, Path | bytes] = {}
    pickles: list[str] = []
    left: list[str] = []
    trainer_output = not (root / "config.json").is_file() and (root / "model" / "config.json").is_file()
    if trainer_output:
        for name, prefix in (("model", ""), ("model-train", "model-train/")):
            if (root / name).is_dir():
                _model_files(root / name, prefix, files, pickles, left)
    else:
        _model_files(root, "", files, pickles, left)
    sample = None
    if (root / "results.json").is_file():
        results = sanitize_training_config(json.loads((root / "results.json").read_text()))
        files["results.json"] = (json.dumps(results, indent=2) + "\n").encode()
    if trainer_output:
        if (root / "training_config.json").is_file():
            config = sanitize_training_config(json.loads((root / "training_config.json").read_text()))
            files["training_config.json"] = (json.dumps(config, indent=2) + "\n").encode()
        grids = sorted((root / "samples").glob("*.png")) if (root / "samples").is_dir() else []
        if grids:
            sample = (
                "samples.png"
                if kind in ("llamagen_generator", "llamagen_pipeline")
                else "reconstructions.png"
            )
            files[sample] = grids[-1]
    if pickles:
        raise ValueError(
            f"Refusing to push pickled weights {sorted(pickles)} from {root}: loading them can run arbitrary code. "
            "Save the model with safetensors (save_pretrained(..., safe_serialization=True)) and remove these files."
        )
    if not any(p.endswith(".safetensors") for p in files):
        raise ValueError(f"No .safetensors weights found in {root}; nothing to push.")
    if left and not trainer_output:
        logger.warning(
            "Not pushing %d file(s) that are neither weights nor configs: %s", len(left), left[:20]
        )
    return files, sample


def push_to_hub(
    local_dir: str | Path | Any,
    repo_id: str,
    *,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    commit_description: str | None = None,
    token: str | None = None,
    base_model: str | None = None,
    create_pr: bool = False,
    subfolder: str | None = None,
    results: Mapping[str, Any] | None = None,
    tags: list[str] | None = None,
    remote_code: bool = True,
    save_kwargs: Mapping[str, Any] | None = None,
):
    """Upload a checkpoint to ``repo_id`` in ONE commit, with a model card; returns the ``CommitInfo`` (a str:
    the commit URL; ``.oid`` is the commit sha).

    ``local_dir`` is a trainer's output directory, any ``save_pretrained`` folder (tokenizer, generator,
    pipeline), or a model / pipeline object (``save_pretrained(tmp, **save_kwargs)`` first; every model's
    ``push_to_hub`` method comes here). What travels is listed in ``_collect_files``: weights (safetensors only;
    pickled weights are refused), configs, and for a training run ``results.json``, ``training_config.json``
    (local paths removed) and the latest sample grid. A ``README.md`` in the folder is used as the card, otherwise
    one is rendered (``render_model_card``; ``results`` overrides ``results.json``). With ``remote_code`` (default)
    the package's model code goes along as ``fullvq_hf.py`` (``fullvq_hf.remote_code``) so the repo loads with
    ``trust_remote_code=True`` where the package is not installed. The repo is created if needed (``private``
    applies then); ``revision`` names a branch, created from ``main`` if it does not exist; ``subfolder`` puts
    everything in a folder of the repo, without a card (as diffusers does).
    """
    push_kwargs = dict(private=private, revision=revision, commit_message=commit_message,
                       commit_description=commit_description, token=token, base_model=base_model,
                       create_pr=create_pr, subfolder=subfolder, results=results, tags=tags,
                       remote_code=remote_code)  # fmt: skip
    if not isinstance(local_dir, str | Path):
        with tempfile.TemporaryDirectory() as tmp:
            local_dir.save_pretrained(tmp, **(save_kwargs or {}))
            return push_to_hub(tmp, repo_id, **push_kwargs)
    from huggingface_hub import CommitOperationAdd, HfApi

    root = Path(local_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder.")
    kind = detect_kind(root)
    files, sample = _collect_files(root, kind)  # refuses pickles before anything is sent
    if remote_code:
        from .remote_code import remote_code_files

        files.update(remote_code_files(files))
    prefix = subfolder.strip("/") + "/" if subfolder else ""
    operations = []
    if not prefix:
        if (root / "README.md").is_file():
            readme = (root / "README.md").read_bytes()
        else:
            card = render_model_card(kind, root, results=results, base_model=base_model, repo_id=repo_id,
                                     sample_image=sample, tags=tags)  # fmt: skip
            readme = str(card).encode()
        operations.append(CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=readme))
    operations += [
        CommitOperationAdd(
            path_in_repo=prefix + path, path_or_fileobj=src if isinstance(src, bytes) else str(src)
        )
        for path, src in files.items()
    ]
    api = HfApi(token=token)
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
    if revision and revision != "main":
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    message = commit_message or f"Upload {kind.replace('_', ' ')} with fullvq_hf"
    return api.create_commit(repo_id, operations, commit_message=message, commit_description=commit_description,
                             revision=revision, create_pr=create_pr)  # fmt: skip


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Push a training run or a model folder to the Hub in one commit, with a model card.",
    )
    p.add_argument("local_dir", help="a trainer's --output-dir, or a save_pretrained folder")
    p.add_argument("repo_id", help="namespace/name on the Hub")
    p.add_argument("--private", action="store_true", help="create the repo private (if it does not exist)")
    p.add_argument("--revision", help="branch to push to (created from main if needed)")
    p.add_argument("--commit-message")
    p.add_argument(
        "--base-model", help="Hub id the weights were converted or fine-tuned from (card metadata)"
    )
    p.add_argument("--token", help="Hub token (default: HF_TOKEN or the saved login)")
    p.add_argument(
        "--no-remote-code",
        action="store_true",
        help="do not upload the package's model code (then loading needs `pip install fullvq_hf`)",
    )
    return p


def main(argv: list[str] | None = None, prog: str | None = None):
    args = build_parser(prog).parse_args(argv)
    info = push_to_hub(args.local_dir, args.repo_id, private=args.private, revision=args.revision,
                       commit_message=args.commit_message, token=args.token, base_model=args.base_model,
                       remote_code=not args.no_remote_code)  # fmt: skip
    print(info.commit_url)
    return info


__all__ = ["CITATIONS", "KINDS", "detect_kind", "kind_from_config", "push_to_hub", "render_model_card"]
