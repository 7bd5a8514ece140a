"""The one training loop of every trainer (tokenizer, LlamaGen generator), on accelerate.

A trainer is a ``Task``: it builds its models and optimizers (``build``), its data (``build_dataloader``), does one
micro-batch (``training_step``, calling ``run.optimize(loss, part)`` for each optimizer) and exports the result
(``export``, ``results``). ``train(cfg, task)`` does the rest, the same way for both:

- checks of the launch (a multi-process launch that did not form one process group is an error naming the right
  command), of the output folder (a new run in a folder holding another run's checkpoints stops, naming
  ``--resume latest`` and ``--overwrite-output-dir``) and a lock file (a second trainer on one folder stops);
- the accelerator, lr scaling with the global batch, learning-rate schedules, ``accelerator.prepare``, optional
  ``torch.compile``, EMA weights (diffusers' ``EMAModel`` on the bare model);
- the accumulate / step / log / checkpoint cycle; one ``unwrap_model``;
- checkpoints that resume exactly and never unpickle (see below), atomic exports, teardown.

Checkpoint folder ``checkpoints/checkpoint-<step:08d>`` (written into ``.tmp-checkpoint-<step>`` then renamed):

- ``model.safetensors``, ``model_1.safetensors``, ...: weights (``accelerator.save_state``, safetensors);
- ``optimizer.bin``, ``optimizer_1.bin``, ...: optimizer states (``accelerator.save_state``; tensors and numbers
  only, read back with ``torch.load(weights_only=True)``);
- ``trainer_state.json``: step, counters, every scheduler's ``state_dict`` and the EMA's numbers;
- ``ema.safetensors``: the EMA weights, by parameter name;
- ``rng_state_<rank>.safetensors``: every process's torch / CUDA / numpy / Python RNG states (tensors + JSON);
- ``COMPLETE``: JSON with the step and the sha256 of every other file, verified before loading. A checkpoint whose
  files do not match (flipped bytes, truncation, a file replaced or added) is skipped with a warning and the
  previous one is used (``--resume latest``).

accelerate's own pickled files (``random_states_*.pkl``; ``custom_checkpoint_*.pkl`` of
``register_for_checkpointing``, not used here) are never written into a checkpoint.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import random
import shutil
import socket
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import ProjectConfiguration, set_seed
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from .config import TrainingConfig, explicit_options
from .schedules import get_scheduler, scale_lr

__all__ = [
    "CHECKPOINT_PREFIX",
    "CPU_MULTIPROCESS_COMMAND",
    "Part",
    "Run",
    "RunError",
    "RunLock",
    "Task",
    "TrainState",
    "atomic_dir",
    "check_launch",
    "check_output_dir",
    "list_checkpoints",
    "make_accelerator",
    "replica_checksums",
    "check_global_batch",
    "resolve_epochs",
    "schedule_options",
    "save_image_grid",
    "train",
    "unwrap_model",
    "verify_checkpoint",
]

CHECKPOINT_PREFIX = "checkpoint-"
COMPLETE = "COMPLETE"
TRAINER_STATE = "trainer_state.json"
EMA_WEIGHTS = "ema.safetensors"
LOCK_FILE = ".train.lock"
LOG_HISTORY = "log_history.jsonl"  # one JSON object per log step: {"step": ..., "loss": ..., "usage": ..., ...}
# what a run writes into its output folder (removed by --overwrite-output-dir; nothing else is touched)
RUN_OUTPUTS = (
    "checkpoints",
    "model",
    "model-train",
    "samples",
    "logs",
    "results.json",
    "training_config.json",
    LOG_HISTORY,
)
CPU_MULTIPROCESS_COMMAND = (
    "ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2 --num_machines 1 "
    "--mixed_precision no --dynamo_backend no <script> ..."
)


class RunError(RuntimeError):
    """A problem with how a run was started (launch, output folder, lock, checkpoints); the message names the fix."""


# ---------------------------------------------------------------------------------------------------- launch checks
def check_launch(num_processes: int, env: dict[str, str] | None = None) -> None:
    """Refuse the two launches that silently do something other than asked.

    - ``accelerate launch --cpu --num_processes N`` (no ``--multi_gpu``): accelerate's simple launcher starts ONE
      process (it sets ``MASTER_ADDR``/``MASTER_PORT`` for N but no ``WORLD_SIZE``).
    - ``accelerate launch --multi_gpu --num_processes N`` on a machine without GPUs and without
      ``ACCELERATE_USE_CPU=true``: N processes start (``WORLD_SIZE=N``) but each is a separate single-process run
      (``num_processes == 1``): N independent trainers on one folder.

    Args:
        num_processes: ``accelerator.num_processes`` of this process.
        env: The environment (default ``os.environ``).
    """
    env = dict(os.environ if env is None else env)
    world_size = int(env.get("WORLD_SIZE", "1") or 1)
    if world_size > 1 and num_processes == 1:
        raise RunError(
            f"{world_size} processes were started (WORLD_SIZE={world_size}) but they did not join one process group "
            "(no GPU, and ACCELERATE_USE_CPU is not set): they would train independently on one folder. On CPUs "
            f"run: {CPU_MULTIPROCESS_COMMAND}"
        )
    mpi = any(k in env for k in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE", "PMI_RANK"))
    launched = "ACCELERATE_MIXED_PRECISION" in env and "MASTER_PORT" in env and "MASTER_ADDR" in env
    if launched and "WORLD_SIZE" not in env and not mpi and num_processes == 1:
        raise RunError(
            "`accelerate launch --cpu --num_processes N` starts only ONE process (accelerate's simple launcher). "
            f"For N CPU processes run: {CPU_MULTIPROCESS_COMMAND}; for one process, drop --num_processes (or, if "
            "MASTER_ADDR and MASTER_PORT are exported in your shell, unset them: they look like that launch)."
        )


# ---------------------------------------------------------------------------------------------------- output folder
def check_output_dir(out_dir: Path, resume: str | None, overwrite: bool) -> None:
    """A new run (no ``resume``) may not start in a folder that holds another run's checkpoints or exports: a
    later ``--resume latest`` would continue the other run. ``overwrite`` allows it (the old outputs are removed by
    ``clear_run_outputs``)."""
    if resume or overwrite:
        return
    old = list_checkpoints(out_dir / "checkpoints")
    exported = [name for name in ("model", "model-train") if (out_dir / name).is_dir()]
    if old or exported:
        what = (
            f"checkpoints up to {old[0].name}" if old else "an exported model (" + ", ".join(exported) + ")"
        )
        raise RunError(
            f"output_dir {out_dir} holds another run's {what}. Continue it with --resume latest, or start over "
            "with --overwrite-output-dir (removes that run's checkpoints and exports), or choose another --output-dir."
        )


def start_log_history(path: Path, step: int) -> None:
    """Make ``path`` (``LOG_HISTORY``) hold exactly the logs of steps <= ``step``: empty for a new run; for a
    resumed one, the logs up to its checkpoint (later lines, from the interrupted run, are dropped)."""
    kept = []
    if step > 0 and path.is_file():
        for line in path.read_text().splitlines():
            with contextlib.suppress(ValueError, AttributeError):
                if json.loads(line).get("step", step + 1) <= step:
                    kept.append(line + "\n")
    write_text_atomic(path, "".join(kept))


def clear_run_outputs(out_dir: Path) -> None:
    """Remove what a previous run wrote into ``out_dir`` (``RUN_OUTPUTS`` only)."""
    for name in RUN_OUTPUTS:
        path = out_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


class RunLock:
    """An exclusive lock on an output folder: ``out_dir/.train.lock`` held with ``fcntl.flock``.

    The kernel releases the lock when its process ends, however it ends: the lock of a killed run is stale and
    the next run takes it. The file records the holder's pid and host for the error message.
    """

    def __init__(self, out_dir: Path):
        self.path = Path(out_dir) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 4096).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunError(
                f"Another trainer is running in output_dir {self.path.parent} (lock {self.path}: {holder}). "
                "Wait for it to finish, stop it, or choose another --output-dir."
            ) from None
        os.ftruncate(fd, 0)
        os.write(
            fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "time": time.time()}).encode()
        )
        os.fsync(fd)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Write a folder atomically: yields ``.tmp-<name>`` next to ``final``; on success the old ``final`` (if any)
    is moved aside and the new one renamed into place. A run killed while writing leaves ``final`` untouched."""
    final = Path(final)
    tmp = final.parent / f".tmp-{final.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    yield tmp
    old = final.parent / f".old-{final.name}"
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def write_text_atomic(path: Path, text: str) -> None:
    tmp = path.parent / f".tmp-{path.name}"
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2))


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
    """The bare model under DDP/FSDP and ``torch.compile`` wrappers (the one unwrap helper of the package)."""
    return accelerator.unwrap_model(model, keep_torch_compile=False)


