"""Process-level CPU settings for training and evaluation on a few, possibly shared, cores.

``configure_cpu_runtime()`` runs when ``fullvq_hf`` is imported. Both settings only change how idle threads wait
and how freed memory is kept, never a result:

- OpenMP threads wait passively (``OMP_WAIT_POLICY=PASSIVE``) instead of spinning: on a 2-core machine shared
  with other work, spinning threads of torch's many short parallel regions burned 4-5x the CPU time of the work
  itself (measured: a demo-preset step took 20 s instead of 3.8 s). libgomp reads the variable when torch loads,
  so this only applies when ``fullvq_hf`` is imported before ``torch``; an explicit ``OMP_WAIT_POLICY`` wins.
- glibc malloc keeps freed large blocks (activations of 16 MiB and more) in the heap instead of returning them to
  the kernel with ``munmap``/trim and faulting in fresh zeroed pages on the next step (was ~60k page faults and
  10-15% of a training step in system time). Set ``FULLVQ_KEEP_MALLOC=1`` to leave malloc alone.
"""

from __future__ import annotations

import ctypes
import os
import sys

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_applied: dict | None = None


def configure_cpu_runtime() -> dict:
    """Apply the settings above once per process; returns what applies (``omp_wait_policy``, ``malloc``)."""
    global _applied
    if _applied is not None:
        return dict(_applied)
    applied = _applied = {"omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "malloc": False}
    if "OMP_WAIT_POLICY" not in os.environ and "torch" not in sys.modules:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        applied["omp_wait_policy"] = "PASSIVE"
    if sys.platform.startswith("linux") and os.environ.get("FULLVQ_KEEP_MALLOC") != "1":
        try:
            libc = ctypes.CDLL("libc.so.6")
            ok = libc.mallopt(
                _M_MMAP_THRESHOLD, 32 << 20
            )  # glibc's maximum: blocks below 32 MiB from the heap
            ok &= libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30)  # do not give the heap top back after every step
            ok &= libc.mallopt(_M_TOP_PAD, 64 << 20)  # grow the heap in large steps
            applied["malloc"] = bool(ok)
        except (OSError, AttributeError):  # not glibc (musl, ...): nothing to tune
            pass
    return dict(applied)
