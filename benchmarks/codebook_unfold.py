"""How the projected codebook C' = qbridge(C) of a ``cpu-fmnist-fvq`` run unfolds, from its checkpoints.

    python benchmarks/codebook_unfold.py RUN_DIR   (a run trained with --checkpoint-every N --checkpoints-total-limit none)

Per checkpoint, on 512 Fashion-MNIST test images (32,768 latents): rms / mean per-dim std / effective rank
(exp of the entropy of the normalised singular values) of C' and of the latents z; the share of codes hit; the
median distance of dead and of used codes to their nearest latent; the raw codebook's rms; and the median distance
between grid-neighbour codes over that between random pairs (near 0 would mean a smooth sheet).
"""

import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from fullvq_hf.data.images import ImageTransform, load_image_dataset
from fullvq_hf.training.config import make_config
from fullvq_hf.training.tokenizer_trainer import build_model


def effective_rank(x: torch.Tensor) -> float:
    s = torch.linalg.svdvals(x - x.mean(0))
    p = s / s.sum()
    return float(torch.exp(-(p * p.clamp_min(1e-12).log()).sum()))


def main(run: Path, num_images: int = 512) -> None:
    model = build_model(make_config({"preset": "cpu-fmnist-fvq"})).eval()
    data = load_image_dataset("fashion_mnist", split="test")
    tf = ImageTransform(32, channels=1, random_crop=False, flip=False)
    imgs = torch.stack([tf(data[i]["image"]) for i in range(num_images)])
    print("step | C' rms  std  erank | z rms  std  erank | used  dead->z  used->z | raw rms  nb/rnd")
    for ck in sorted((run / "checkpoints").glob("checkpoint-*")):
        model.load_state_dict(load_file(ck / "model.safetensors"))
        with torch.no_grad():
            cb = model.quantize.qbridge(model.quantize.embedding.weight)
            h = model.quant_conv(model.encoder(imgs))
            z = h.permute(0, 2, 3, 1).reshape(-1, h.shape[1])
            used = torch.zeros(cb.shape[0], dtype=torch.bool)
            used[torch.cdist(z, cb).argmin(1)] = True
            to_z = torch.cdist(cb, z).min(1).values
            g = int(cb.shape[0] ** 0.5)
            grid = cb.view(g, g, -1)
            nb = (grid[:, 1:] - grid[:, :-1]).norm(dim=-1).median()
            perm = torch.randperm(cb.shape[0], generator=torch.Generator().manual_seed(0))
            rnd = (cb - cb[perm]).norm(dim=-1).median()
            raw = model.quantize.embedding.weight.pow(2).mean().sqrt()
        dead = to_z[~used].median() if (~used).any() else float("nan")
        print(f"{int(ck.name.rsplit('-', 1)[1]):4d} | {cb.pow(2).mean().sqrt():.3f} {cb.std(0).mean():.3f} "
              f"{effective_rank(cb):.2f} | {z.pow(2).mean().sqrt():.3f} {z.std(0).mean():.3f} {effective_rank(z):.2f} | "
              f"{used.float().mean() * 100:5.1f}% {dead:.3f} {to_z[used].median():.3f} | {raw:.2e} {nb / rnd:.3f}",
              flush=True)  # fmt: skip


if __name__ == "__main__":
    main(Path(sys.argv[1]))