def replica_checksums(accelerator: Accelerator, model: torch.nn.Module) -> dict:
    """Every process's float64 sum of its parameters and floating-point buffers (e.g. code offsets), and whether
    they agree (data-parallel replicas must)."""
    tensors = [*model.parameters(), *(b for b in model.buffers() if b.is_floating_point())]
    checksum = torch.stack([t.detach().double().sum() for t in tensors]).sum().reshape(1)
    sums = accelerator.gather(checksum.to(accelerator.device)).tolist()
    return {"replica_checksums": sums, "replicas_identical": all(v == sums[0] for v in sums)}


# ---------------------------------------------------------------------------------------------------- state
class TrainState:
    """The optimizer-step count ``step`` and integer counters named by ``counters`` (attributes, from 0)."""

    def __init__(self, counters: tuple[str, ...] = ()):
        self._names = ("step", *counters)
        for name in self._names:
            setattr(self, name, 0)

    def state_dict(self) -> dict:
        return {name: int(getattr(self, name)) for name in self._names}

    def load_state_dict(self, state: dict) -> None:
        for name in self._names:
            setattr(self, name, int(state[name]))


def _rng_state() -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """This process's RNG states as tensors + JSON strings (no pickle)."""
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda_{i}"] = s
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    tensors["numpy_keys"] = torch.from_numpy(keys.astype(np.int64))
    version, py_state, py_gauss = random.getstate()
    meta = {
        "numpy": json.dumps([kind, int(pos), int(has_gauss), float(gauss)]),
        "python": json.dumps([version, list(py_state), py_gauss]),
    }
    return tensors, meta


