"""``python -m fasttape warm``: compile every kernel ahead of time, into the on-disk cache.

First the four sweeps, then the six entry points, then the families' kernels as a tape's own
kernels call them (``fasttape.kernel_calls``), are compiled in worker processes, one per core
(``fasttape.builds``); then each step runs one kind of sweep on a small program
that reaches every family (elementwise, select, reductions, cumsum, broadcast, gather,
matmul), and the two special paths (the scalar code of loops over Python floats, and the
fused regions of long elementwise chains) and the drivers of batches (``ft.vmap``: sweeps and
matrices), loading the kernels the workers built.  With everything cached it takes a few
seconds; building from nothing takes a few minutes.  For container images and CI: run it once
after installing, and every later process starts at compiled speed.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from . import builds, cache, tiers


def _every_family(x, W):
    h = np.tanh(W @ x) + np.maximum(x[:3], 0.1) ** 2
    s = np.where(h > 0.0, np.exp(-h), np.log1p(h * h))
    c = np.cumsum(s) / (1.0 + np.max(s))
    grid = np.broadcast_to(c, (2, 3)) * W[:2, :3]
    return np.sum(grid[::-1, ::2]) + np.prod(c) + np.log(np.sum(np.exp(x)))


def _scalar_loop(x):
    a, b = x[0], x[1]
    for _ in range(20):
        a, b = a + 0.01 * b, b - 0.01 * a * b
    return a * b


def _long_chain(x):
    t = x[1:] - x[:-1] ** 2
    return np.sum(100.0 * t * t + (1.0 - x[:-1]) ** 2)


def _batches(x, W, v):
    """One batch of each batched entry point, on the interpreter (the drivers every tape shares; a tape's own
    kernels get theirs when first batched), serial and, where Numba has threads, parallel."""
    import functools

    from . import api as ft
    from . import batch, config
    from .batching import vmap

    shared = batch.SERIAL_VALUES // ft.trace(_every_family, x, W).n_values + 1  # members enough to share
    with config.options(tape_kernels="never"):
        for workers in sorted({1, batch.threads()}):
            size = 8 if workers == 1 else shared
            xs, vs = np.tile(x, (size, 1)), np.tile(v, (size, 1))
            vmap(ft.value_and_grad(_every_family), in_axes=(0, None), workers=workers)(xs, W)
            vmap(ft.jvp, in_axes=(None, (0, None), (0, None)), workers=workers)(_every_family, (xs, W), (vs, W))
            vmap(ft.hvp, in_axes=(None, (0, None), (0, None)), workers=workers)(_every_family, (xs, W), (vs, W))
            outputs, pull_back = vmap(functools.partial(ft.vjp, _every_family), in_axes=(0, None), workers=workers)(
                xs, W
            )
            pull_back(np.ones_like(outputs))
            ft.trace(_every_family, x, W).forward_batch(xs, W, workers=workers)
            for matrix in (ft.jacfwd, ft.jacrev):  # (the block drivers: fasttape.batch_blocks)
                vmap(matrix(_every_family), in_axes=(0, None), workers=workers)(xs, W)
            vmap(ft.hessian(_every_family), in_axes=(0, None), workers=workers)(xs, W)


def _steps():
    from . import api as ft

    rng = np.random.default_rng(0)
    x, W = rng.uniform(0.5, 1.5, 4), rng.normal(size=(3, 4))
    v = rng.normal(size=4)
    y = rng.uniform(0.5, 1.5, 2)
    z = rng.uniform(0.5, 1.5, 20000)
    return [
        ("value and gradient", lambda: ft.value_and_grad(_every_family)(x, W)),
        ("replay", lambda: ft.trace(_every_family, x, W)(x, W)),
        ("vector reverse (jacrev)", lambda: ft.jacrev(lambda a: np.tanh(W @ a) * a[:3])(x)),
        ("tangents (jvp)", lambda: ft.jvp(_every_family, (x, W), (v, np.ones_like(W)))),
        ("hessian-vector product", lambda: ft.hvp(_every_family, (x, W), (v, np.ones_like(W)))),
        ("hessian", lambda: ft.hessian(_every_family)(x, W)),
        ("scalar code", lambda: (ft.value_and_grad(_scalar_loop)(y), ft.hvp(_scalar_loop, (y,), (y,)))),
        (
            "fused regions",
            lambda: (
                ft.value_and_grad(_long_chain)(z),
                ft.hvp(_long_chain, (z,), (z,)),
                ft.jvp(_long_chain, (z,), (z,)),
            ),
        ),  # fmt: skip
        ("batches (vmap)", lambda: _batches(x, W, v)),
    ]


def _bar(done, total, label, elapsed, width=24):
    filled = int(width * done / total)
    return f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {label:<28} {elapsed:6.1f} s"


def _build_in_workers(label, names, quiet, stream, start):
    done = []
    label = f"{label} ({builds.cores()} workers)"

    def progress(finished):
        done.extend(finished)
        if not quiet:
            stream.write(_bar(len(done), len(names), label, time.perf_counter() - start))
            stream.flush()

    progress(())
    builds.run_workers([(name,) for name in names], on_done=progress)
    if not quiet:
        stream.write("\n")


def warm(quiet=False, stream=None) -> float:
    """Compile (or load) every kernel; returns the seconds it took.  Prints a progress bar unless ``quiet``."""
    stream = sys.stderr if stream is None else stream
    steps = _steps()
    start = time.perf_counter()
    if not quiet:
        where = cache.DIRECTORY if cache.ENABLED else "memory only (the disk cache is off)"
        print(f"fasttape: building kernels into {where}", file=stream)
    if builds.usable():  # the slow part, on every core: sweeps first, then the entry points that link them
        _build_in_workers("sweeps", builds.SWEEPS, quiet, stream, start)
        _build_in_workers("entry points", tuple(builds.NEEDS), quiet, stream, start)
        _build_in_workers("family kernels", builds.FAMILY_CALLS, quiet, stream, start)  # (for tapes' own kernels)
    with tiers.only("compiled"):
        for i, (label, run) in enumerate(steps):
            if not quiet:
                stream.write(_bar(i, len(steps), label, time.perf_counter() - start))
                stream.flush()
            run()
    elapsed = time.perf_counter() - start
    if not quiet:
        stream.write(_bar(len(steps), len(steps), "done", elapsed) + "\n")
        stream.flush()
    return elapsed
