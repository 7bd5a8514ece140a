"""Learning-rate schedules as multipliers of the base learning rate, and ``LambdaLR`` schedulers built from them.

Every schedule is a pure function ``f(step) -> factor`` (the optimizer's lr is ``base_lr * factor``), with a
linear warm-up from ``start_factor`` to 1 over the first ``warmup_steps`` steps:

- ``learning_annealing``: FVQ's "learning annealing", exactly the ``combined_lr_lambda`` of the official
  ``vq_train_qbridge_lr.py`` (``--sche_type lin``, or ``cos`` for the cosine decay): warm-up from ``start_factor``
  (0.005) to 1, hold at 1 while the progress after warm-up is below ``hold_fraction`` (``--lrT``, 0.3), then a
  linear (or cosine) decay that reaches ``end_factor`` (0.01) at the last step.
- ``constant``: warm-up, then 1 (the official ``--sche_type const``).
- ``cosine``: warm-up, then a cosine decay from 1 to ``end_factor`` at the last step.
- ``linear``: warm-up, then a linear decay from 1 to ``end_factor`` at the last step.

``get_scheduler`` builds the scheduler of a name: a ``LambdaLR`` whose multiplier is a callable object
(``ScheduleFunction``) holding only numbers and strings, so every scheduler's ``state_dict()`` is numbers, strings and
lists: the trainers save it as JSON. (transformers' warmup-stable-decay schedule, ``get_wsd_schedule``, is not used
for the annealing: its warm-up starts at its ``min_lr_ratio`` (0.01, not the official 0.005) and its stable phase is
a whole number of steps, where the official hold ends at a fractional progress.)

Steps count optimizer updates from 0; the last step of a run of ``total_steps`` updates is ``total_steps - 1``.

Example::

    optimizer = torch.optim.AdamW(model.parameters(), lr=scale_lr(1e-4, global_batch_size=256))
    scheduler = get_scheduler("annealing", optimizer, total_steps=100_000, warmup_steps=5_000)
    for step in range(100_000):
        ...; optimizer.step(); scheduler.step()
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch

__all__ = [
    "SCHEDULES",
    "ScheduleFunction",
    "constant",
    "cosine",
    "get_learning_annealing_schedule",
    "get_scheduler",
    "learning_annealing",
    "linear",
    "scale_lr",
]

DECAYS = ("linear", "cosine")


# ---------------------------------------------------------------------------------------------------- checks
def _check_step(step: int) -> None:
    if step < 0:
        raise ValueError(f"step must be >= 0 (steps count optimizer updates from 0), got {step}.")


def _check_warmup(warmup_steps: int, start_factor: float, total_steps: int | None = None) -> None:
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}.")
    if start_factor < 0:
        raise ValueError(f"start_factor must be >= 0 (a fraction of the base lr), got {start_factor}.")
    if total_steps is not None:
        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}.")
        if warmup_steps >= total_steps:
            raise ValueError(
                f"warmup_steps={warmup_steps} leaves no step after the warm-up in total_steps={total_steps}; "
                "use fewer warm-up steps (e.g. a few percent of the run) or train longer."
            )


def _check_end_factor(end_factor: float) -> None:
    if end_factor < 0:
        raise ValueError(f"end_factor must be >= 0 (a fraction of the base lr), got {end_factor}.")


def _warmup(step: int, warmup_steps: int, start_factor: float) -> float:
    """Linear ramp: ``start_factor`` at step 0, 1 at ``step == warmup_steps``."""
    return start_factor + (1.0 - start_factor) * step / warmup_steps


def _decay(progress: float, end_factor: float, decay: str) -> float:
    """1 at ``progress == 0``, ``end_factor`` at ``progress == 1``."""
    progress = min(max(progress, 0.0), 1.0)
    if decay == "linear":
        return 1.0 + (end_factor - 1.0) * progress
    return end_factor + (1.0 - end_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))


# ---------------------------------------------------------------------------------------------------- schedules
def learning_annealing(
    step: int,
    total_steps: int,
    warmup_steps: int,
    start_factor: float = 0.005,
    hold_fraction: float = 0.3,
    end_factor: float = 0.01,
    decay: str = "linear",
) -> float:
    """FVQ's learning annealing: warm-up, hold, decay. Returns the lr multiplier at ``step``.

    The official schedule (``combined_lr_lambda`` of FVQ's ``tokenizer/tokenizer_image/vq_train_qbridge_lr.py``:
    ``wp0 = 0.005``, ``wpe = 0.01``, ``T = --lrT = 0.3``, ``--sche_type lin`` or ``cos``), with
    ``W = warmup_steps`` and ``last = total_steps - 1``:

    - ``step < W``: ``start_factor + (1 - start_factor) * step / W`` (1 is reached at ``step == W``);
    - then, with the progress ``p = (step - W) / (last - W)``: 1 while ``p < hold_fraction``;
    - then ``decay`` over ``t = (p - hold_fraction) / (1 - hold_fraction)``: linear ``end + (1 - end) * (1 - t)``
      or cosine ``end + (1 - end) * (1 + cos(pi * t)) / 2``, so ``end_factor`` at the last step; later steps stay
      at ``end_factor`` (the official never runs past its last step).

    With ``warmup_steps=0`` step 0 already has factor 1. Example (``total_steps=110, warmup_steps=10``): 0.005 at
    step 0, 1 at steps 10..39 (p = 29/99 < 0.3), then linear from step 40 (p = 30/99) to 0.01 at step 109.
    """
    _check_step(step)
    _check_warmup(warmup_steps, start_factor, total_steps)
    _check_end_factor(end_factor)
    if not 0.0 <= hold_fraction <= 1.0:
        raise ValueError(f"hold_fraction must lie in [0, 1] (a fraction of the steps after warm-up), got {hold_fraction}.")
    if decay not in DECAYS:
        raise ValueError(f"decay must be one of {DECAYS}, got {decay!r}.")
    if step < warmup_steps:
        return _warmup(step, warmup_steps, start_factor)
    last = total_steps - 1
    if step >= last:
        return float(end_factor)
    progress = (step - warmup_steps) / (last - warmup_steps)  # in [0, 1) here
    if progress < hold_fraction:
        return 1.0
    return _decay((progress - hold_fraction) / (1.0 - hold_fraction), end_factor, decay)


def constant(step: int, warmup_steps: int, start_factor: float = 0.005) -> float:
    """Linear warm-up from ``start_factor`` (step 0) to 1 (``step == warmup_steps``), then 1 for ever."""
    _check_step(step)
    _check_warmup(warmup_steps, start_factor)
    if step < warmup_steps:
        return _warmup(step, warmup_steps, start_factor)
    return 1.0


def cosine(
    step: int, total_steps: int, warmup_steps: int, end_factor: float = 0.0, start_factor: float = 0.005
) -> float:
    """Linear warm-up from ``start_factor`` to 1 (at ``step == warmup_steps``), then a half-cosine from 1 down to
    ``end_factor`` at the last step ``total_steps - 1``; later steps stay at ``end_factor``.

    VQGAN-LC's ``util/lr_sched.py`` is this with ``start_factor=0`` and ``end_factor=0`` (its ``min_lr``), except
    that its decay progress is ``(step - W) / (total_steps - W)``: it would reach 0 one step after the last, where
    this reaches it at the last step (the two differ by one step's worth of decay)."""
    _check_step(step)
    _check_warmup(warmup_steps, start_factor, total_steps)
    _check_end_factor(end_factor)
    if step < warmup_steps:
        return _warmup(step, warmup_steps, start_factor)
    last = total_steps - 1
    if step >= last:
        return float(end_factor)
    return _decay((step - warmup_steps) / (last - warmup_steps), end_factor, "cosine")


def linear(
    step: int, total_steps: int, warmup_steps: int, end_factor: float = 0.0, start_factor: float = 0.005
) -> float:
    """Linear warm-up from ``start_factor`` to 1 (at ``step == warmup_steps``), then a straight line from 1 down to
    ``end_factor`` at the last step ``total_steps - 1``; later steps stay at ``end_factor``. (Learning annealing
    with no hold.)"""
    return learning_annealing(
        step, total_steps, warmup_steps, start_factor=start_factor, hold_fraction=0.0, end_factor=end_factor
    )


# ---------------------------------------------------------------------------------------------------- schedulers
# name -> the keyword options it accepts, with their defaults (those of the functions above)
SCHEDULES: dict[str, dict[str, float]] = {
    "annealing": {"start_factor": 0.005, "hold_fraction": 0.3, "end_factor": 0.01},
    "annealing-cosine": {"start_factor": 0.005, "hold_fraction": 0.3, "end_factor": 0.01},
    "constant": {"start_factor": 0.005},
    "cosine": {"start_factor": 0.005, "end_factor": 0.0},
    "linear": {"start_factor": 0.005, "end_factor": 0.0},
}


@dataclass
class ScheduleFunction:
    """A picklable lr multiplier ``step -> factor`` for ``LambdaLR``.

    It holds only numbers and strings: ``LambdaLR.state_dict()`` stores its ``__dict__`` and ``load_state_dict``
    writes it back, so a restored scheduler continues with exactly the saved schedule (if the restoring run was
    built with other arguments, the saved ones win).
    """

    name: str
    total_steps: int
    warmup_steps: int
    start_factor: float = 0.005
    hold_fraction: float = 0.3
    end_factor: float = 0.01

    def __post_init__(self) -> None:
        if self.name not in SCHEDULES:
            raise ValueError(f"Unknown schedule {self.name!r}; choose one of {sorted(SCHEDULES)}.")
        self(0)  # validates the numbers now rather than at the first optimizer step

    def __call__(self, step: int) -> float:
        if self.name in ("annealing", "annealing-cosine"):
            return learning_annealing(
                step,
                self.total_steps,
                self.warmup_steps,
                start_factor=self.start_factor,
                hold_fraction=self.hold_fraction,
                end_factor=self.end_factor,
                decay="cosine" if self.name == "annealing-cosine" else "linear",
            )
        if self.name == "constant":
            return constant(step, self.warmup_steps, start_factor=self.start_factor)
        if self.name == "linear":
            return linear(step, self.total_steps, self.warmup_steps, self.end_factor, self.start_factor)
        return cosine(step, self.total_steps, self.warmup_steps, end_factor=self.end_factor, start_factor=self.start_factor)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def get_learning_annealing_schedule(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    warmup_steps: int,
    hold_fraction: float = 0.3,
    end_factor: float = 0.01,
    decay: str = "linear",
    start_factor: float = 0.005,
) -> torch.optim.lr_scheduler.LambdaLR:
    """FVQ's learning annealing (``learning_annealing``, the official ``lin`` / ``cos`` modes) as a ``LambdaLR``
    over every param group of ``optimizer``."""
    name = "annealing-cosine" if decay == "cosine" else "annealing"
    if decay not in DECAYS:
        raise ValueError(f"decay must be one of {DECAYS}, got {decay!r}.")
    fn = ScheduleFunction(name=name, total_steps=int(total_steps), warmup_steps=int(warmup_steps),
                          start_factor=start_factor, hold_fraction=hold_fraction, end_factor=end_factor)  # fmt: skip
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)