def _set_rng_state(tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> None:
    torch.set_rng_state(tensors["torch"])
    cuda = sorted(k for k in tensors if k.startswith("cuda_"))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensors[k] for k in cuda])
    kind, pos, has_gauss, gauss = json.loads(meta["numpy"])
    np.random.set_state((kind, tensors["numpy_keys"].numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, py_state, py_gauss = json.loads(meta["python"])
    random.setstate((version, tuple(py_state), py_gauss))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def list_checkpoints(checkpoint_dir: Path) -> list[Path]:
    """Complete-looking checkpoints, newest first (temporary folders of interrupted saves are ignored)."""
    if not checkpoint_dir.is_dir():
        return []
    found = [
        p for p in checkpoint_dir.iterdir()
        if p.is_dir() and p.name.startswith(CHECKPOINT_PREFIX) and p.name[len(CHECKPOINT_PREFIX):].isdigit()
    ]  # fmt: skip
    return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX) :]), reverse=True)


def verify_checkpoint(path: Path) -> str | None:
    """None when every file of the checkpoint matches the sha256 in its ``COMPLETE`` record and no other file is
    there; else what is wrong."""
    marker = path / COMPLETE
    if not marker.is_file():
        return "incomplete (no COMPLETE record)"
    try:
        record = json.loads(marker.read_text())
        expected = dict(record["sha256"])
    except (ValueError, KeyError, TypeError):
        return "COMPLETE record unreadable or without checksums (written by an older version?)"
    present = {str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()} - {COMPLETE}
    missing, extra = sorted(set(expected) - present), sorted(present - set(expected))
    if missing:
        return f"missing files {missing}"
    if extra:
        return f"unexpected files {extra} (not written by the trainer)"
    for name, digest in expected.items():
        if _sha256(path / name) != digest:
            return f"{name} does not match its recorded sha256 (damaged or replaced)"
    return None


# ---------------------------------------------------------------------------------------------------- task & run
@dataclass
class Part:
    """One trained module with its optimizer (and, set by the loop, its lr scheduler). ``model`` is the prepared
    (and, for the first part under ``--compile``, compiled) module after ``train`` has prepared it."""

    name: str
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any = None


class Task:
    """What a trainer supplies to ``train``. Subclasses set ``project`` (tracker project name), ``counters`` (extra
    ``TrainState`` counters), ``reference_batch`` (global batch of the base lr) and implement the methods."""

    project: str = "fullvq"
    description: str = "train"
    counters: tuple[str, ...] = ()
    reference_batch: int = 128
    device_specific_seed: bool = False  # reseed every process differently after prepare (dropout streams)

    def build(self, accelerator: Accelerator, lr: float) -> list[Part]:
        """Models and optimizers; the first part is the trained model (EMA, compile, export)."""
        raise NotImplementedError

    def build_dataloader(self, run: Run, start_step: int):
        raise NotImplementedError

    def num_train_examples(self) -> int | None:
        """Number of training examples (called after ``build``, only when ``num_epochs`` / ``warmup_epochs`` ask
        for it); None when unknown (e.g. a streamed dataset without split sizes)."""
        return None

    def training_step(self, run: Run, batch: Any) -> dict[str, torch.Tensor] | None:
        """One micro-batch: forward, ``run.optimize(loss, part)`` per optimizer; returns scalars to log (means over
        the log window), or None to skip the batch."""
        raise NotImplementedError

    def log_metrics(self, run: Run) -> dict[str, float]:
        """Extra values at each log step."""
        return {}

    def on_step_end(self, run: Run) -> None:
        """After each optimizer step (sample grids, ...)."""

    def state_dict(self) -> dict[str, Any]:
        """The task's own training state (JSON), saved in each checkpoint's trainer state and resumed. Called on
        every process at the same point (so it may reduce across them); the main process's return is saved."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned (``{}`` from a checkpoint that has none), on every process."""

    def export(self, run: Run, model: torch.nn.Module) -> None:
        """Save the trained (bare, EMA-applied) model; main process only. Use ``atomic_dir``."""
        raise NotImplementedError

    def results(self, run: Run, model: torch.nn.Module) -> dict[str, Any]:
        """Final results (every process; may evaluate)."""
        return {}


