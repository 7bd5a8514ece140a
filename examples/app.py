"""A web demo (gradio) of the tokenizers and the generator that `make demo` trains: look at reconstructions, at
where the codes go and how many are used, and at generated samples per class.

    python examples/app.py                                   # after `make demo` (= `make app`): outputs/demo/
    python examples/app.py --tokenizer outputs/demo/fvq/model --compare-tokenizer none --pipeline none
    python examples/app.py --tokenizer user/fvq-tokenizer --pipeline user/llamagen-pipeline   # Hub ids

Every model is loaded by local folder or Hub id: ``--tokenizer`` / ``--compare-tokenizer`` with the package's
``load_tokenizer`` (FVQ, plain VQ, VQGAN-LC), ``--pipeline`` with ``LlamaGenPipeline.from_pretrained``. Defaults
are the folders of ``--demo-dir`` (``fvq/model``, ``vq/model``, ``pipeline``); ``none`` leaves one out.

Tabs:
    Tokenize   a bundled image (Fashion-MNIST test images, scikit-image photos) or an upload -> the tokenizer's
               input, its reconstruction, PSNR / SSIM, the token-id map as a colour image, and this image's codes
               against the codebook's usage on the test split (computed once per tokenizer, then cached)
    Compare    the two tokenizers on the same image, side by side
    Generate   classes, guidance scale, top-k, temperature, seed -> a grid of samples, a row per class

Images of another size are padded (smaller) or centre-cropped and resized (larger), and the page says so;
files that are not images are refused with a message naming the file.
"""

from __future__ import annotations

import argparse
import colorsys
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no telemetry calls from a local demo

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageDraw, ImageFont, UnidentifiedImageError  # noqa: E402

from fullvq_hf.data import (  # noqa: E402
    BUNDLED_PHOTOS,
    FASHION_MNIST_CLASSES,
    ImageTransform,
    TransformedImages,
    collate_images,
    load_fashion_mnist,
    load_image_dataset,
)
from fullvq_hf.metrics import CodebookUsage, psnr, ssim  # noqa: E402
from fullvq_hf.models.loading import load_tokenizer  # noqa: E402

DISPLAY_SIZE = 256  # tokenizer images are shown upscaled (nearest) to about this many pixels
GRID_TILE = 64  # generated images are shown upscaled to about this many pixels each
GRID_MARGIN = 110  # left margin of the sample grid, for the class names
FASHION_MNIST_PICKS = 20  # bundled Fashion-MNIST test images: the first two of each class
UPLOAD_TYPES = "PNG, JPEG, WebP, GIF, BMP or TIFF"


class AppError(Exception):
    """A problem the user can fix (a model that is not there, a file that is not an image)."""


# ---------------------------------------------------------------------------------------------------- models
@dataclass
class Models:
    """The loaded models: one or two tokenizers by display name, and the generator pipeline (or None)."""

    tokenizers: dict[str, torch.nn.Module] = field(default_factory=dict)
    pipeline: object | None = None
    class_names: list[str] = field(default_factory=list)


def _source(value: str | None, default: Path, what: str, option: str) -> str | None:
    """The folder / Hub id to load, None for ``none``; a clear error when the ``make demo`` default is missing."""
    if value is None:
        if not default.exists():
            raise AppError(
                f"no {what} at {default}: run `make demo` first, or pass {option} FOLDER_OR_HUB_ID "
                f"(or {option} none to leave it out)"
            )
        return str(default)
    return None if value.lower() == "none" else value


def _load(what: str, source: str, loader):
    try:
        return loader(source)
    except (OSError, ValueError, KeyError, TypeError) as e:  # missing files, wrong class, bad Hub id
        detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise AppError(f"could not load the {what} {source!r}: {detail}") from e


