"""Pieces shared by the trainers (tokenizer and LlamaGen generator): the accelerate set-up, EMA weights, the
step counters a checkpoint carries, atomic checkpoints with exact resume, and image grids.

Checkpoints are ``accelerator.save_state`` folders (weights, optimizer, registered schedulers / EMA / counters, and
every process's RNG states) named ``checkpoint-<step:08d>``. Each is written into ``.tmp-checkpoint-<step>``, marked
with a ``COMPLETE`` file, then renamed (``os.replace``), so a run killed while saving keeps its previous checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import ProjectConfiguration

CHECKPOINT_PREFIX = "checkpoint-"

__all__ = [
    "CHECKPOINT_PREFIX",
    "EMA",
    "TrainState",
    "list_checkpoints",
    "make_accelerator",
    "prepare_run_state",
    "replica_checksums",
    "resume_from",
    "save_checkpoint",
    "save_image_grid",
    "unwrap_model",
]


# ---------------------------------------------------------------------------------------------------- accelerate
def make_accelerator(
    out_dir: Path, mixed_precision: str, gradient_accumulation_steps: int, report_to: str | None
) -> Accelerator:
    """An ``Accelerator`` logging to ``out_dir/logs`` (``report_to`` None/"none"/"" disables trackers).

    In a single-process run, accelerate's process-wide state is reset first: whatever an earlier run in this
    process (a sweep, the demo, tests, a run that raised) left behind cannot pin this run's precision.
    """
    report_to = None if report_to in (None, "none", "") else report_to
    if int(os.environ.get("WORLD_SIZE", "1")) == 1 and not torch.distributed.is_initialized():
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
    return Accelerator(
        mixed_precision=mixed_precision,
        gradient_accumulation_steps=gradient_accumulation_steps,
        log_with=report_to,
        project_config=ProjectConfiguration(project_dir=str(out_dir), logging_dir=str(out_dir / "logs")),
    )


def unwrap_model(accelerator: Accelerator, model: torch.nn.Module) -> torch.nn.Module:
    """The bare model under DDP/FSDP and ``torch.compile`` wrappers."""
    unwrapped = accelerator.unwrap_model(model)
    compiled_from = getattr(unwrapped, "_orig_mod", None)
    return unwrapped if compiled_from is None else compiled_from


def replica_checksums(accelerator: Accelerator, model: torch.nn.Module) -> dict:
    """Every process's float64 sum of its parameters, and whether they agree (data-parallel replicas must)."""
    checksum = torch.stack([p.detach().double().sum() for p in model.parameters()]).sum().reshape(1)
    sums = accelerator.gather(checksum.to(accelerator.device)).tolist()
    return {"replica_checksums": sums, "replicas_identical": all(v == sums[0] for v in sums)}