@dataclass
class Run:
    """The state of a running training, given to the task's methods."""

    cfg: TrainingConfig
    accelerator: Accelerator
    parts: list[Part]
    state: TrainState
    out_dir: Path
    lr: float
    global_batch: int
    ema: Any = None
    first_logs: dict[str, float] | None = None
    last_logs: dict[str, float] = field(default_factory=dict)
    start_step: int = 0
    train_time: float = 0.0
    task: Task | None = None
    rng_to_restore: tuple[dict[str, torch.Tensor], dict[str, str]] | None = None

    def restore_rng(self) -> None:
        """Set the RNG states of the resumed checkpoint. Called once the data iterator exists: creating one draws
        a seed from torch's global RNG (``DataLoader``), which the uninterrupted run did before its first step, so
        restoring earlier would shift every later draw (a restart's noise, dropout) off the uninterrupted run's."""
        if self.rng_to_restore is not None:
            _set_rng_state(*self.rng_to_restore)
            self.rng_to_restore = None

    @property
    def model(self) -> torch.nn.Module:
        return self.parts[0].model

    def bare(self, index: int = 0) -> torch.nn.Module:
        return unwrap_model(self.accelerator, self.parts[index].model)

    def optimize(self, loss: torch.Tensor, part: Part) -> torch.Tensor | None:
        """Backward, clip (at a sync step; ``max_grad_norm`` 0 only measures), step and clear ``part``'s
        optimizer. Returns the gradient norm at sync steps."""
        acc = self.accelerator
        acc.backward(loss)
        grad_norm = None
        if acc.sync_gradients:
            max_norm = self.cfg.max_grad_norm if self.cfg.max_grad_norm > 0 else float("inf")
            grad_norm = acc.clip_grad_norm_(part.model.parameters(), max_norm)
        part.optimizer.step()
        part.optimizer.zero_grad(set_to_none=True)
        return grad_norm

    # ------------------------------------------------------------------------------------------------ checkpoints
    @property
    def checkpoint_dir(self) -> Path:
        return self.out_dir / "checkpoints"

    def _trainer_state(self, task_state: dict) -> dict:
        state = {"step_state": self.state.state_dict(),
                 "schedulers": {p.name: p.scheduler.state_dict() for p in self.parts}}  # fmt: skip
        if self.ema is not None:
            state["ema"] = {k: v for k, v in self.ema.state_dict().items() if k != "shadow_params"}
        if task_state:
            state["task"] = task_state
        return state

    def save_checkpoint(self) -> Path:
        """``save_state`` (weights, optimizers) + trainer state, EMA and RNGs in JSON/safetensors, checksums, then
        an atomic rename: a run killed while saving keeps its previous checkpoint intact."""
        acc, step = self.accelerator, self.state.step
        final = self.checkpoint_dir / f"{CHECKPOINT_PREFIX}{step:08d}"
        tmp = self.checkpoint_dir / f".tmp-{CHECKPOINT_PREFIX}{step:08d}"
        if acc.is_main_process:
            self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
        acc.wait_for_everyone()
        acc.save_state(str(tmp), safe_serialization=True)
        tensors, meta = _rng_state()
        save_file(tensors, str(tmp / f"rng_state_{acc.process_index}.safetensors"), metadata=meta)
        task_state = self.task.state_dict() if self.task is not None else {}  # every process: it may reduce
        acc.wait_for_everyone()
        if acc.is_main_process:
            for pickled in tmp.glob("*.pkl"):  # accelerate's pickled RNG states: ours are in rng_state_*
                pickled.unlink()
            (tmp / TRAINER_STATE).write_text(json.dumps(self._trainer_state(task_state), indent=1))
            if self.ema is not None:
                names = [n for n, _ in self.bare().named_parameters()]
                save_file({n: s.detach().contiguous() for n, s in zip(names, self.ema.shadow_params)},
                          str(tmp / EMA_WEIGHTS))  # fmt: skip
            files = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file())
            record = {"step": step, "time": time.time(), "sha256": {f: _sha256(tmp / f) for f in files}}
            (tmp / COMPLETE).write_text(json.dumps(record, indent=1))
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            limit = self.cfg.checkpoints_total_limit
            if limit:
                for old in list_checkpoints(self.checkpoint_dir)[limit:]:
                    shutil.rmtree(old, ignore_errors=True)
        acc.wait_for_everyone()
        return final

    def _load_checkpoint(self, path: Path) -> None:
        acc = self.accelerator
        acc.load_state(str(path), load_kwargs={"weights_only": True})
        trainer_state = json.loads((path / TRAINER_STATE).read_text())
        self.state.load_state_dict(trainer_state["step_state"])
        for part in self.parts:
            part.scheduler.load_state_dict(trainer_state["schedulers"][part.name])
        if self.task is not None:
            self.task.load_state_dict(trainer_state.get("task", {}))
        if self.ema is not None:
            if "ema" in trainer_state:
                shadow = load_file(str(path / EMA_WEIGHTS), device=str(acc.device))
                names = [n for n, _ in self.bare().named_parameters()]
                self.ema.load_state_dict(
                    {**trainer_state["ema"], "shadow_params": [shadow[n] for n in names]}
                )
            else:
                acc.print(f"warning: {path} has no EMA weights; the EMA starts from the resumed weights.")
        rng = path / f"rng_state_{acc.process_index}.safetensors"
        if rng.is_file():
            from safetensors import safe_open

            with safe_open(str(rng), framework="pt") as f:
                meta = f.metadata()
                tensors = {k: f.get_tensor(k) for k in f.keys()}
            self.rng_to_restore = (tensors, meta)  # set once the data iterator exists (see ``restore_rng``)
        else:
            acc.print(f"warning: {path} has no RNG state for process {acc.process_index} (resumed with another "
                      "number of processes?); the run continues but not bit-identically.")  # fmt: skip

    def resume(self, resume: str) -> Path | None:
        """Load ``resume`` ("latest" or a folder). A checkpoint whose checksums do not match, or that fails to load,
        is reported and (with "latest") the previous one is tried."""
        acc = self.accelerator
        if resume == "latest":
            candidates = list_checkpoints(self.checkpoint_dir)
            if not candidates:
                acc.print(f"--resume latest: no checkpoint in {self.checkpoint_dir}; starting from scratch.")
                return None
        else:
            path = Path(resume)
            if not path.is_dir():
                raise RunError(f"--resume {resume}: no such checkpoint folder (or use --resume latest).")
            candidates = [path]
        errors = []
        for path in candidates:
            problem = verify_checkpoint(path)
            if problem is None:
                try:
                    self._load_checkpoint(path)
                    return path
                except Exception as e:  # a checkpoint of another model or version
                    problem = f"{type(e).__name__}: {e}"
            errors.append(f"{path}: {problem}")
            acc.print(f"warning: skipped unusable checkpoint {path}: {problem}")
            warnings.warn(f"skipped unusable checkpoint {path}: {problem}", stacklevel=2)
        raise RunError(
            "No usable checkpoint to resume from:\n  "
            + "\n  ".join(errors)
            + "\nStart a new run with --overwrite-output-dir, or pass --resume <checkpoint folder>."
        )