def class_names(pipeline) -> list[str]:
    """Names for the generator's classes: its config's ``id2label`` when set, Fashion-MNIST's for 10 classes, else
    ``class i``; always prefixed with the id the generator sees."""
    n = pipeline.transformer.config.num_classes
    id2label = getattr(pipeline.transformer.config, "id2label", None) or {}
    names = [str(id2label.get(i, "")) for i in range(n)]
    if not all(names) or all(name == f"LABEL_{i}" for i, name in enumerate(names)):
        names = (
            list(FASHION_MNIST_CLASSES)
            if n == len(FASHION_MNIST_CLASSES)
            else [f"class {i}" for i in range(n)]
        )
    return [f"{i}: {name}" for i, name in enumerate(names)]


def load_models(args: argparse.Namespace) -> Models:
    from fullvq_hf import LlamaGenPipeline

    demo = Path(args.demo_dir)
    device = torch.device(args.device)
    models = Models()
    for what, value, default, option, name in (
        ("tokenizer", args.tokenizer, demo / "fvq" / "model", "--tokenizer", args.tokenizer_name),
        (
            "comparison tokenizer",
            args.compare_tokenizer,
            demo / "vq" / "model",
            "--compare-tokenizer",
            args.compare_name,
        ),
    ):
        source = _source(value, default, what, option)
        if source is not None:
            models.tokenizers[name] = _load(what, source, load_tokenizer).to(device).eval()
    source = _source(args.pipeline, demo / "pipeline", "generator pipeline", "--pipeline")
    if source is not None:
        pipe = _load("generator pipeline", source, LlamaGenPipeline.from_pretrained).to(device)
        pipe.set_progress_bar_config(disable=True)
        models.pipeline, models.class_names = pipe, class_names(pipe)
    if not models.tokenizers and models.pipeline is None:
        raise AppError("nothing to show: every model is `none`; pass --tokenizer or --pipeline")
    return models


# ---------------------------------------------------------------------------------------------------- images
def sample_size(model) -> int:
    size = model.config.sample_size
    return int(size if isinstance(size, int) else size[0])


def read_image(path: str | os.PathLike) -> Image.Image:
    """An uploaded file as a PIL image, or an AppError naming the file and the formats that work."""
    name = Path(path).name
    try:
        with Image.open(path) as image:
            image.load()
            return image.copy()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        reason = (
            "not a known image format, or a damaged file" if isinstance(e, UnidentifiedImageError) else str(e)
        )
        raise AppError(
            f"{name} could not be read as an image ({reason}). Upload a {UPLOAD_TYPES} file."
        ) from e


def prepare_image(image: Image.Image, model) -> tuple[torch.Tensor, str]:
    """A PIL image -> the tokenizer's input (1, C, S, S) in [-1, 1] and a note on what was changed to get there
    (empty when nothing was): smaller images are padded with black, others centre-cropped to a square and resized."""
    size, channels = sample_size(model), model.config.in_channels
    w, h = image.size
    if w < 1 or h < 1:
        raise AppError(f"the image is empty ({w}x{h} pixels).")
    if (w, h) == (size, size):
        note = ""
    elif max(w, h) <= size:
        note = f"padded from {w}x{h} to {size}x{size} with black (the tokenizer's input size)"
    elif w == h:
        note = f"resized from {w}x{h} to {size}x{size} (the tokenizer's input size)"
    else:
        note = f"centre-cropped from {w}x{h} to a square and resized to {size}x{size} (the tokenizer's input size)"
    if channels == 1 and image.mode not in ("L", "1", "I", "I;16", "F"):
        note = (note + "; " if note else "") + "converted to grey (the tokenizer reads one channel)"
    pixels = ImageTransform(size, channels, random_crop=False, flip=False)(image)
    return pixels.unsqueeze(0), note


def upscale(image: Image.Image, target: int) -> Image.Image:
    """Nearest-neighbour upscale by the integer factor that brings the longer side closest to ``target``."""
    factor = max(1, round(target / max(image.size)))
    return image.resize((image.width * factor, image.height * factor), Image.NEAREST)


def to_pil(x: torch.Tensor) -> Image.Image:
    """One image (C, H, W) in [-1, 1] -> PIL (grey or RGB)."""
    array = ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    array = array[0].numpy() if array.shape[0] == 1 else array.permute(1, 2, 0).numpy()
    return Image.fromarray(array)