def get_scheduler(
    name: str, optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int, **kwargs: float
) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` over ``optimizer`` (every param group) following schedule ``name``.

    Args:
        name: ``"annealing"`` (FVQ: warm-up, hold, linear decay), ``"annealing-cosine"`` (same
            with a cosine decay), ``"constant"`` (warm-up, then 1), ``"cosine"`` (warm-up, cosine decay) or
            ``"linear"`` (warm-up, linear decay).
        optimizer: The optimizer; its current ``lr`` values become the base lrs.
        total_steps: Number of optimizer updates in the run (the schedule ends at ``total_steps - 1``).
        warmup_steps: Linear warm-up length in optimizer updates.
        **kwargs: ``start_factor`` (every schedule: 0.005, where the warm-up starts), ``hold_fraction`` and
            ``end_factor`` (annealing: 0.3 and 0.01, FVQ's values); ``end_factor`` (cosine, linear: 0.0).

    Call ``scheduler.step()`` once per optimizer update. Building the scheduler sets the lr of step 0.
    """
    if name not in SCHEDULES:
        raise ValueError(f"Unknown lr schedule {name!r}; choose one of {sorted(SCHEDULES)}.")
    unknown = sorted(set(kwargs) - set(SCHEDULES[name]))
    if unknown:
        raise ValueError(
            f"Schedule {name!r} takes the options {sorted(SCHEDULES[name])}, not {unknown}; drop them or pick a "
            "schedule that uses them."
        )
    options = {**SCHEDULES[name], **kwargs}
    fn = ScheduleFunction(name=name, total_steps=int(total_steps), warmup_steps=int(warmup_steps), **options)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)


def scale_lr(base_lr: float, global_batch_size: int, reference_batch: int = 128) -> float:
    """Linear lr scaling: ``base_lr * global_batch_size / reference_batch``.

    ``global_batch_size`` is per-device batch x number of processes x gradient-accumulation steps.
    """
    if base_lr <= 0:
        raise ValueError(f"base_lr must be positive, got {base_lr}.")
    if global_batch_size < 1 or reference_batch < 1:
        raise ValueError(
            f"global_batch_size and reference_batch must be positive, got {global_batch_size} and {reference_batch}."
        )
    return base_lr * global_batch_size / reference_batch