# ---------------------------------------------------------------------------------------------------- pictures
def save_image_grid(rows: list[torch.Tensor], path: Path, max_images: int = 8) -> None:
    """Rows of (B, C, H, W) images in [-1, 1] side by side -> PNG."""
    from PIL import Image

    tiles = []
    for row in rows:
        x = ((row[:max_images].detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().cpu()
        tiles.append(torch.cat(list(x), dim=-1))  # (C, H, B*W)
    grid = torch.cat(tiles, dim=-2).permute(1, 2, 0).numpy()
    grid = grid[..., 0] if grid.shape[-1] == 1 else grid
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(grid)).save(path)


# ---------------------------------------------------------------------------------------------------- run length
ANNEALING = ("annealing", "annealing-cosine")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _pick(cfg: TrainingConfig, derived: str, base: str) -> str | None:
    """How the ``derived`` option (e.g. ``num_epochs``) relates to ``base`` (``max_steps``): None when unset or
    overridden, "derive" when it decides ``base``, "check" when both were given explicitly (a recorded
    ``training_config.json`` holds both: they must then agree). Later wins as in ``make_config``: a ``base`` the user
    set explicitly overrides a ``derived`` that came from a preset (which is then cleared, so
    ``training_config.json`` records what was used)."""
    if getattr(cfg, derived) is None:
        return None
    given = explicit_options(cfg)
    if base in given and derived not in given:
        setattr(cfg, derived, None)
        return None
    return "check" if base in given else "derive"


def check_global_batch(cfg: TrainingConfig, num_processes: int) -> None:
    """With ``global_batch_size`` set (a recipe's: the official scripts' ``--global-batch-size``), batch_size x
    processes x accumulation must equal it, since the lr scaling, the steps of an epoch and the recipe's results
    assume it. Otherwise a ValueError naming the options that get there (or ``--global-batch-size none``)."""
    want = cfg.global_batch_size
    if want is None:
        return
    have = cfg.batch_size * num_processes * cfg.gradient_accumulation_steps
    if have == want:
        return
    ways = []
    if want % (cfg.batch_size * num_processes) == 0:
        ways.append(f"--gradient-accumulation-steps {want // (cfg.batch_size * num_processes)}")
    if want % (num_processes * cfg.gradient_accumulation_steps) == 0:
        ways.append(f"--batch-size {want // (num_processes * cfg.gradient_accumulation_steps)}")
    how = " or ".join(ways) or "a per-process batch and accumulation whose product with the processes is it"
    raise ValueError(
        f"This recipe trains with a global batch of {want}, but --batch-size {cfg.batch_size} x {num_processes} "
        f"process(es) x --gradient-accumulation-steps {cfg.gradient_accumulation_steps} = {have}: pass {how}; or "
        "--global-batch-size none to train with this batch (the lr scales with it when scale_lr)."
    )


def resolve_epochs(cfg: TrainingConfig, num_examples: int | None, global_batch: int) -> None:
    """``num_epochs`` -> ``max_steps`` and ``warmup_epochs`` -> ``warmup_steps``, in optimizer steps of
    ``steps_per_epoch = num_examples // global_batch`` (the official loaders drop the last partial batch:
    FVQ-*.sh on ImageNet-1k, 1,281,167 // 128 = 10,009 steps an epoch). ``num_examples`` None (unknown length) is
    a ValueError naming the step options to pass instead."""
    pairs = (("num_epochs", "max_steps"), ("warmup_epochs", "warmup_steps"))
    todo = [(d, b, how) for d, b in pairs if (how := _pick(cfg, d, b))]
    if not todo:
        return
    if num_examples is None:
        names = " and ".join(f"{_flag(d)} {getattr(cfg, d)}" for d, _, _ in todo)
        raise ValueError(
            f"{names} need(s) the number of training examples, which is unknown here (a streamed dataset without "
            f"split sizes in its info, or a trainer that does not count its data); pass "
            f"{' and '.join(_flag(b) for _, b, _ in todo)} instead."
        )
    steps_per_epoch = num_examples // global_batch
    if steps_per_epoch < 1:
        raise ValueError(
            f"The training set has {num_examples} examples, fewer than one global batch of {global_batch}: an epoch "
            f"has no step. Use a smaller batch, or give {_flag(todo[0][1])}."
        )
    for derived, base, how in todo:
        epochs = getattr(cfg, derived)
        if epochs < 0:
            raise ValueError(f"{_flag(derived)} must be >= 0, got {epochs}.")
        steps = math.floor(epochs * steps_per_epoch + 1e-9)
        if base == "max_steps" and steps < 1:
            raise ValueError(
                f"{_flag(derived)} {epochs} is less than one step ({steps_per_epoch} steps an epoch)."
            )
        if how == "check" and getattr(cfg, base) != steps:
            raise ValueError(
                f"{_flag(derived)} {epochs} ({steps} steps of {steps_per_epoch} an epoch here) and {_flag(base)} "
                f"{getattr(cfg, base)} both set the run length and disagree; give one of them (or "
                f"{_flag(derived)} none)."
            )
        setattr(cfg, base, steps)


def schedule_options(cfg: TrainingConfig) -> dict[str, float]:
    """The keyword options of ``get_scheduler`` the config sets (``hold_fraction``, ``warmup_start_factor``)."""
    options: dict[str, float] = {}
    hold = cfg.hold_fraction
    if hold is not None:
        if cfg.lr_scheduler not in ANNEALING:
            raise ValueError(
                f"--hold-fraction {hold} applies to the annealing schedules {ANNEALING}, not --lr-scheduler "
                f"{cfg.lr_scheduler}; drop it or choose an annealing schedule."
            )
        options["hold_fraction"] = float(hold)
    start = cfg.warmup_start_factor
    if start is not None:
        options["start_factor"] = float(start)
    return options


def _schedule(cfg: TrainingConfig, optimizer: torch.optim.Optimizer):
    # a warm-up longer than a (short) run is clipped, so a 3-step smoke run of any preset works
    warmup_steps = min(cfg.warmup_steps, max(0, cfg.max_steps - 1))
    return get_scheduler(cfg.lr_scheduler, optimizer, cfg.max_steps, warmup_steps, **schedule_options(cfg))


# ---------------------------------------------------------------------------------------------------- the loop
def _broadcast_ok(accelerator: Accelerator, ok: bool) -> bool:
    if accelerator.num_processes == 1:
        return ok
    from accelerate.utils import broadcast

    flag = torch.tensor([1 if ok else 0], device=accelerator.device)
    return bool(broadcast(flag).item())


def train(cfg: TrainingConfig, task: Task) -> dict[str, Any]:
    """Run ``task`` as described by ``cfg``: a trainer's options, a ``TrainingConfig`` subclass whose shared
    fields are the ones used here (the trainer's own fields are its task's business); ``cfg.to_dict()`` is recorded
    in ``training_config.json``. Returns the results (also written to ``output_dir/results.json``).

    Run length: ``global_batch_size`` is checked (``check_global_batch``), ``num_epochs`` / ``warmup_epochs`` set
    ``max_steps`` / ``warmup_steps`` from ``task.num_train_examples()`` (see ``resolve_epochs``); ``cfg`` is
    updated in place, so ``training_config.json`` records the steps actually run."""
    if cfg.max_steps < 1 or cfg.batch_size < 1 or cfg.gradient_accumulation_steps < 1:
        raise ValueError("max_steps, batch_size and gradient_accumulation_steps must be >= 1.")
    schedule_options(cfg)  # option errors before anything starts
    out_dir = Path(cfg.output_dir)
    report_to = None if cfg.report_to in (None, "none", "") else cfg.report_to
    accelerator = make_accelerator(out_dir, cfg.mixed_precision, cfg.gradient_accumulation_steps, report_to)
    check_launch(accelerator.num_processes)
    check_output_dir(out_dir, cfg.resume, cfg.overwrite_output_dir)
    set_seed(cfg.seed)  # the same initial weights in every process

    check_global_batch(cfg, accelerator.num_processes)
    global_batch = cfg.batch_size * accelerator.num_processes * cfg.gradient_accumulation_steps
    lr = (
        scale_lr(cfg.learning_rate, global_batch, task.reference_batch) if cfg.scale_lr else cfg.learning_rate
    )
    parts = task.build(
        accelerator, lr
    )  # user errors about the data or model surface before anything is written
    if cfg.num_epochs is not None or cfg.warmup_epochs is not None:
        resolve_epochs(cfg, task.num_train_examples(), global_batch)
    _schedule(cfg, torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0))  # its errors before any write

    lock = RunLock(out_dir)
    error = None
    if accelerator.is_main_process:
        try:
            lock.acquire()
            if cfg.overwrite_output_dir and not cfg.resume:
                clear_run_outputs(out_dir)
            write_json_atomic(out_dir / "training_config.json", cfg.to_dict())
        except RunError as e:
            error = e
    if not _broadcast_ok(accelerator, error is None):
        raise error or RunError(f"The main process could not lock output_dir {out_dir}; see its message.")
    try:
        return _train_locked(cfg, task, accelerator, parts, out_dir, lr, global_batch, report_to)
    finally:
        lock.release()


