"""Building the compiled kernels in worker processes, in parallel, into the disk cache.

Numba compiles one function at a time, holding the GIL.  The entry points share four
sweeps (``fasttape.sweeps``), each of which takes tens of seconds to compile on a cold
cache, while an entry point whose sweeps are cached compiles in a few seconds.  So a
build runs each sweep an entry point needs in its own worker process (``python -m
fasttape build <names>``), as many at once as there are cores, then the entry point in
one more; each writes the disk cache (``fasttape.cache``), and the caller then loads the
kernel from there in about a second.  The caller's own threads keep the GIL meanwhile:
the NumPy executor serves its calls at full speed.

Workers need the disk cache (they hand their kernels over through it) and the standard
argument types (``signature``); where either is missing, or a worker fails, the caller
compiles in its own process as before.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import numba
import numpy as np

from . import cache, jit, kernel_calls, sweeps
from .families import FAMILIES
from .layout import ROW

# the compiled sweeps the entry points call (second_order_sweep twice: as the HVP's forward-over-reverse
# and as the k-seed reverse of a Jacobian, two specialisations of its literal ``second``)
SWEEPS = ("forward_sweep", "reverse_sweep", "tangent_sweep", "second_order_sweep", "vector_reverse_sweep")
NEEDS = {
    "run_forward": ("forward_sweep",),
    "run_value_and_grad": ("forward_sweep", "reverse_sweep"),
    "run_reverse": ("reverse_sweep",),
    "run_jvp": ("forward_sweep", "tangent_sweep"),
    "run_hvp": ("forward_sweep", "tangent_sweep", "second_order_sweep"),
    "run_vector_reverse": ("vector_reverse_sweep",),
}


def _types():
    ins = numba.typeof(np.zeros((1, ROW), dtype=np.int64))
    code = numba.typeof(np.zeros(4, dtype=np.uint32))
    aux = numba.typeof(np.zeros(1, dtype=np.int64))
    buf = numba.typeof(np.zeros(1))
    return ins, code, aux, buf


def signature(name: str) -> tuple:
    """The argument types every tape passes to an entry point."""
    ins, code, aux, buf = _types()
    i64, flag = numba.int64, numba.boolean
    return {
        "run_forward": (ins, code, aux, buf, flag),
        "run_value_and_grad": (ins, code, aux, buf, i64, flag),
        "run_reverse": (ins, code, aux, buf),
        "run_jvp": (ins, code, aux, buf, buf, i64),
        "run_hvp": (ins, code, aux, buf, buf, buf, i64, i64, flag),
        "run_vector_reverse": (ins, code, aux, buf, buf, i64),
    }[name]


def sweep_signature(name: str) -> tuple[str, tuple]:
    """The compiled sweep behind a name of ``SWEEPS``, and the argument types the entry points call it
    with (their flags are array reads, one signature per sweep, except second order's literal)."""
    ins, code, aux, buf = _types()
    i64, flag = numba.int64, numba.boolean
    head = (ins, code, aux, buf)
    return {
        "forward_sweep": ("forward_sweep", head + (flag, flag)),
        "reverse_sweep": ("reverse_sweep", head + (flag,)),
        "tangent_sweep": ("tangent_sweep", head + (buf, i64, flag)),
        "second_order_sweep": ("second_order_sweep", head + (buf, buf, i64, numba.types.literal(True))),
        "vector_reverse_sweep": ("second_order_sweep", head + (buf, buf, i64, numba.types.literal(False))),
    }[name]


# the families' kernels as tapes' own kernels call them, by address (fasttape.kernel_calls): one name each
FAMILY_CALLS = tuple(f"calls:{f.name}" for f in FAMILIES)


def build_here(names) -> None:
    """Compile (or load) the named sweeps, entry points and family kernels in this process (a worker's job)."""
    for name in names:
        if name in FAMILY_CALLS:
            family = FAMILIES[FAMILY_CALLS.index(name)]
            for sweep in kernel_calls.SWEEPS:
                kernel_calls.address(getattr(family.module, sweep), sweep)
            for direct, kernel in getattr(family.module, "DIRECT", {}).items():
                kernel_calls.address(kernel, direct)
            continue
        function, types = sweep_signature(name) if name in SWEEPS else (name, signature(name))
        getattr(sweeps, function).compile(types)


def cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def usable() -> bool:
    """Workers can hand kernels over: the disk cache is on, and this is a real interpreter."""
    cached = cache.ENABLED and jit.CACHE_ENABLED  # (Numba may refuse the cache when it decorates)
    return cached and bool(sys.executable) and os.environ.get("NUMBA_DISABLE_JIT", "0") in ("", "0")


_DONE: set = set()  # names whose workers succeeded in this process
_LOCK = threading.Lock()


def _command(names) -> list[str]:
    return [sys.executable, "-m", "fasttape", "build", *names]


def _environment() -> dict:
    env = dict(os.environ)
    # the child imports this very fasttape (not another on its path), so it computes the same cache key
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH", "")) if p)
    return env


def run_workers(groups, jobs=None, on_done=None) -> bool:
    """Run one worker per group of names, at most ``jobs`` at once (default: one per core);
    True when every worker succeeded.  ``on_done(names)`` is called as each one finishes."""
    groups = [tuple(g) for g in groups if g]
    jobs = jobs or cores()
    env = _environment()
    ok = True
    running: list[tuple[tuple, subprocess.Popen]] = []
    pending = list(groups)
    while pending or running:
        while pending and len(running) < jobs:
            names = pending.pop(0)
            try:
                process = subprocess.Popen(
                    _command(names), env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                )  # fmt: skip
            except OSError as e:
                cache.LOG.debug("fasttape: could not start a kernel build worker: %s", e)
                return False
            running.append((names, process))
        names, process = running.pop(0)
        _, err = process.communicate()
        if on_done is not None:
            on_done(names)
        if process.returncode == 0:
            with _LOCK:
                _DONE.update(names)
        else:
            ok = False
            cache.LOG.debug("fasttape: kernel build worker for %s failed: %s", names, err.decode(errors="replace"))
    return ok


def build_entry(name: str) -> bool:
    """Build an entry point's sweeps in parallel workers, then the entry point itself in one more,
    all into the disk cache; True when the caller can load it from there."""
    if name in _DONE:
        return True
    parts = [part for part in NEEDS[name] if part not in _DONE]
    if parts and not run_workers([(part,) for part in parts]):
        return False
    return run_workers([(name,)])