def code_colours(ids: np.ndarray) -> np.ndarray:
    """Token ids (...) -> RGB uint8 (..., 3): hue from the golden-ratio sequence, so equal ids share a colour and
    neighbouring ids differ."""
    flat = np.asarray(ids).reshape(-1)
    rgb = [
        colorsys.hsv_to_rgb((int(i) * 0.6180339887) % 1.0, 0.55 + 0.4 * ((int(i) * 7) % 3) / 2, 0.95)
        for i in flat
    ]
    return (np.asarray(rgb).reshape(*np.shape(ids), 3) * 255).round().astype(np.uint8)


def load_font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one bitmap size
        return ImageFont.load_default()


def token_map_image(ids: torch.Tensor, target: int = DISPLAY_SIZE) -> Image.Image:
    """Token ids (h, w) -> a colour image of the grid (one cell per token, ids written in when they fit)."""
    ids = ids.cpu().numpy()
    h, w = ids.shape
    cell = max(1, round(target / max(h, w)))
    image = Image.fromarray(code_colours(ids)).resize((w * cell, h * cell), Image.NEAREST)
    if cell >= 24:
        draw = ImageDraw.Draw(image)
        font = load_font(max(8, cell // 4))
        for r in range(h):
            for c in range(w):
                draw.text(
                    ((c + 0.5) * cell, (r + 0.5) * cell),
                    str(int(ids[r, c])),
                    fill=(0, 0, 0),
                    font=font,
                    anchor="mm",
                )
    return image


def figure_to_image(fig) -> Image.Image:
    import matplotlib.pyplot as plt

    fig.canvas.draw()
    image = Image.fromarray(np.asarray(fig.canvas.buffer_rgba())[..., :3].copy())
    plt.close(fig)
    return image


def usage_figure(ids: torch.Tensor, test_counts: np.ndarray, test_images: int, dataset: str) -> Image.Image:
    """This image's code histogram against the codebook's usage on the test split, codes ranked by test-split use."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = np.argsort(-test_counts, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(1, len(order) + 1)
    codes, counts = np.unique(ids.cpu().numpy().reshape(-1), return_counts=True)
    unseen = int((test_counts[codes] == 0).sum())
    used = int((test_counts > 0).sum())
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6.4, 4.6), dpi=100, sharex=True, height_ratios=(3, 2))
    top.plot(np.arange(1, len(order) + 1), test_counts[order] + 0.5, color="0.45", lw=1.2,
             label=f"{dataset} test split ({test_images} images): {used}/{len(test_counts)} codes used")  # fmt: skip
    top.scatter(rank[codes], test_counts[codes] + 0.5, s=14, color="tab:red", zorder=3,
                label=f"this image: {len(codes)} distinct codes, {unseen} unseen on the test split")  # fmt: skip
    top.set_yscale("log")
    top.set_ylim(0.3, (test_counts.max() + 0.5) * 4)
    top.set_ylabel("test-split count (+0.5)")
    top.legend(fontsize=7, loc="upper right")
    top.grid(alpha=0.3, which="both")
    bottom.vlines(rank[codes], 0, counts, color="tab:red", lw=1.5)
    bottom.set_ylabel("count in this image")
    bottom.set_xlabel("code rank on the test split (most used first)")
    bottom.set_xscale("log")
    bottom.set_xlim(0.8, len(order) * 1.25)
    bottom.set_ylim(0, counts.max() * 1.15)
    bottom.grid(alpha=0.3)
    fig.tight_layout(rect=(0, 0, 1, 0.95))  # room above for the page's label
    return figure_to_image(fig)


# ---------------------------------------------------------------------------------------------------- logic
class Demo:
    """What the page calls; no gradio in here except the progress callback, so tests can call it directly."""

    def __init__(self, models: Models, usage_dataset: str = "fashion_mnist", usage_images: int | None = None):
        self.models, self.usage_dataset, self.usage_images = models, usage_dataset, usage_images
        self._usage: dict[str, tuple[np.ndarray, int]] = {}
        self._lock = threading.Lock()
        self._fmnist: tuple[np.ndarray, np.ndarray] | None = None

    # -------------------------------------------------------------- bundled images
    def bundled_choices(self) -> list[str]:
        choices = []
        try:
            _, labels = self._fashion_mnist()
            for c in range(len(FASHION_MNIST_CLASSES)):
                for i in np.flatnonzero(labels == c)[: FASHION_MNIST_PICKS // len(FASHION_MNIST_CLASSES)]:
                    choices.append(f"Fashion-MNIST test #{i}: {FASHION_MNIST_CLASSES[c]}")
        except FileNotFoundError:
            pass  # no Debian dataset here: photos and uploads still work
        try:
            import skimage.data  # noqa: F401

            choices += [f"photo: {name}" for name in BUNDLED_PHOTOS]
        except ImportError:
            pass
        return choices

    def _fashion_mnist(self) -> tuple[np.ndarray, np.ndarray]:
        if self._fmnist is None:
            self._fmnist = load_fashion_mnist("test")
        return self._fmnist

    def bundled_image(self, choice: str) -> Image.Image:
        if choice.startswith("Fashion-MNIST test #"):
            index = int(choice.removeprefix("Fashion-MNIST test #").split(":")[0])
            return Image.fromarray(self._fashion_mnist()[0][index])
        if choice.startswith("photo: ") and choice.removeprefix("photo: ") in BUNDLED_PHOTOS:
            import skimage.data

            return Image.fromarray(getattr(skimage.data, choice.removeprefix("photo: "))())
        raise AppError(f"unknown bundled image {choice!r}; pick one from the list or upload a file.")

    def input_image(self, choice: str | None, upload: str | None) -> tuple[Image.Image, str]:
        """The upload when there is one, else the bundled pick; with a label saying which."""
        if upload:
            return read_image(upload), f"uploaded {Path(upload).name}"
        if not choice:
            raise AppError("pick a bundled image or upload one.")
        return self.bundled_image(choice), choice

    # -------------------------------------------------------------- tokenizers
    def tokenizer(self, name: str):
        if name not in self.models.tokenizers:
            raise AppError(f"no tokenizer {name!r} loaded (loaded: {list(self.models.tokenizers)}).")
        return self.models.tokenizers[name]

    def test_usage(self, name: str, progress=None) -> tuple[np.ndarray, int]:
        """Per-code counts of tokenizer ``name`` over the test split (``usage_images`` of it), computed once."""
        with self._lock:
            if name not in self._usage:
                model = self.tokenizer(name)
                dataset = load_image_dataset(self.usage_dataset, "test")
                n = len(dataset) if self.usage_images is None else min(len(dataset), self.usage_images)
                transform = ImageTransform(
                    sample_size(model), model.config.in_channels, random_crop=False, flip=False
                )
                images = torch.utils.data.Subset(TransformedImages(dataset, transform), range(n))
                loader = torch.utils.data.DataLoader(images, batch_size=250, collate_fn=collate_images)
                usage = CodebookUsage(model.codebook_size)
                for i, batch in enumerate(loader):
                    if progress is not None:
                        progress((i, len(loader)), desc=f"{name}: codebook usage on the test split (once)")
                    if batch["pixel_values"] is not None:
                        with torch.no_grad():
                            usage.update(model.tokenize(batch["pixel_values"].to(model.device)).cpu())
                self._usage[name] = (usage.counts.numpy(), n)
            return self._usage[name]

    @torch.no_grad()
    def run_tokenizer(self, name: str, image: Image.Image) -> dict:
        model = self.tokenizer(name)
        x, note = prepare_image(image, model)
        x = x.to(model.device, model.dtype)
        ids = model.tokenize(x)  # (1, h, w)
        rec = model.detokenize(ids).float().clamp(-1, 1)
        return {
            "input": x[0],
            "reconstruction": rec[0],
            "ids": ids[0],
            "psnr": float(psnr(rec, x.float())[0]),
            "ssim": float(ssim(rec, x.float())[0]),
            "note": note,
        }

    def tokenize(self, name: str, choice: str | None, upload: str | None, progress=None):
        """-> original, reconstruction, token map, usage figure (PIL) and a Markdown summary."""
        image, label = self.input_image(choice, upload)
        out = self.run_tokenizer(name, image)
        counts, n = self.test_usage(name, progress)
        model, ids = self.tokenizer(name), out["ids"]
        distinct = len(torch.unique(ids))
        used = int((counts > 0).sum())
        lines = [
            f"**{name}** on {label}" + (f" — *{out['note']}*" if out["note"] else ""),
            "",
            "| PSNR | SSIM | tokens | distinct codes in this image | codes used on the test split |",
            "|---|---|---|---|---|",
            f"| {out['psnr']:.2f} dB | {out['ssim']:.3f} | {ids.shape[0]}x{ids.shape[1]} | {distinct} | "
            f"{used}/{model.codebook_size} ({100 * used / model.codebook_size:.1f}%, {n} images) |",
        ]
        return (
            upscale(to_pil(out["input"]), DISPLAY_SIZE),
            upscale(to_pil(out["reconstruction"]), DISPLAY_SIZE),
            token_map_image(ids),
            usage_figure(ids, counts, n, self.usage_dataset),
            "\n".join(lines),
        )

    def compare(self, choice: str | None, upload: str | None, progress=None):
        """-> original, then reconstruction and token map of each tokenizer, and a Markdown table."""
        image, label = self.input_image(choice, upload)
        outputs, rows, notes = [], [], set()
        for name in self.models.tokenizers:
            out = self.run_tokenizer(name, image)
            counts, n = self.test_usage(name, progress)
            used = int((counts > 0).sum())
            size = self.tokenizer(name).codebook_size
            outputs += [upscale(to_pil(out["reconstruction"]), DISPLAY_SIZE), token_map_image(out["ids"])]
            rows.append(
                f"| {name} | {out['psnr']:.2f} dB | {out['ssim']:.3f} | {len(torch.unique(out['ids']))} | "
                f"{used}/{size} ({100 * used / size:.1f}%) |"
            )
            notes.add(out["note"])
            original = out["input"]
        text = [f"On {label}" + "".join(f" — *{note}*" for note in sorted(notes) if note), "",
                "| tokenizer | PSNR | SSIM | distinct codes in this image | codes used on the test split |",
                "|---|---|---|---|---|", *rows]  # fmt: skip
        return (upscale(to_pil(original), DISPLAY_SIZE), *outputs, "\n".join(text))

    # -------------------------------------------------------------- generator
    def generate(
        self,
        classes: list[int],
        per_class: int,
        guidance_scale: float,
        top_k: int,
        temperature: float,
        seed: int,
        progress=None,
    ) -> tuple[Image.Image, str]:
        """A grid of samples, a row per class. Each row has its own generator, seeded from (seed, class), so a
        row does not change when other classes are picked."""
        pipe = self.models.pipeline
        if pipe is None:
            raise AppError("no generator pipeline loaded (--pipeline).")
        if not classes:
            raise AppError("pick at least one class.")
        per_class, seed = int(per_class), int(seed)
        rows, t0 = [], time.time()
        for i, c in enumerate(classes):
            if progress is not None:
                progress((i, len(classes)), desc=f"sampling {self.models.class_names[c]}")
            generator = torch.Generator(device=pipe.device).manual_seed(seed * 100_003 + int(c))
            images = pipe(
                class_labels=[int(c)] * per_class,
                guidance_scale=float(guidance_scale),
                top_k=int(top_k) if top_k and int(top_k) > 0 else None,
                temperature=float(temperature),
                generator=generator,
                output_type="pt",
            ).images  # (per_class, C, H, W) in [0, 1]
            rows.append(images * 2 - 1)
        grid = sample_grid(rows, [self.models.class_names[c] for c in classes])
        h, w = rows[0].shape[-2:]
        info = (
            f"{len(classes)} classes x {per_class} samples of {h}x{w} px in {time.time() - t0:.1f} s — guidance "
            f"{guidance_scale}, top-k {int(top_k) if top_k else 'all'}, temperature {temperature}, seed {seed}"
        )
        return grid, info


def grid_layout(rows: int, per_row: int, height: int, width: int) -> tuple[int, int, int]:
    """(grid width, grid height, upscale factor) of a sample grid."""
    factor = max(1, round(GRID_TILE / max(height, width)))
    return GRID_MARGIN + per_row * width * factor, rows * height * factor, factor


def sample_grid(rows: list[torch.Tensor], labels: list[str]) -> Image.Image:
    """Rows of images (N, C, H, W) in [-1, 1] -> one RGB image, a labelled row each."""
    n, _, h, w = rows[0].shape
    width, height, factor = grid_layout(len(rows), n, h, w)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    font = load_font(13)
    for r, (row, label) in enumerate(zip(rows, labels)):
        for j, x in enumerate(row):
            tile = to_pil(x).convert("RGB").resize((w * factor, h * factor), Image.NEAREST)
            canvas.paste(tile, (GRID_MARGIN + j * w * factor, r * h * factor))
        draw.text((6, r * h * factor + h * factor // 2), label, fill=(0, 0, 0), font=font, anchor="lm")
    return canvas


# ---------------------------------------------------------------------------------------------------- page
def build_app(demo: Demo):
    import gradio as gr

    def ui(fn):
        """Run ``fn`` with a progress bar; user errors become gradio's error pop-up with the message."""

        def wrapped(*args, progress=gr.Progress()):  # noqa: B008 (gradio injects the progress tracker)
            try:
                return fn(*args, progress=progress)
            except AppError as e:
                raise gr.Error(str(e)) from e

        return wrapped

    names = list(demo.models.tokenizers)
    bundled = demo.bundled_choices()
    with gr.Blocks(title="fullvq_hf demo") as page:
        gr.Markdown(
            "# fullvq_hf: FVQ tokenizers and a LlamaGen generator\n"
            + "Tokenizers: "
            + (
                ", ".join(f"**{n}** ({demo.models.tokenizers[n].codebook_size} codes)" for n in names)
                or "none"
            )
            + (
                f". Generator: LlamaGen, {len(demo.models.class_names)} classes."
                if demo.models.pipeline is not None
                else ". No generator loaded."
            )
        )
        with gr.Tab("Tokenize", visible=bool(names)):
            with gr.Row():
                with gr.Column(scale=1):
                    tok_model = gr.Radio(names, value=names[0] if names else None, label="tokenizer")
                    tok_pick = gr.Dropdown(bundled, value=bundled[0] if bundled else None, label="bundled image",
                                           elem_id="tok-pick")  # fmt: skip
                    tok_upload = gr.File(label="or upload an image (used instead of the bundled one)",
                                         file_types=["image"], type="filepath", elem_id="tok-upload")  # fmt: skip
                    tok_button = gr.Button("Tokenize", variant="primary", elem_id="tok-button")
                with gr.Column(scale=3):
                    tok_info = gr.Markdown(elem_id="tok-info")
                    with gr.Row():
                        tok_original = gr.Image(label="original (the tokenizer's input)", format="png",
                                                elem_id="tok-original")  # fmt: skip
                        tok_recon = gr.Image(label="reconstruction", format="png", elem_id="tok-recon")
                        tok_map = gr.Image(
                            label="token ids (a colour per code)", format="png", elem_id="tok-map"
                        )
                    tok_usage = gr.Image(label="this image's codes against the codebook's usage on the test split",
                                         format="png", elem_id="tok-usage")  # fmt: skip
            tok_button.click(
                ui(demo.tokenize),
                [tok_model, tok_pick, tok_upload],
                [tok_original, tok_recon, tok_map, tok_usage, tok_info],
            )
        with gr.Tab("Compare", visible=len(names) >= 2):
            with gr.Row():
                cmp_pick = gr.Dropdown(bundled, value=bundled[0] if bundled else None, label="bundled image")
                cmp_upload = gr.File(label="or upload an image", file_types=["image"], type="filepath")
                cmp_button = gr.Button("Compare", variant="primary", elem_id="cmp-button")
            cmp_info = gr.Markdown(elem_id="cmp-info")
            with gr.Row():
                with gr.Column():
                    cmp_outputs = [gr.Image(label="original", format="png", elem_id="cmp-original")]
                for i, name in enumerate(names):
                    with gr.Column():
                        cmp_outputs.append(
                            gr.Image(label=f"{name}: reconstruction", format="png", elem_id=f"cmp-recon-{i}")
                        )
                        cmp_outputs.append(
                            gr.Image(label=f"{name}: token ids", format="png", elem_id=f"cmp-map-{i}")
                        )
            cmp_button.click(ui(demo.compare), [cmp_pick, cmp_upload], [*cmp_outputs, cmp_info])
        with gr.Tab("Generate", visible=demo.models.pipeline is not None, elem_id="gen-tab"):
            if demo.models.pipeline is not None:
                vocab = demo.models.pipeline.transformer.config.vocab_size
                with gr.Row():
                    with gr.Column(scale=1):
                        gen_classes = gr.CheckboxGroup(demo.models.class_names, value=demo.models.class_names[:10],
                                                       type="index", label="classes (a row each)")  # fmt: skip
                        gen_n = gr.Slider(1, 12, value=8, step=1, label="samples per class")
                        gen_cfg = gr.Slider(1.0, 10.0, value=3.0, step=0.5, label="guidance scale (1 = none)")
                        gen_topk = gr.Slider(
                            0, vocab, value=min(200, vocab), step=1, label="top-k (0 = all codes)"
                        )
                        gen_temp = gr.Slider(0.0, 2.0, value=1.0, step=0.05, label="temperature (0 = greedy)")
                        gen_seed = gr.Number(0, precision=0, label="seed")
                        gen_button = gr.Button("Generate", variant="primary", elem_id="gen-button")
                    with gr.Column(scale=3):
                        gen_info = gr.Markdown(elem_id="gen-info")
                        gen_grid = gr.Image(
                            label="samples, a row per class", format="png", elem_id="gen-grid"
                        )
                gen_button.click(
                    ui(demo.generate),
                    [gen_classes, gen_n, gen_cfg, gen_topk, gen_temp, gen_seed],
                    [gen_grid, gen_info],
                )
    return page


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--demo-dir", default="outputs/demo", help="where `make demo` wrote its models (default %(default)s)"
    )
    p.add_argument("--tokenizer", help="folder or Hub id (default: DEMO_DIR/fvq/model); 'none' to leave out")
    p.add_argument(
        "--compare-tokenizer", help="folder or Hub id (default: DEMO_DIR/vq/model); 'none' to leave out"
    )
    p.add_argument(
        "--pipeline", help="LlamaGenPipeline folder or Hub id (default: DEMO_DIR/pipeline); 'none'"
    )
    p.add_argument("--tokenizer-name", default="FVQ (VQBridge)")
    p.add_argument("--compare-name", default="plain VQ")
    p.add_argument("--usage-dataset", default="fashion_mnist", help="its test split gives the codebook usage")
    p.add_argument("--usage-images", type=int, default=None, help="test images for the usage (default: all)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7860)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.tokenizer_name == args.compare_name:
        print("error: --tokenizer-name and --compare-name must differ", file=sys.stderr)
        return 2
    try:
        demo = Demo(load_models(args), args.usage_dataset, args.usage_images)
    except AppError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    import gradio as gr

    theme = gr.themes.Default(
        font=["system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]
    )  # offline
    build_app(demo).queue().launch(server_name=args.host, server_port=args.port, theme=theme, show_error=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