def _train_locked(cfg, task, accelerator, parts, out_dir, lr, global_batch, report_to) -> dict[str, Any]:
    for part in parts:
        # schedulers stay unprepared (accelerate would step them once per process); they count optimizer steps
        part.scheduler = _schedule(cfg, part.optimizer)
    prepared = accelerator.prepare(*[x for p in parts for x in (p.model, p.optimizer)])
    for i, part in enumerate(parts):
        part.model, part.optimizer = prepared[2 * i], prepared[2 * i + 1]
    if cfg.compile:
        parts[0].model = torch.compile(parts[0].model)
    if task.device_specific_seed:
        set_seed(cfg.seed, device_specific=True)

    run = Run(cfg=cfg, accelerator=accelerator, parts=parts, state=TrainState(task.counters), out_dir=out_dir,
              lr=lr, global_batch=global_batch, task=task)  # fmt: skip
    if cfg.ema_decay > 0:
        from diffusers.training_utils import EMAModel

        run.ema = EMAModel(run.bare().parameters(), decay=cfg.ema_decay)  # on the bare model, never a wrapper
    if cfg.resume:
        loaded = run.resume(cfg.resume)
        if loaded is not None:
            accelerator.print(f"resumed from {loaded} at step {run.state.step}")
    if report_to:
        accelerator.init_trackers(
            task.project, config={k: v for k, v in cfg.to_dict().items() if v is not None}
        )
    run.start_step = run.state.step
    if accelerator.is_main_process:
        start_log_history(out_dir / LOG_HISTORY, run.state.step)

    loader = task.build_dataloader(run, run.state.step)
    bar = tqdm(total=cfg.max_steps, initial=run.state.step, desc=task.description,
               disable=not accelerator.is_local_main_process, dynamic_ncols=True)  # fmt: skip
    for part in parts:
        part.model.train()
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    t_start = time.time()
    time_aside = 0.0
    models = [p.model for p in parts]
    batches = iter(loader)
    run.restore_rng()
    for batch in batches:
        with accelerator.accumulate(*models):
            logs_step = task.training_step(run, batch)
        if logs_step is None:
            continue
        for k, v in logs_step.items():
            v = v.detach().float() if torch.is_tensor(v) else torch.tensor(float(v))
            sums[k] = sums[k] + v if k in sums else v
            counts[k] = counts.get(k, 0) + 1
        if not accelerator.sync_gradients:
            continue
        with (
            warnings.catch_warnings()
        ):  # an optimizer that has not stepped yet (GAN before its start) still counts
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step\\(\\)` before")
            for part in parts:
                part.scheduler.step()
        if run.ema is not None:
            run.ema.step(run.bare().parameters())
        run.state.step += 1
        bar.update(1)
        if run.state.step % cfg.log_every == 0 or run.state.step == cfg.max_steps:
            keys = sorted(sums)
            means = (
                torch.stack([(sums[k] / counts[k]).to(accelerator.device) for k in keys]) if keys else None
            )
            values = accelerator.reduce(means, reduction="mean").tolist() if keys else []
            logs = dict(zip(keys, values))
            logs["lr"] = parts[0].scheduler.get_last_lr()[0]
            logs.update(task.log_metrics(run))
            sums, counts = {}, {}
            run.first_logs = run.first_logs or dict(logs)
            run.last_logs = logs
            accelerator.log(logs, step=run.state.step)
            if accelerator.is_main_process:
                with open(out_dir / LOG_HISTORY, "a") as f:
                    f.write(json.dumps({"step": run.state.step, **logs}) + "\n")
            shown = {
                k: f"{v:.4g}" for k, v in logs.items() if k in ("loss", "loss/reconstruction", "usage", "lr")
            }
            bar.set_postfix(**shown)
        t_aside = time.time()  # samples and checkpoints do not count as training time
        task.on_step_end(run)
        if cfg.checkpoint_every and run.state.step % cfg.checkpoint_every == 0:
            run.save_checkpoint()
        time_aside += time.time() - t_aside
        if run.state.step >= cfg.max_steps:
            break
    bar.close()
    run.train_time = time.time() - t_start - time_aside

    accelerator.wait_for_everyone()
    bare = run.bare()
    if run.ema is not None:
        run.ema.copy_to(bare.parameters())
    if accelerator.is_main_process:
        task.export(run, bare)
    accelerator.wait_for_everyone()
    steps_done = run.state.step - run.start_step
    results: dict[str, Any] = {
        **run.state.state_dict(),
        "steps_this_run": steps_done,
        "train_time_s": run.train_time,
        "steps_per_second": steps_done / run.train_time if run.train_time > 0 and steps_done else None,
        "global_batch_size": global_batch,
        "learning_rate": lr,
        "num_processes": accelerator.num_processes,
        "ema": run.ema is not None,
    }
    if accelerator.num_processes > 1:
        results.update(replica_checksums(accelerator, bare))
    results.update(task.results(run, bare))
    if accelerator.is_main_process:
        write_json_atomic(out_dir / "results.json", results)
        accelerator.print(json.dumps(results, indent=2))
    # free the DDP wrappers (their reducers hold the gloo/nccl process group) while every rank is still alive, then
    # end: otherwise a rank can hang at exit in ProcessGroupGloo's destructor, waiting for a peer that has gone
    del bare, models, loader
    for part in parts:
        part.model = part.optimizer = None
    run.parts = []
    accelerator.free_memory()
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return results