# ---------------------------------------------------------------------------------------------------- state
class EMA:
    """Exponential moving average of a model's floating-point state (parameters and buffers)."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.shadow = {
            k: v.detach().clone().float() for k, v in model.state_dict().items() if v.is_floating_point()
        }

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        for k, v in model.state_dict().items():
            if k in self.shadow:
                self.shadow[k].lerp_(v.detach().float(), 1.0 - self.decay)

    def copy_to(self, model: torch.nn.Module) -> None:
        state = model.state_dict()
        model.load_state_dict(
            {k: (self.shadow[k].to(v.dtype) if k in self.shadow else v) for k, v in state.items()}
        )

    def state_dict(self) -> dict:
        return {"decay": self.decay, "shadow": self.shadow}

    def load_state_dict(self, state: dict) -> None:
        self.decay, self.shadow = state["decay"], state["shadow"]


class TrainState:
    """What a checkpoint needs besides weights, optimizers, schedulers and RNGs: the optimizer-step count ``step``
    and integer counters named by ``counters`` (attributes, all starting at 0)."""

    def __init__(self, counters: tuple[str, ...] = ()):
        self._names = ("step", *counters)
        for name in self._names:
            setattr(self, name, 0)

    def state_dict(self) -> dict:
        return {name: getattr(self, name) for name in self._names}

    def load_state_dict(self, state: dict) -> None:
        for name in self._names:
            setattr(self, name, state[name])


# ---------------------------------------------------------------------------------------------------- checkpoints
def list_checkpoints(checkpoint_dir: Path) -> list[Path]:
    """Complete checkpoints, newest first (temporary folders of interrupted saves are ignored)."""
    if not checkpoint_dir.is_dir():
        return []
    found = [p for p in checkpoint_dir.iterdir() if p.is_dir() and p.name.startswith(CHECKPOINT_PREFIX)]
    return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX) :]), reverse=True)


def save_checkpoint(
    accelerator: Accelerator, checkpoint_dir: Path, step: int, total_limit: int | None
) -> Path:
    """``save_state`` into a temporary folder, then an atomic rename: a run killed while saving leaves the
    previous checkpoint intact and no half-written ``checkpoint-*`` folder."""
    final = checkpoint_dir / f"{CHECKPOINT_PREFIX}{step:08d}"
    tmp = checkpoint_dir / f".tmp-{CHECKPOINT_PREFIX}{step:08d}"
    if accelerator.is_main_process:
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / "COMPLETE").write_text(json.dumps({"step": step, "time": time.time()}))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        if total_limit:
            for old in list_checkpoints(checkpoint_dir)[total_limit:]:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def resume_from(accelerator: Accelerator, resume: str, checkpoint_dir: Path) -> Path | None:
    """Load ``resume`` ("latest" or a folder). With "latest", a checkpoint that fails to load (truncated or
    corrupt files) is reported and the previous one is tried."""
    if resume == "latest":
        candidates = list_checkpoints(checkpoint_dir)
        if not candidates:
            accelerator.print(f"--resume latest: no checkpoint in {checkpoint_dir}; starting from scratch.")
            return None
    else:
        path = Path(resume)
        if not path.is_dir():
            raise FileNotFoundError(f"--resume {resume}: no such checkpoint folder (or use --resume latest).")
        candidates = [path]
    errors = []
    for path in candidates:
        if not (path / "COMPLETE").exists():
            errors.append(f"{path}: incomplete (no COMPLETE marker)")
            continue
        try:
            accelerator.load_state(str(path))
            for msg in errors:
                accelerator.print(f"warning: skipped unusable checkpoint {msg}")
            return path
        except Exception as e:  # truncated safetensors, missing files, ...
            errors.append(f"{path}: {type(e).__name__}: {e}")
            if resume != "latest":
                break
    raise RuntimeError("No usable checkpoint to resume from:\n  " + "\n  ".join(errors))


# ---------------------------------------------------------------------------------------------------- pictures
def save_image_grid(rows: list[torch.Tensor], path: Path, max_images: int = 8) -> None:
    """Rows of (B, C, H, W) images in [-1, 1] side by side -> PNG."""
    import numpy as np
    from PIL import Image

    tiles = []
    for row in rows:
        x = ((row[:max_images].detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().cpu()
        tiles.append(torch.cat(list(x), dim=-1))  # (C, H, B*W)
    grid = torch.cat(tiles, dim=-2).permute(1, 2, 0).numpy()
    grid = grid[..., 0] if grid.shape[-1] == 1 else grid
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(grid)).save(path)


def prepare_run_state(
    accelerator: Accelerator,
    state: TrainState,
    model: torch.nn.Module,
    cfg,
    checkpoint_dir: Path,
    project: str,
    report_to: str | None,
) -> EMA | None:
    """What both trainers do before their loop: register the counters (and EMA weights of the bare ``model`` when
    ``cfg.ema_decay > 0``) for checkpointing, resume from ``cfg.resume``, start the trackers. Returns the EMA."""
    accelerator.register_for_checkpointing(state)
    ema = None
    if cfg.ema_decay > 0:
        ema = EMA(model, cfg.ema_decay)
        accelerator.register_for_checkpointing(ema)
    if cfg.resume:
        loaded = resume_from(accelerator, cfg.resume, checkpoint_dir)
        if loaded is not None:
            accelerator.print(f"resumed from {loaded} at step {state.step}")
    if report_to:
        accelerator.init_trackers(project, config={k: v for k, v in cfg.to_dict().items() if v is not None})
    return ema
